//! One client connection on the mio loop: its transport, the bytes the broker sent that are
//! not written yet, and whether reading is paused.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use jetmq_core::broker::{ConnId, ConnInfo};

use crate::transport::{Handshake, Transport};

/// What a read turn found.
pub(crate) enum ReadOutcome {
    /// Nothing more for now (bytes may have been appended).
    Drained,
    /// The read budget is spent and the socket may hold more: read again on the next turn
    /// (edge-triggered polling raises no new event for it).
    More,
    /// The peer closed or the stream broke.
    Closed,
}

/// The most bytes read from one connection in one turn: a flooding publisher's input is
/// handed to the broker (and the subscribers' output written) in slices, instead of the
/// whole socket buffer at once.
const READ_BUDGET: usize = 256 * 1024;

/// One connection.
pub(crate) struct Connection {
    /// The number the broker knows it by, once its handshakes are done.
    pub(crate) id: Option<ConnId>,
    pub(crate) transport: Transport,
    /// Facts for the broker, completed when the handshakes are done.
    pub(crate) info: ConnInfo,
    /// When its TLS or WebSocket handshake must be done.
    pub(crate) handshake_deadline: Instant,
    /// Chunks the broker sent, in order; the first may be partly written.
    queue: VecDeque<Bytes>,
    /// Bytes of the first chunk already written.
    offset: usize,
    /// The broker asked to stop reading.
    pub(crate) paused: bool,
    /// The socket had bytes when reading was paused: read on resume.
    pub(crate) readable: bool,
    /// The broker closed it: drop once everything is written.
    pub(crate) closing: bool,
    /// It has bytes to write at the end of this turn (on the server's dirty list).
    pub(crate) dirty: bool,
    /// Its count among its source address's connections, given back when it is dropped.
    _address: jetmq_shell::sockets::AddressSlot,
}

impl Connection {
    pub(crate) fn new(
        transport: Transport,
        info: ConnInfo,
        handshake_deadline: Instant,
        address: jetmq_shell::sockets::AddressSlot,
    ) -> Self {
        Self {
            _address: address,
            id: None,
            transport,
            info,
            handshake_deadline,
            queue: VecDeque::new(),
            offset: 0,
            paused: false,
            readable: false,
            closing: false,
            dirty: false,
        }
    }

    /// Goes on with the handshakes.
    pub(crate) fn advance(&mut self, max_message: usize) -> Handshake {
        self.transport.advance(max_message)
    }

    /// Reads everything that has arrived into `buf`.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> ReadOutcome {
        let start = buf.len();
        loop {
            if buf.len() - start >= READ_BUDGET {
                return ReadOutcome::More;
            }
            match self.transport.read_into(buf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Queues bytes from the broker.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue.push_back(bytes);
        }
    }

    /// Writes queued bytes until the socket would block: how many were written, or an error
    /// when the connection broke.
    pub(crate) fn write(&mut self) -> io::Result<usize> {
        let mut written = 0;
        while !self.queue.is_empty() {
            // Up to 32 queued chunks in one system call (a PUBLISH header and its shared
            // payload are two chunks).
            let mut slices = [io::IoSlice::new(&[]); 32];
            let mut count = 0;
            for (i, chunk) in self.queue.iter().take(slices.len()).enumerate() {
                let from = if i == 0 { self.offset } else { 0 };
                slices[i] = io::IoSlice::new(&chunk[from..]);
                count = i + 1;
            }
            match self.transport.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.queue.capacity() > 0 {
            // All written: an idle connection keeps no queue.
            self.queue = VecDeque::new();
        }
        self.transport.flush()?;
        Ok(written)
    }

    /// Drops `n` written bytes from the front of the queue.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front() else {
                return;
            };
            let left = front.len() - self.offset;
            if n >= left {
                n -= left;
                self.queue.pop_front();
                self.offset = 0;
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    /// Whether everything queued has left (as far as this side can tell).
    pub(crate) fn drained(&mut self) -> bool {
        self.queue.is_empty() && self.transport.flush().unwrap_or(true)
    }
}
