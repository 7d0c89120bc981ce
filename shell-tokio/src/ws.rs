//! MQTT over WebSocket: the server handshake (configured path, subprotocol `mqtt`) and a byte
//! stream over binary messages, so the connection loops read and write it like a socket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The only WebSocket subprotocol served ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub(crate) const SUBPROTOCOL: &str = "mqtt";

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{text}\n")));
    *response.status_mut() = status;
    response
}

/// Decides on a WebSocket upgrade request: the path must be `path` (404 otherwise; a query is
/// ignored), and a client that offers subprotocols must offer `mqtt`, which the answer names
/// (400 otherwise). A client that offers none is served without one.
#[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
pub(crate) fn check_upgrade(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            &format!("MQTT over WebSocket is served at {path}"),
        ));
    }
    let mut offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return Ok(response);
    }
    if offered.any(|p| p == SUBPROTOCOL) {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol must be mqtt",
        ))
    }
}

/// Runs the server side of the WebSocket handshake on `stream`, serving only `path`. Messages
/// and frames larger than `max_message` bytes (the broker's maximum packet size: clients send
/// a packet per message) close the connection instead of being buffered.
///
/// # Errors
///
/// The handshake failed or was refused (wrong path, no `mqtt` subprotocol, not an upgrade).
#[allow(clippy::result_large_err)] // The callback's error type is tungstenite's.
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    max_message: usize,
) -> Result<WsBytes<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let callback = |request: &Request, response: Response| check_upgrade(path, request, response);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    Ok(WsBytes::new(ws))
}

/// A byte stream over a WebSocket: reads yield the payloads of binary messages in order; each
/// write is sent as one binary message. A text message is an error ([MQTT-6.0.0-1]); pings
/// are answered by tungstenite; a close message or a closed connection reads as end of stream.
#[derive(Debug)]
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    pending: Bytes,
    eof: bool,
}

impl<S> WsBytes<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::NotConnected, e)
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket is carried in binary messages only",
                    )))
                }
                Some(Ok(Message::Close(_)))
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))
                | None => this.eof = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends a close message, flushes and closes.
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(p) = protocols {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        builder.body(()).expect("request")
    }

    fn protocol(response: &Response) -> Option<&str> {
        response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn the_path_must_match() {
        let e = check_upgrade("/mqtt", &request("/other", None), Response::new(()))
            .expect_err("wrong path");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let ok = check_upgrade("/mqtt", &request("/mqtt?x=1", None), Response::new(()))
            .expect("query ignored");
        assert_eq!(protocol(&ok), None);
    }

    #[test]
    fn mqtt_is_chosen_among_the_offered_subprotocols() {
        let ok = check_upgrade(
            "/mqtt",
            &request("/mqtt", Some("wamp, mqtt")),
            Response::new(()),
        )
        .expect("mqtt offered");
        assert_eq!(protocol(&ok), Some("mqtt"));
        let e = check_upgrade(
            "/mqtt",
            &request("/mqtt", Some("mqttv3.1")),
            Response::new(()),
        )
        .expect_err("only another subprotocol");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
