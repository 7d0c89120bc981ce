//! The two tasks of one client connection: a reader that turns socket reads into broker
//! inputs, and a writer that writes what the broker sends and reports how much left.
//!
//! Both work on any byte stream half: a TCP socket's, or one of `tokio::io::split` over TLS,
//! WebSocket or secure WebSocket.

use bytes::{Bytes, BytesMut};
use jetmq_core::broker::{ConnId, Input};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Size of each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// The smallest read buffer a connection keeps.
const MIN_READ: usize = 512;

/// What the broker task tells a connection's writer.
#[derive(Debug)]
pub(crate) enum WriterCommand {
    /// Write these bytes after everything before.
    Send(Bytes),
    /// Write what is queued, then close the socket.
    Close,
}

/// The broker task's handle on one connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) writer: mpsc::UnboundedSender<WriterCommand>,
    pub(crate) paused: watch::Sender<bool>,
}

/// Reads from the socket until it closes, feeding the broker; waits while paused.
pub(crate) async fn read_loop(
    conn: ConnId,
    mut socket: impl AsyncRead + Unpin,
    inputs: mpsc::Sender<Input>,
    mut paused: watch::Receiver<bool>,
) {
    // The read size adapts: an idle or chatty-but-small connection keeps a small buffer (idle
    // connections are most of a broker's connections), a busy one grows to READ_CHUNK.
    let mut chunk = MIN_READ;
    let mut buf = BytesMut::new();
    loop {
        while *paused.borrow() {
            if paused.changed().await.is_err() {
                return;
            }
        }
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
    mut commands: mpsc::UnboundedReceiver<WriterCommand>,
    flushed: impl Fn(Input) + Send,
    reader: tokio::task::AbortHandle,
) {
    let mut batch = BytesMut::new();
    while let Some(command) = commands.recv().await {
        let WriterCommand::Send(first) = command else {
            let _ = socket.flush().await;
            let _ = socket.shutdown().await;
            break;
        };
        // What else is already waiting goes out in the same write: one system call for a
        // burst of packets instead of one each.
        let mut close = false;
        let bytes = if commands.is_empty() {
            first
        } else {
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH {
                match commands.try_recv() {
                    Ok(WriterCommand::Send(more)) => batch.extend_from_slice(&more),
                    Ok(WriterCommand::Close) => {
                        close = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            batch.split().freeze()
        };
        let len = bytes.len();
        if socket.write_all(&bytes).await.is_err() {
            break;
        }
        if (close || commands.is_empty()) && socket.flush().await.is_err() {
            break;
        }
        flushed(Input::Flushed { conn, bytes: len });
        if close {
            let _ = socket.shutdown().await;
            break;
        }
    }
    reader.abort();
}
