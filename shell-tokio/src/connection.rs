//! The two tasks of one client connection: a reader that turns socket reads into broker
//! inputs, and a writer that writes what the broker sends and reports how much left.
//!
//! Both work on any byte stream half: a TCP socket's, or one of `tokio::io::split` over TLS,
//! WebSocket or secure WebSocket.

use bytes::{Bytes, BytesMut};
use jetmq_core::broker::{ConnId, Input};
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, Notify};

/// Size of each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// The smallest read buffer a connection keeps.
const MIN_READ: usize = 256;

/// What the broker task hands a connection's writer (bytes to write in order, then perhaps a
/// close) and its reader (pause, resume). A mutex-guarded queue, a flag and two `Notify`s
/// instead of channels: an idle connection holds no preallocated block of slots (a tokio
/// channel's first block is over 1 KiB, a watch channel's notifiers a few hundred bytes).
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    state: std::sync::Mutex<MailboxState>,
    ready: Notify,
    /// The broker asked the reader to stop reading.
    paused: AtomicBool,
    /// Wakes a paused reader.
    resumed: Notify,
}

#[derive(Debug, Default)]
struct MailboxState {
    queue: VecDeque<Bytes>,
    /// Write what is queued, then close the socket.
    close: bool,
    /// The writer has stopped: nothing more is kept.
    stopped: bool,
}

impl Mailbox {
    /// Queues bytes after everything before.
    pub(crate) fn send(&self, bytes: Bytes) {
        if let Ok(mut s) = self.state.lock() {
            if s.close || s.stopped {
                return;
            }
            s.queue.push_back(bytes);
        }
        self.ready.notify_one();
    }

    /// Asks the writer to write what is queued, then close the socket.
    pub(crate) fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.close = true;
        }
        self.ready.notify_one();
    }

    /// Waits for something to write; takes up to `limit` bytes of it (at least one item) and
    /// says whether a close follows them.
    async fn next(&self, limit: usize, batch: &mut BytesMut) -> Option<(Bytes, bool)> {
        loop {
            {
                let mut s = self.state.lock().ok()?;
                if let Some(first) = s.queue.pop_front() {
                    let bytes = if s.queue.is_empty() {
                        first
                    } else {
                        // What else waits goes out in the same write: one system call for a
                        // burst of packets instead of one each.
                        batch.extend_from_slice(&first);
                        while batch.len() < limit {
                            let Some(more) = s.queue.pop_front() else {
                                break;
                            };
                            batch.extend_from_slice(&more);
                        }
                        batch.split().freeze()
                    };
                    if s.queue.is_empty() && s.queue.capacity() > 64 {
                        s.queue.shrink_to_fit();
                    }
                    return Some((bytes, s.close && s.queue.is_empty()));
                }
                if s.close {
                    return Some((Bytes::new(), true));
                }
            }
            self.ready.notified().await;
        }
    }

    /// Stops or restarts reading (the broker's flow control).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Waits while reading is paused.
    async fn while_paused(&self) {
        loop {
            // Registered before the flag is read, so a resume in between is not missed.
            let resumed = self.resumed.notified();
            if !self.paused.load(Ordering::Acquire) {
                return;
            }
            resumed.await;
        }
    }

    fn stopped(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stopped = true;
            s.queue = VecDeque::new();
        }
    }
}

/// The broker task's handle on one connection; dropping it closes the connection once what
/// is queued is written.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) mailbox: std::sync::Arc<Mailbox>,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// Reads from the socket until it closes, feeding the broker; waits while paused.
pub(crate) async fn read_loop(
    conn: ConnId,
    mut socket: impl AsyncRead + Unpin,
    inputs: mpsc::Sender<Input>,
    control: std::sync::Arc<Mailbox>,
) {
    // The read size adapts: an idle or chatty-but-small connection keeps a small buffer (idle
    // connections are most of a broker's connections), a busy one grows to READ_CHUNK.
    let mut chunk = MIN_READ;
    let mut buf = BytesMut::new();
    loop {
        control.while_paused().await;
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = inputs.send(Input::Closed { conn }).await;
                return;
            }
            Ok(n) => {
                if n == room {
                    chunk = (chunk * 2).min(READ_CHUNK);
                } else if n < chunk / 8 {
                    chunk = (chunk / 2).max(MIN_READ);
                }
                let data = buf.split();
                // The bounded channel makes a fast sender wait here instead of growing memory.
                if inputs.send(Input::Received { conn, data }).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The most bytes a writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Writes what the broker sends (what is queued together in one write), reports each write
/// with `flushed`, and closes the socket on request (or when the broker goes away), then stops
/// the reader. Buffering streams (TLS, WebSocket) are flushed whenever no more sends are
/// queued.
pub(crate) async fn write_loop(
    conn: ConnId,
    mut socket: impl AsyncWrite + Unpin,
    mailbox: std::sync::Arc<Mailbox>,
    flushed: impl Fn(Input) + Send,
    reader: tokio::task::AbortHandle,
) {
    let mut batch = BytesMut::new();
    while let Some((bytes, close)) = mailbox.next(WRITE_BATCH, &mut batch).await {
        let len = bytes.len();
        if len > 0 {
            if socket.write_all(&bytes).await.is_err() {
                break;
            }
            let more = mailbox.state.lock().is_ok_and(|s| !s.queue.is_empty());
            if (close || !more) && socket.flush().await.is_err() {
                break;
            }
            flushed(Input::Flushed { conn, bytes: len });
        }
        if close {
            let _ = socket.shutdown().await;
            break;
        }
    }
    mailbox.stopped();
    reader.abort();
}
