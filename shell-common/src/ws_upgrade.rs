//! The WebSocket upgrade MQTT asks for, shared by every shell: the configured path, the
//! subprotocol `mqtt` when the client offers subprotocols, and the page's origin.
//!
//! A browser lets any page open a WebSocket to any address and says which page did in the
//! `Origin` header; without a check, any site a user visits could use the broker from their
//! browser (with their network position and, over wss, their client certificate). So a
//! listener accepts requests with no `Origin` (programs other than browsers, which could send
//! any Origin anyway), and from browsers only the origins in its `allowed_origins` or, without
//! that list, pages from the broker's own host (the Origin's `host[:port]` is the `Host`
//! header's). Others get 403.

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{header, HeaderValue, StatusCode};

/// The only WebSocket subprotocol served ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOL: &str = "mqtt";

/// What a WebSocket listener accepts: its path and the origins allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The HTTP path served, such as `/mqtt`.
    pub path: String,
    /// Origins (`scheme://host[:port]`, lower case; `*`: any) whose pages may connect;
    /// `None`: pages from the same host only. Requests without an Origin are accepted.
    pub allowed_origins: Option<Vec<String>>,
}

impl Upgrade {
    /// The upgrade of a listener at `path` with `allowed_origins`.
    #[must_use]
    pub fn new(path: &str, allowed_origins: Option<&[String]>) -> Self {
        Self {
            path: path.to_string(),
            allowed_origins: allowed_origins.map(<[String]>::to_vec),
        }
    }

    /// Whether a request with `origin` (its `Origin` header, if any) and `host` (its `Host`
    /// header) may upgrade.
    fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            // Not a browser: a program sets any Origin it likes, so its absence says nothing
            // a check could use.
            return true;
        };
        match &self.allowed_origins {
            Some(allowed) => {
                let origin = origin.trim_end_matches('/').to_ascii_lowercase();
                allowed.iter().any(|a| a == "*" || *a == origin)
            }
            None => {
                let Some((_, authority)) = origin.split_once("://") else {
                    return false; // "null" (a sandboxed page or a file) and anything malformed
                };
                let authority = authority.trim_end_matches('/');
                host.is_some_and(|h| {
                    !authority.is_empty() && h.trim().eq_ignore_ascii_case(authority)
                })
            }
        }
    }
}

/// Checks an `allowed_origins` entry: `*`, or `scheme://host[:port]` without a path; returns
/// it in lower case, as browsers send it.
///
/// # Errors
///
/// A [`crate::config::ConfigError`] naming `key` for anything else.
pub fn parse_origin(key: &str, text: &str) -> Result<String, crate::config::ConfigError> {
    let bad = || {
        crate::config::invalid(
            key,
            text,
            "\"*\" or origins as browsers send them: scheme://host[:port] without a path, \
             like https://example.com or http://localhost:8080",
        )
    };
    if text == "*" {
        return Ok(text.to_string());
    }
    let lower = text.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://").ok_or_else(bad)?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let authority_ok = !authority.is_empty()
        && !authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c));
    if scheme_ok && authority_ok {
        Ok(lower)
    } else {
        Err(bad())
    }
}

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{text}\n")));
    *response.status_mut() = status;
    response
}

/// Decides on a WebSocket upgrade request: the path must be the listener's (404 otherwise; a
/// query is ignored), the origin one it allows (403 otherwise), and a client that offers
/// subprotocols must offer `mqtt`, which the answer names (400 otherwise). A client that
/// offers none is served without one.
///
/// # Errors
///
/// The refusal to send: 404 for another path, 403 for an origin not allowed, 400 without the
/// `mqtt` subprotocol.
#[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
pub fn check(
    upgrade: &Upgrade,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let path = upgrade.path.as_str();
    let header_text = |name| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    if !upgrade.allows(header_text(header::ORIGIN), header_text(header::HOST)) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this origin may not connect (see allowed_origins)",
        ));
    }
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

    fn mqtt() -> Upgrade {
        Upgrade::new("/mqtt", None)
    }

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
            check(&mqtt(), &request("/other", None), Response::new(())).expect_err("wrong path");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let ok =
            check(&mqtt(), &request("/mqtt?x=1", None), Response::new(())).expect("query ignored");
        assert_eq!(protocol(&ok), None);
    }

    #[test]
    fn mqtt_is_chosen_among_the_offered_subprotocols() {
        let ok = check(
            &mqtt(),
            &request("/mqtt", Some("wamp, mqtt")),
            Response::new(()),
        )
        .expect("mqtt offered");
        assert_eq!(protocol(&ok), Some("mqtt"));
        let e = check(
            &mqtt(),
            &request("/mqtt", Some("mqttv3.1")),
            Response::new(()),
        )
        .expect_err("only another subprotocol");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    fn from(origin: Option<&str>, host: &str) -> Request {
        let mut builder = Request::builder().uri("/mqtt").header(header::HOST, host);
        if let Some(o) = origin {
            builder = builder.header(header::ORIGIN, o);
        }
        builder.body(()).expect("request")
    }

    /// The status an upgrade gets: 101 when allowed, else the refusal's.
    fn status(upgrade: &Upgrade, origin: Option<&str>, host: &str) -> u16 {
        check(upgrade, &from(origin, host), Response::new(()))
            .map_or_else(|e| e.status().as_u16(), |_| 101)
    }

    #[test]
    fn origins_are_checked() {
        let same = |o: Option<&str>, host: &str| status(&mqtt(), o, host);
        assert_eq!(same(None, "broker:8080"), 101, "no Origin: not a browser");
        assert_eq!(same(Some("http://broker:8080"), "broker:8080"), 101);
        assert_eq!(same(Some("https://BROKER:8080"), "broker:8080"), 101);
        for (origin, host) in [
            ("https://evil.example", "broker:8080"),
            ("http://broker:8081", "broker:8080"),
            ("null", "broker:8080"),
            ("http://", ""),
        ] {
            assert_eq!(same(Some(origin), host), 403, "{origin}");
        }
        let listed = Upgrade::new("/mqtt", Some(&["https://app.example".to_string()]));
        let with = |o: Option<&str>| status(&listed, o, "broker:8080");
        assert_eq!(with(Some("https://app.example")), 101);
        assert_eq!(with(Some("https://APP.example/")), 101);
        assert_eq!(with(Some("https://evil.example")), 403);
        assert_eq!(with(None), 101, "no Origin: not a browser");
        let any = Upgrade::new("/mqtt", Some(&["*".to_string()]));
        assert_eq!(status(&any, Some("https://x.example"), "b"), 101);
    }

    #[test]
    fn allowed_origins_are_checked_at_load() {
        assert_eq!(
            parse_origin("k", "HTTPS://App.Example:8443/").as_deref(),
            Ok("https://app.example:8443")
        );
        for bad in [
            "app.example",
            "https://",
            "https://a/b",
            "https://u@a",
            "null",
        ] {
            let e = parse_origin("k", bad).expect_err(bad);
            assert_eq!(e.key, "k");
        }
    }
}
