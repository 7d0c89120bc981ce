//! How one connection's bytes travel: plain TCP, TLS (rustls driven directly on the
//! non-blocking socket), WebSocket (tungstenite) or both, with their handshakes. Every kind
//! offers the same two operations to the connection: read what arrived, and write a chunk.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::{ServerConnection, StreamOwned};
use tungstenite::handshake::server::{Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// TLS over the socket.
pub(crate) type Tls = StreamOwned<ServerConnection, TcpStream>;

/// A WebSocket handshake waiting for more bytes.
type WsHandshake<S> = MidHandshake<ServerHandshake<S, UpgradeCheck>>;

/// The upgrade check for one listener's path, as tungstenite's callback.
pub(crate) struct UpgradeCheck(Arc<jetmq_shell::ws_upgrade::Upgrade>);

impl tungstenite::handshake::server::Callback for UpgradeCheck {
    fn on_request(
        self,
        request: &Request,
        response: Response,
    ) -> Result<Response, tungstenite::handshake::server::ErrorResponse> {
        jetmq_shell::ws_upgrade::check(&self.0, request, response)
    }
}

/// Where a connection stands.
pub(crate) enum Transport {
    /// Handshaking TLS; then WebSocket too when `ws_path` is set.
    TlsHandshake {
        tls: Box<Tls>,
        ws_path: Option<Arc<jetmq_shell::ws_upgrade::Upgrade>>,
    },
    /// Handshaking WebSocket over plain TCP.
    WsHandshake(Box<WsHandshake<TcpStream>>),
    /// Handshaking WebSocket over TLS.
    WssHandshake(Box<WsHandshake<Tls>>),
    /// MQTT over the socket.
    Tcp(TcpStream),
    /// MQTT over TLS.
    Tls(Box<Tls>),
    /// MQTT in binary WebSocket messages.
    Ws(Box<WebSocket<TcpStream>>),
    /// MQTT in binary WebSocket messages over TLS.
    Wss(Box<WebSocket<Tls>>),
    /// Gone.
    Closed,
}

/// What a handshake step came to.
pub(crate) enum Handshake {
    /// It needs more bytes.
    Pending,
    /// Done: the connection carries MQTT now.
    Done,
    /// It failed; the connection is to be dropped.
    Failed(String),
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl Transport {
    /// Whether a handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(
            self,
            Self::TlsHandshake { .. } | Self::WsHandshake(_) | Self::WssHandshake(_)
        )
    }

    /// Starts a WebSocket handshake on `stream` for `path`.
    fn start_ws<S: Read + Write>(
        stream: S,
        path: Arc<jetmq_shell::ws_upgrade::Upgrade>,
        max_message: usize,
    ) -> Result<Result<WebSocket<S>, WsHandshake<S>>, String> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        match tungstenite::accept_hdr_with_config(stream, UpgradeCheck(path), Some(config)) {
            Ok(ws) => Ok(Ok(ws)),
            Err(HandshakeError::Interrupted(mid)) => Ok(Err(mid)),
            Err(HandshakeError::Failure(e)) => Err(e.to_string()),
        }
    }

    /// A new connection on a WebSocket listener.
    pub(crate) fn websocket(
        socket: TcpStream,
        path: Arc<jetmq_shell::ws_upgrade::Upgrade>,
        max_message: usize,
    ) -> (Self, Handshake) {
        match Self::start_ws(socket, path, max_message) {
            Ok(Ok(ws)) => (Self::Ws(Box::new(ws)), Handshake::Done),
            Ok(Err(mid)) => (Self::WsHandshake(Box::new(mid)), Handshake::Pending),
            Err(e) => (Self::Closed, Handshake::Failed(e)),
        }
    }

    /// Goes on with a handshake after the socket became ready.
    pub(crate) fn advance(&mut self, max_message: usize) -> Handshake {
        match std::mem::replace(self, Self::Closed) {
            Self::TlsHandshake { mut tls, ws_path } => {
                while tls.conn.is_handshaking() {
                    match tls.conn.complete_io(&mut tls.sock) {
                        Ok((0, 0)) => return Handshake::Failed("closed during TLS".into()),
                        Ok(_) => {}
                        Err(e) if would_block(&e) => {
                            *self = Self::TlsHandshake { tls, ws_path };
                            return Handshake::Pending;
                        }
                        Err(e) => return Handshake::Failed(e.to_string()),
                    }
                }
                match ws_path {
                    None => {
                        *self = Self::Tls(tls);
                        Handshake::Done
                    }
                    Some(path) => match Self::start_ws(*tls, path, max_message) {
                        Ok(Ok(ws)) => {
                            *self = Self::Wss(Box::new(ws));
                            Handshake::Done
                        }
                        Ok(Err(mid)) => {
                            *self = Self::WssHandshake(Box::new(mid));
                            Handshake::Pending
                        }
                        Err(e) => Handshake::Failed(e),
                    },
                }
            }
            Self::WsHandshake(mid) => match mid.handshake() {
                Ok(ws) => {
                    *self = Self::Ws(Box::new(ws));
                    Handshake::Done
                }
                Err(HandshakeError::Interrupted(mid)) => {
                    *self = Self::WsHandshake(Box::new(mid));
                    Handshake::Pending
                }
                Err(HandshakeError::Failure(e)) => Handshake::Failed(e.to_string()),
            },
            Self::WssHandshake(mid) => match mid.handshake() {
                Ok(ws) => {
                    *self = Self::Wss(Box::new(ws));
                    Handshake::Done
                }
                Err(HandshakeError::Interrupted(mid)) => {
                    *self = Self::WssHandshake(Box::new(mid));
                    Handshake::Pending
                }
                Err(HandshakeError::Failure(e)) => Handshake::Failed(e.to_string()),
            },
            other => {
                let done = !matches!(other, Self::Closed);
                *self = other;
                if done {
                    Handshake::Done
                } else {
                    Handshake::Failed("closed".into())
                }
            }
        }
    }

    /// The TLS connection, for the client certificate's identity once the handshake is done.
    pub(crate) fn tls(&self) -> Option<&ServerConnection> {
        match self {
            Self::Tls(t) => Some(&t.conn),
            Self::Wss(ws) => Some(&ws.get_ref().conn),
            Self::TlsHandshake { tls, .. } => Some(&tls.conn),
            _ => None,
        }
    }

    /// The socket, to register and deregister it.
    pub(crate) fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Self::Tcp(s) => Some(s),
            Self::Tls(t) | Self::TlsHandshake { tls: t, .. } => Some(&mut t.sock),
            Self::Ws(ws) => Some(ws.get_mut()),
            Self::Wss(ws) => Some(&mut ws.get_mut().sock),
            Self::WsHandshake(mid) => Some(mid.get_mut().get_mut()),
            Self::WssHandshake(mid) => Some(&mut mid.get_mut().get_mut().sock),
            Self::Closed => None,
        }
    }

    /// Reads what has arrived into `buf`: `Ok(0)` at the end of the stream, `WouldBlock`
    /// when nothing more is there now.
    pub(crate) fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        match self {
            Self::Tcp(s) => {
                let n = s.read(&mut chunk)?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Self::Tls(t) => {
                let n = t.read(&mut chunk)?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Self::Ws(ws) => read_ws(ws, buf),
            Self::Wss(ws) => read_ws(ws, buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes as much of `chunk` as the connection takes now: the number of bytes taken, or
    /// `WouldBlock`. TLS and WebSocket take a chunk whole once what they hold was written.
    pub(crate) fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(chunk),
            Self::Tls(t) => {
                if !flush_tls(t)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                t.conn.writer().write_all(chunk)?;
                let _ = flush_tls(t);
                Ok(chunk.len())
            }
            Self::Ws(ws) => write_ws(ws, chunk),
            Self::Wss(ws) => write_ws(ws, chunk),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes from several buffers in one go where the stream allows (TCP: one `writev`),
    /// else from the first; how many bytes were taken.
    pub(crate) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write_vectored(bufs),
            _ => self.write_chunk(bufs.first().map_or(&[][..], |b| &b[..])),
        }
    }

    /// Writes what TLS or WebSocket still holds; true when nothing is left.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        match self {
            Self::Tls(t) => flush_tls(t),
            Self::Ws(ws) => flush_ws(ws),
            Self::Wss(ws) => flush_ws(ws),
            _ => Ok(true),
        }
    }

    /// Closes the stream (a WebSocket close message, TLS close_notify) as far as possible
    /// without waiting, then the socket.
    pub(crate) fn close(&mut self) {
        match self {
            Self::Ws(ws) => {
                let _ = ws.close(None);
                let _ = ws.flush();
            }
            Self::Wss(ws) => {
                let _ = ws.close(None);
                let _ = ws.flush();
            }
            Self::Tls(t) => {
                t.conn.send_close_notify();
                let _ = flush_tls(t);
            }
            _ => {}
        }
        if let Some(s) = self.socket() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A new TLS connection, WebSocket after it when `ws_path` is set.
pub(crate) fn tls(
    socket: TcpStream,
    config: Arc<rustls::ServerConfig>,
    ws_path: Option<Arc<jetmq_shell::ws_upgrade::Upgrade>>,
) -> io::Result<Transport> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    Ok(Transport::TlsHandshake {
        tls: Box::new(StreamOwned::new(conn, socket)),
        ws_path,
    })
}

fn flush_tls(t: &mut Tls) -> io::Result<bool> {
    while t.conn.wants_write() {
        match t.conn.write_tls(&mut t.sock) {
            Ok(_) => {}
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn read_ws<S: Read + Write>(ws: &mut WebSocket<S>, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        match ws.read() {
            Ok(Message::Binary(data)) => {
                buf.extend_from_slice(&data);
                if !data.is_empty() {
                    return Ok(data.len());
                }
            }
            // [MQTT-6.0.0-1]: MQTT travels in binary messages only.
            Ok(Message::Text(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a text WebSocket message",
                ))
            }
            Ok(Message::Close(_)) => return Ok(0),
            // Pings are answered by tungstenite; the answer goes out with the next flush.
            Ok(_) => {
                let _ = ws.flush();
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(0)
            }
            Err(e) => return Err(ws_error(e)),
        }
    }
}

fn write_ws<S: Read + Write>(ws: &mut WebSocket<S>, chunk: &[u8]) -> io::Result<usize> {
    if !flush_ws(ws)? {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    ws.write(Message::binary(chunk.to_vec()))
        .map_err(ws_error)?;
    let _ = flush_ws(ws);
    Ok(chunk.len())
}

fn flush_ws<S: Read + Write>(ws: &mut WebSocket<S>) -> io::Result<bool> {
    match ws.flush() {
        Ok(()) => Ok(true),
        Err(tungstenite::Error::Io(e)) if would_block(&e) => Ok(false),
        Err(e) => Err(ws_error(e)),
    }
}
