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
    /// A challenge the client signs with its nkey (nkey and JWT authentication): the `sig`
    /// of its `CONNECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The options the client sends in `CONNECT`. Its `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The user JWT (decentralised authentication, a `.creds` file); `sig` proves the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// The public nkey of the user (nkey authentication); `sig` proves the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// The signature of the server's nonce (base64url), set by the client at each handshake
    /// from its [`NonceSigner`](super::client::NonceSigner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
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
            jwt: None,
            nkey: None,
            sig: None,
            tls_required: false,
            echo: false,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectOptions")
            .field("verbose", &self.verbose)
            .field("pedantic", &self.pedantic)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .field("headers", &self.headers)
            .field("no_responders", &self.no_responders)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("pass", &hidden(&self.pass))
            .field("auth_token", &hidden(&self.auth_token))
            .field("jwt", &hidden(&self.jwt))
            .field("nkey", &self.nkey)
            .field("sig", &hidden(&self.sig))
            .field("tls_required", &self.tls_required)
            .field("echo", &self.echo)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_and_absent_fields_out_of_json() {
        let options = ConnectOptions {
            user: Some("jetmq".into()),
            pass: Some("pa55word".into()),
            auth_token: Some("t0ken".into()),
            jwt: Some("eyJhead.eyJbody.sig".into()),
            sig: Some("c2ln".into()),
            ..ConnectOptions::default()
        };
        let debug = format!("{options:?}");
        for secret in ["pa55word", "t0ken", "eyJbody", "c2ln"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("jetmq"));
        let json = serde_json::to_string(&ConnectOptions::default()).unwrap_or_default();
        for absent in ["jwt", "nkey", "sig", "pass", "auth_token"] {
            assert!(!json.contains(absent), "{json}");
        }
        let info: ServerInfo =
            serde_json::from_str(r#"{"server_id":"x","nonce":"abc","auth_required":true}"#)
                .unwrap_or_default();
        assert_eq!(info.nonce.as_deref(), Some("abc"));
    }
}
