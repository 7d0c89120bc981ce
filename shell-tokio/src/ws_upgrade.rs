//! The WebSocket upgrade MQTT asks for, shared by every shell: the configured path, and the
//! subprotocol `mqtt` when the client offers subprotocols.

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{header, HeaderValue, StatusCode};

/// The only WebSocket subprotocol served ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOL: &str = "mqtt";

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{text}\n")));
    *response.status_mut() = status;
    response
}

/// Decides on a WebSocket upgrade request: the path must be `path` (404 otherwise; a query is
/// ignored), and a client that offers subprotocols must offer `mqtt`, which the answer names
/// (400 otherwise). A client that offers none is served without one.
/// # Errors
///
/// The refusal to send: 404 for another path, 400 without the `mqtt` subprotocol.
#[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
pub fn check(
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
        let e =
            check("/mqtt", &request("/other", None), Response::new(())).expect_err("wrong path");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let ok =
            check("/mqtt", &request("/mqtt?x=1", None), Response::new(())).expect("query ignored");
        assert_eq!(protocol(&ok), None);
    }

    #[test]
    fn mqtt_is_chosen_among_the_offered_subprotocols() {
        let ok = check(
            "/mqtt",
            &request("/mqtt", Some("wamp, mqtt")),
            Response::new(()),
        )
        .expect("mqtt offered");
        assert_eq!(protocol(&ok), Some("mqtt"));
        let e = check(
            "/mqtt",
            &request("/mqtt", Some("mqttv3.1")),
            Response::new(()),
        )
        .expect_err("only another subprotocol");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
