//! The JSON of `INFO` (the server describes itself) and `CONNECT` (the client's options).

use serde::{Deserialize, Serialize};

/// What the server says about itself in `INFO`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's unique identifier.
    #[serde(default)]
    pub server_id: String,
    /// The server's name.
    #[serde(default)]
    pub server_name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// Whether it supports headers (`HPUB`/`HMSG`).
    #[serde(default)]
    pub headers: bool,
    /// The largest payload it accepts, headers included.
    #[serde(default)]
    pub max_payload: usize,
    /// Whether JetStream is enabled.
    #[serde(default)]
    pub jetstream: bool,
    /// Whether it requires TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Whether it requires authentication.
    #[serde(default)]
    pub auth_required: bool,
    /// Other servers of the cluster a client may connect to.
    #[serde(default)]
    pub connect_urls: Vec<String>,
    /// The client's identifier on this server.
    #[serde(default)]
    pub client_id: u64,
}

/// The options the client sends in `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOptions {
    /// Ask for `+OK` after every operation (jetmq does not).
    pub verbose: bool,
    /// Stricter checks by the server.
    pub pedantic: bool,
    /// The client library's language.
    pub lang: String,
    /// The client library's version.
    pub version: String,
    /// Protocol 1: the server may send INFO updates.
    pub protocol: u8,
    /// Whether the client sends and understands headers.
    pub headers: bool,
    /// Whether the server answers requests without responders with a 503 status.
    pub no_responders: bool,
    /// A name for the connection, shown in the server's monitoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User name, if the server wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password, with `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Authentication token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// Whether the client insists on TLS (it upgrades the connection after `INFO` even if
    /// the server does not require it).
    pub tls_required: bool,
    /// Whether the client wants its own publishes on its subscriptions (jetmq: no, which is
    /// how a bridge avoids echo loops).
    pub echo: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            verbose: false,
            pedantic: false,
            lang: "rust-jetmq".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: 1,
            headers: true,
            no_responders: true,
            name: None,
            user: None,
            pass: None,
            auth_token: None,
            tls_required: false,
            echo: false,
        }
    }
}
