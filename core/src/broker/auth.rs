//! Authentication as a decision the shell makes: user name and password at CONNECT, and MQTT
//! 5.0 enhanced authentication (AUTH packets, §4.12), at CONNECT and as re-authentication.
//!
//! The core asks with [`Action::Authenticate`] and the shell answers with
//! [`Input::Authenticated`](super::Input::Authenticated). For an enhanced method the shell
//! may answer [`AuthDecision::Continue`]: the core sends the client an AUTH (0x18) with the
//! method's data, keeps the shell's `state` and hands it back with the client's answer, so a
//! multi-step method such as SCRAM needs no state in the shell.

use bytes::Bytes;
use bytestring::ByteString;

use super::connection::{Authentication, Phase, Reauth};
use super::io::DEFAULT_ACCOUNT;
use super::io::{Action, AuthDecision, AuthRequest, AuthStage, CloseReason, ConnId, Outbox};
use super::Broker;
use crate::codec::{Auth, AuthReason, Connect, ConnectReason, DisconnectReason, Packet};
use crate::topic::TopicName;

impl Broker {
    /// Asks the shell about a CONNECT; the connection waits in `Authenticating`.
    pub(super) fn start_authentication(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        client_id: ByteString,
        assigned: bool,
        out: &mut Outbox,
    ) {
        let now = self.now.instant;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let request = AuthRequest {
            conn,
            info: c.info.clone(),
            protocol: connect.protocol,
            client_id: client_id.clone(),
            username: connect.username.clone(),
            password: connect.password.clone(),
            method: connect.properties.authentication_method.clone(),
            data: connect.properties.authentication_data.clone(),
            stage: AuthStage::Connect,
            state: None,
        };
        let deadline = match c.phase {
            Phase::AwaitingConnect { deadline } => deadline,
            _ => now,
        };
        c.phase = Phase::Authenticating(Box::new(Authentication {
            deadline,
            connect,
            client_id,
            assigned,
            state: Bytes::new(),
        }));
        out.push(Action::Authenticate(Box::new(request)));
    }

    /// The shell's decision on a CONNECT (or on a step of a re-authentication): the CONNECT
    /// is accepted (with its account, the method's final data and its permissions),
    /// continues an enhanced-authentication exchange, or is refused.
    pub(super) fn on_authenticated(
        &mut self,
        conn: ConnId,
        decision: AuthDecision,
        out: &mut Outbox,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            self.unknown_conn(conn, out);
            return;
        };
        match c.phase {
            Phase::Authenticating(_) => {}
            Phase::Connected { .. } if matches!(c.reauth(), Some(Reauth::AwaitingShell)) => {
                self.on_reauth_decision(conn, decision, out);
                return;
            }
            _ => {
                // A decision nobody asked for (or a repeated one) changes nothing.
                self.stats.unknown_inputs += 1;
                return;
            }
        }
        let Phase::Authenticating(authentication) = std::mem::replace(&mut c.phase, Phase::Closing)
        else {
            return;
        };
        let deadline = authentication.deadline;
        let version = authentication.connect.protocol;
        c.phase = Phase::AwaitingConnect { deadline };
        match decision {
            AuthDecision::Allow {
                account,
                permissions,
            } => self.authenticated(conn, *authentication, (account, None, permissions), out),
            AuthDecision::AllowWith {
                account,
                data,
                permissions,
            } => self.authenticated(conn, *authentication, (account, data, permissions), out),
            AuthDecision::Continue { data, state } => {
                self.continue_authentication(conn, *authentication, data, state, out);
            }
            AuthDecision::Deny(reason) => {
                let reason = if reason == ConnectReason::Success {
                    ConnectReason::NotAuthorized
                } else {
                    reason
                };
                self.refuse(conn, version, reason, out);
            }
        }
    }

    /// The shell continues an enhanced authentication: the client gets an AUTH (0x18) with
    /// the method's `data` and owes the next step; the shell's `state` waits with it.
    fn continue_authentication(
        &mut self,
        conn: ConnId,
        authentication: Authentication,
        data: Bytes,
        state: Bytes,
        out: &mut Outbox,
    ) {
        let version = authentication.connect.protocol;
        let method = authentication
            .connect
            .properties
            .authentication_method
            .clone();
        let (Some(method), Some(c)) = (method, self.conns.get_mut(&conn)) else {
            // Nothing to continue without an enhanced method.
            self.refuse(conn, version, ConnectReason::NotAuthorized, out);
            return;
        };
        c.phase = Phase::AuthExchange(Box::new(Authentication {
            state,
            ..authentication
        }));
        self.send_auth(conn, AuthReason::ContinueAuthentication, method, Some(data));
        self.resume_after_connect(conn, out);
    }

    /// The shell accepted a CONNECT into `account`, with the method's final data `reply` and
    /// the client's `permissions`: a will the permissions do not allow is refused, anything
    /// else accepted.
    fn authenticated(
        &mut self,
        conn: ConnId,
        authentication: Authentication,
        (account, reply, permissions): (
            Option<ByteString>,
            Option<Bytes>,
            Option<Box<crate::broker::Permissions>>,
        ),
        out: &mut Outbox,
    ) {
        let Authentication {
            connect,
            client_id,
            assigned,
            ..
        } = authentication;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if reply.is_some() {
            c.extensions().auth_reply = reply;
        }
        if let Some(permissions) = permissions {
            let grants = permissions.resolve(&client_id);
            let will_denied = connect.will.as_ref().is_some_and(|w| {
                TopicName::new(w.topic.clone()).is_ok_and(|topic| !grants.may_publish(&topic))
            });
            if will_denied {
                // Its will could never be published: refused now, with the reason.
                self.refuse(conn, connect.protocol, ConnectReason::NotAuthorized, out);
                return;
            }
            c.extensions().grants = Some(grants);
        }
        let account = account.unwrap_or_else(|| ByteString::from_static(DEFAULT_ACCOUNT));
        self.accept(conn, connect, client_id, assigned, account, out);
        self.resume_after_connect(conn, out);
    }

    /// A packet while the client owes the broker the next step of an enhanced
    /// authentication: only an AUTH (0x18) with the same method, or a DISCONNECT.
    pub(super) fn on_auth_exchange_packet(
        &mut self,
        conn: ConnId,
        packet: Packet,
        out: &mut Outbox,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Phase::AuthExchange(_) = c.phase else {
            return;
        };
        let Phase::AuthExchange(authentication) = std::mem::replace(&mut c.phase, Phase::Closing)
        else {
            return;
        };
        let Authentication {
            deadline,
            connect,
            client_id,
            assigned,
            state,
        } = *authentication;
        let version = connect.protocol;
        match packet {
            Packet::Auth(auth)
                if auth.reason == AuthReason::ContinueAuthentication
                    && auth.properties.authentication_method
                        == connect.properties.authentication_method =>
            {
                let request = AuthRequest {
                    conn,
                    info: c.info.clone(),
                    protocol: version,
                    client_id: client_id.clone(),
                    username: connect.username.clone(),
                    password: None,
                    method: connect.properties.authentication_method.clone(),
                    data: auth.properties.authentication_data,
                    stage: AuthStage::Continue,
                    state: Some(state),
                };
                c.phase = Phase::Authenticating(Box::new(Authentication {
                    deadline,
                    connect,
                    client_id,
                    assigned,
                    state: Bytes::new(),
                }));
                out.push(Action::Authenticate(Box::new(request)));
            }
            Packet::Disconnect(_) => {
                self.close(conn, CloseReason::ClientDisconnect, false, out);
            }
            _ => {
                // [MQTT-3.1.2-30]: anything else before CONNACK is a protocol error.
                c.phase = Phase::AwaitingConnect { deadline };
                self.refuse(conn, version, ConnectReason::ProtocolError, out);
            }
        }
    }

    /// An AUTH from a connected client: starting or continuing a re-authentication with the
    /// method it connected with; anything else is a protocol error.
    pub(super) fn on_reauth_packet(&mut self, conn: ConnId, auth: &Auth, out: &mut Outbox) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let same_method = c.auth_method().is_some()
            && auth.properties.authentication_method.as_ref() == c.auth_method();
        let reauth = c.extensions.as_mut().and_then(|e| e.reauth.take());
        let state = match (auth.reason, reauth) {
            (AuthReason::ReAuthenticate, None) if same_method => None,
            (AuthReason::ContinueAuthentication, Some(Reauth::AwaitingClient { state }))
                if same_method =>
            {
                Some(state)
            }
            _ => {
                // [MQTT-4.12.0-7] no method at CONNECT, [MQTT-4.12.1-1] another method, or out of
                // sequence.
                self.protocol_error(conn, DisconnectReason::ProtocolError, out);
                return;
            }
        };
        let Some(session) = c.session() else {
            return;
        };
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let request = AuthRequest {
            conn,
            info: c.info.clone(),
            protocol: c.version,
            client_id: s.key.client_id.clone(),
            username: None,
            password: None,
            method: c.auth_method().cloned(),
            data: auth.properties.authentication_data.clone(),
            stage: if state.is_some() {
                AuthStage::Continue
            } else {
                AuthStage::Reauthenticate
            },
            state,
        };
        c.extensions().reauth = Some(Reauth::AwaitingShell);
        out.push(Action::Authenticate(Box::new(request)));
    }

    /// The shell's decision on a step of a re-authentication.
    fn on_reauth_decision(&mut self, conn: ConnId, decision: AuthDecision, out: &mut Outbox) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let extensions = c.extensions();
        extensions.reauth = None;
        let Some(method) = extensions.auth_method.clone() else {
            return;
        };
        match decision {
            AuthDecision::Allow { .. } => {
                self.send_auth(conn, AuthReason::Success, method, None);
            }
            AuthDecision::AllowWith { data, .. } => {
                self.send_auth(conn, AuthReason::Success, method, data);
            }
            AuthDecision::Continue { data, state } => {
                c.extensions().reauth = Some(Reauth::AwaitingClient { state });
                self.send_auth(conn, AuthReason::ContinueAuthentication, method, Some(data));
            }
            AuthDecision::Deny(reason) => {
                // [MQTT-4.12.1-2]: a failed re-authentication ends the connection.
                let reason = match reason {
                    ConnectReason::BadAuthenticationMethod => {
                        DisconnectReason::BadAuthenticationMethod
                    }
                    _ => DisconnectReason::NotAuthorized,
                };
                self.send_disconnect(conn, reason);
                self.close(conn, CloseReason::ProtocolViolation(reason), true, out);
            }
        }
    }

    /// Writes an AUTH with the method and its data to `conn`.
    fn send_auth(
        &mut self,
        conn: ConnId,
        reason: AuthReason,
        method: ByteString,
        data: Option<Bytes>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut auth = Auth::new(reason);
        auth.properties.authentication_method = Some(method);
        auth.properties.authentication_data = data;
        Packet::Auth(Box::new(auth)).encode(c.version, &mut c.out);
        self.mark_dirty(conn);
    }
}
