//! One client connection as one task: a future that reads the socket into broker inputs and
//! writes what the broker sends, each side going on while the other waits (a client that
//! writes without reading is still read, so it cannot deadlock against its own output).
//!
//! It works on any byte stream: a TCP socket, TLS, WebSocket or secure WebSocket. An idle
//! connection keeps no read buffer (reads land in a buffer on the stack and are copied into
//! one sized to what arrived), so its cost is the task and the socket.

use std::collections::VecDeque;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use jetmq_core::broker::{ConnId, Input};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::{self, error::TrySendError, OwnedPermit};

/// The most bytes one socket read takes.
const READ_CHUNK: usize = 16 * 1024;

/// The most bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Reads and writes one turn may do before the task lets others run.
const ROUNDS_PER_TURN: usize = 64;

/// What the broker task hands a connection (bytes to write in order, then perhaps a close;
/// pause and resume of reading) and how it wakes the connection's task. A mutex-guarded queue
/// and a waker instead of channels: an idle connection holds no preallocated block of slots.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Debug, Default)]
struct MailboxState {
    /// The first bytes queued. Kept apart from `rest` so the usual case, one send between two
    /// writes, needs no queue allocation: a connection that never had two sends waiting
    /// (an idle one: CONNACK, then SUBACK) has none.
    first: Option<Bytes>,
    /// What was queued after `first` (empty while `first` is `None`).
    rest: VecDeque<Bytes>,
    /// Write what is queued, then close the socket.
    close: bool,
    /// The task has stopped: nothing more is kept.
    stopped: bool,
    /// The broker asked to stop reading.
    paused: bool,
    /// Wakes the connection's task.
    waker: Option<Waker>,
}

/// What the task takes from the mailbox when it has nothing to write.
enum Taken {
    /// Bytes to write (several queued sends in one).
    Bytes(Bytes),
    /// Nothing queued; close the socket.
    Close,
    /// Nothing queued.
    Nothing,
}

impl Mailbox {
    /// Changes the state and wakes the task.
    fn update(&self, f: impl FnOnce(&mut MailboxState)) {
        let waker = match self.state.lock() {
            Ok(mut s) => {
                if s.stopped {
                    return;
                }
                f(&mut s);
                s.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Queues bytes after everything before.
    pub(crate) fn send(&self, bytes: Bytes) {
        self.update(|s| {
            if s.close {
                return;
            }
            if s.first.is_none() {
                s.first = Some(bytes);
            } else {
                s.rest.push_back(bytes);
            }
        });
    }

    /// Asks the task to write what is queued, then close the socket.
    pub(crate) fn close(&self) {
        self.update(|s| s.close = true);
    }

    /// Stops or restarts reading (the broker's flow control).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.update(|s| s.paused = paused);
    }

    /// Registers the task's waker; says whether reading is paused.
    fn register(&self, waker: &Waker) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        s.paused
    }

    /// Takes up to `limit` bytes of what is queued (at least one item), joined in one buffer
    /// when there are several.
    fn take(&self, limit: usize) -> Taken {
        let Ok(mut s) = self.state.lock() else {
            return Taken::Close;
        };
        let Some(first) = s.first.take() else {
            return if s.close {
                Taken::Close
            } else {
                Taken::Nothing
            };
        };
        if s.rest.is_empty() {
            return Taken::Bytes(first);
        }
        // What else waits goes out in the same write: one system call for a burst of packets
        // instead of one each.
        let queued: usize = s.rest.iter().map(Bytes::len).sum();
        let mut batch = BytesMut::with_capacity((first.len() + queued).min(limit));
        batch.extend_from_slice(&first);
        while batch.len() < limit {
            let Some(more) = s.rest.pop_front() else {
                break;
            };
            batch.extend_from_slice(&more);
        }
        s.first = s.rest.pop_front();
        if s.rest.is_empty() && s.rest.capacity() > 64 {
            // A large burst's room is given back; a small queue's is kept (a connection that
            // gets small bursts keeps getting them: no allocation per burst).
            s.rest.shrink_to_fit();
        }
        let bytes = batch.freeze();
        Taken::Bytes(bytes)
    }

    fn stopped(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stopped = true;
            s.first = None;
            s.rest = VecDeque::new();
            s.waker = None;
        }
    }
}

/// The broker task's handle on one connection; dropping it closes the connection once what
/// is queued is written.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) mailbox: Arc<Mailbox>,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// One count in the server's number of open connections, given back when the connection's
/// task ends or is dropped (the count was taken when the socket was accepted).
#[derive(Debug)]
pub(crate) struct OpenSlot {
    open: Arc<AtomicU64>,
    /// Held for its drop: the count of the connection's source address.
    _address: crate::sockets::AddressSlot,
}

impl OpenSlot {
    /// Takes over a count already added to `open`, and the connection's count for its source
    /// address.
    pub(crate) fn adopt(open: Arc<AtomicU64>, address: crate::sockets::AddressSlot) -> Self {
        Self {
            open,
            _address: address,
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waiting for room in the broker's input channel (only while it is full).
type Room =
    Pin<Box<dyn Future<Output = Result<OwnedPermit<Input>, mpsc::error::SendError<()>>> + Send>>;

/// One connection's task: see the module documentation.
pub(crate) struct Connection<S, F> {
    conn: ConnId,
    socket: S,
    inputs: mpsc::Sender<Input>,
    mailbox: Arc<Mailbox>,
    /// Reports written bytes (`Input::Flushed`) to the broker.
    flushed: F,
    /// An input that found the channel full, and the wait for room for it.
    blocked: Option<Box<(Input, Room)>>,
    /// The bytes being written; `writing_len` is their whole length, reported once written.
    writing: Bytes,
    writing_len: usize,
    /// A write finished and the stream (TLS, WebSocket) may buffer it: flush when idle.
    needs_flush: bool,
    /// The peer closed (or the socket failed), or the broker closed the connection: nothing
    /// more is read.
    read_done: bool,
    /// The broker is to be told the peer is gone once `blocked` is handed over.
    closed_after_blocked: bool,
    /// Writing is over (the socket was shut down or failed).
    write_done: bool,
    /// Held for as long as the task lives. (A field, not an `async` wrapper around the task:
    /// such a wrapper stores the connection twice and doubles the task's allocation.)
    _open: OpenSlot,
}

impl<S, F> Connection<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Input) + Unpin,
{
    /// The task of connection `conn` on `socket`: reads go to `inputs`, writes come from
    /// `mailbox`, written bytes are reported with `flushed`; `open` is given back at the end.
    pub(crate) fn new(
        conn: ConnId,
        socket: S,
        inputs: mpsc::Sender<Input>,
        mailbox: Arc<Mailbox>,
        flushed: F,
        open: OpenSlot,
    ) -> Self {
        Self {
            conn,
            socket,
            inputs,
            mailbox,
            flushed,
            blocked: None,
            writing: Bytes::new(),
            writing_len: 0,
            needs_flush: false,
            read_done: false,
            closed_after_blocked: false,
            write_done: false,
            _open: open,
        }
    }

    /// Hands `input` to the broker; false (keeping it) when the channel is full. A closed
    /// channel (the broker is gone) ends both sides.
    fn deliver(&mut self, input: Input) -> bool {
        match self.inputs.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(input)) => {
                // The bounded channel makes a fast sender wait here instead of growing memory.
                let room = Box::pin(self.inputs.clone().reserve_owned());
                self.blocked = Some(Box::new((input, room)));
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.read_done = true;
                self.write_done = true;
                false
            }
        }
    }

    /// The peer is gone (or the socket failed): tell the broker once, after what was read
    /// before (a DISCONNECT may be waiting for room in the channel).
    fn peer_closed(&mut self) {
        if self.read_done {
            return;
        }
        self.read_done = true;
        if self.blocked.is_some() {
            self.closed_after_blocked = true;
        } else {
            let conn = self.conn;
            self.deliver(Input::Closed { conn });
        }
    }

    /// One step of the read side; true if it made progress.
    fn poll_read_side(&mut self, cx: &mut Context<'_>, paused: bool) -> bool {
        if let Some(blocked) = &mut self.blocked {
            match blocked.1.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(permit)) => {
                    if let Some(blocked) = self.blocked.take() {
                        permit.send(blocked.0);
                    }
                    if std::mem::take(&mut self.closed_after_blocked) {
                        let conn = self.conn;
                        self.deliver(Input::Closed { conn });
                    }
                    return true;
                }
                Poll::Ready(Err(_)) => {
                    self.blocked = None;
                    self.closed_after_blocked = false;
                    self.read_done = true;
                    self.write_done = true;
                    return true;
                }
            }
        }
        if self.read_done || paused {
            return false;
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.socket).poll_read(cx, &mut buf) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                self.peer_closed();
                true
            }
            Poll::Ready(Ok(())) => {
                let data = BytesMut::from(buf.filled());
                let conn = self.conn;
                self.deliver(Input::Received { conn, data });
                true
            }
            Poll::Ready(Err(_)) => {
                self.peer_closed();
                true
            }
        }
    }

    /// One step of the write side; true if it made progress.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> bool {
        if self.write_done {
            return false;
        }
        if self.writing.is_empty() {
            match self.mailbox.take(WRITE_BATCH) {
                Taken::Bytes(bytes) => {
                    self.writing_len = bytes.len();
                    self.writing = bytes;
                    if self.writing.is_empty() {
                        return true;
                    }
                }
                // Everything before the close is written: shut the socket down (below).
                Taken::Close => {}
                Taken::Nothing => {
                    if self.needs_flush {
                        return match Pin::new(&mut self.socket).poll_flush(cx) {
                            Poll::Pending => false,
                            Poll::Ready(Ok(())) => {
                                self.needs_flush = false;
                                true
                            }
                            Poll::Ready(Err(_)) => self.write_failed(),
                        };
                    }
                    return false;
                }
            }
        }
        if !self.writing.is_empty() {
            return match Pin::new(&mut self.socket).poll_write(cx, &self.writing) {
                Poll::Pending => false,
                Poll::Ready(Ok(0)) => self.write_failed(),
                Poll::Ready(Ok(n)) => {
                    self.writing.advance(n);
                    if self.writing.is_empty() {
                        self.needs_flush = true;
                        (self.flushed)(Input::Flushed {
                            conn: self.conn,
                            bytes: self.writing_len,
                        });
                    }
                    true
                }
                Poll::Ready(Err(_)) => self.write_failed(),
            };
        }
        // Everything before the close is written: flush and shut down.
        match Pin::new(&mut self.socket).poll_shutdown(cx) {
            Poll::Pending => false,
            Poll::Ready(_) => {
                self.write_done = true;
                // The broker closed it: reading ends too, without telling the broker.
                self.read_done = true;
                true
            }
        }
    }

    /// The socket cannot be written: stop writing, and tell the broker the peer is gone.
    fn write_failed(&mut self) -> bool {
        self.write_done = true;
        self.writing = Bytes::new();
        self.mailbox.stopped();
        self.peer_closed();
        true
    }
}

impl<S, F> Future for Connection<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Input) + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_TURN {
            // Registered before looking at the mailbox, so a send in between wakes the task.
            let paused = this.mailbox.register(cx.waker());
            let wrote = this.poll_write_side(cx);
            let read = this.poll_read_side(cx, paused);
            if this.write_done && this.read_done && this.blocked.is_none() {
                this.mailbox.stopped();
                return Poll::Ready(());
            }
            if !wrote && !read {
                return Poll::Pending;
            }
        }
        // Let other tasks run; this one goes on in its next turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(mailbox: &Mailbox, limit: usize) -> Option<Vec<u8>> {
        match mailbox.take(limit) {
            Taken::Bytes(b) => Some(b.to_vec()),
            Taken::Close => None,
            Taken::Nothing => Some(Vec::new()),
        }
    }

    #[test]
    fn sends_come_out_in_order_joined_up_to_the_limit_and_the_close_last() {
        let mailbox = Mailbox::default();
        assert_eq!(taken(&mailbox, 8), Some(Vec::new()));
        mailbox.send(Bytes::from_static(b"abc"));
        assert_eq!(taken(&mailbox, 8), Some(b"abc".to_vec()));
        for part in [&b"12"[..], b"345", b"6789", b"0"] {
            mailbox.send(Bytes::copy_from_slice(part));
        }
        // Joined until the limit is reached; what is left keeps its order.
        assert_eq!(taken(&mailbox, 5), Some(b"12345".to_vec()));
        mailbox.close();
        mailbox.send(Bytes::from_static(b"after the close"));
        assert_eq!(taken(&mailbox, 64), Some(b"67890".to_vec()));
        assert_eq!(taken(&mailbox, 64), None);
    }

    #[test]
    fn one_send_at_a_time_needs_no_queue() {
        let mailbox = Mailbox::default();
        for _ in 0..3 {
            mailbox.send(Bytes::from_static(b"x"));
            assert_eq!(taken(&mailbox, 64), Some(b"x".to_vec()));
        }
        let state = mailbox.state.lock().expect("not poisoned");
        assert!(state.first.is_none());
        assert_eq!(state.rest.capacity(), 0);
    }

    #[test]
    fn a_drained_burst_gives_back_a_large_queue() {
        let mailbox = Mailbox::default();
        for _ in 0..200 {
            mailbox.send(Bytes::from_static(b"x"));
        }
        assert_eq!(taken(&mailbox, 1024).map(|b| b.len()), Some(200));
        let state = mailbox.state.lock().expect("not poisoned");
        assert!(state.rest.capacity() <= 64);
    }

    #[test]
    fn the_open_count_is_given_back_when_the_slot_is_dropped() {
        let open = Arc::new(AtomicU64::new(1));
        let slot = OpenSlot::adopt(
            Arc::clone(&open),
            crate::sockets::PerAddress::new(0)
                .admit([127, 0, 0, 1].into())
                .expect("no limit"),
        );
        assert_eq!(open.load(Ordering::Relaxed), 1);
        drop(slot);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
