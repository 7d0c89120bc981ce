//! Offline administration of the store: list and delete sessions (`jetmq sessions ...`).
//!
//! It runs the broker core over what the store holds, exactly as the server does at start-up,
//! so what it shows and what it deletes are what the server would see. Run it while the
//! server is stopped: the embedded store admits one process at a time.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use jetmq_core::broker::{Action, Broker, Input, Outbox, SessionInfo, SessionKey};
use jetmq_core::time::{Now, WallClock};

use crate::config::ServerConfig;
use crate::store::StoreBackend;

/// How long deleting waits for the store to apply its writes.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// A broker restored from the store, for one administrative command.
pub struct Admin<'s> {
    broker: Broker,
    store: &'s dyn StoreBackend,
    started: std::time::Instant,
    /// Store writes the restore itself asked for (sessions and messages that expired while
    /// the server was down); carried out only by commands that change the store.
    pending: Outbox,
    /// NATS messages the commands asked to publish (in a fleet, the notice that ends a
    /// deleted session on the running nodes).
    notices: Vec<Action>,
}

impl<'s> Admin<'s> {
    /// Restores a broker with the server's configuration from `store`.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn open(config: &ServerConfig, store: &'s dyn StoreBackend) -> Result<Self, String> {
        let records = store
            .restore()
            .map_err(|e| format!("cannot read the store: {e}"))?;
        let started = std::time::Instant::now();
        let mut admin = Self {
            broker: Broker::new(config.broker.clone(), config.seed, now(started)),
            store,
            started,
            pending: Outbox::new(),
            notices: Vec::new(),
        };
        for record in records {
            admin.input(Input::Restored(record));
        }
        admin.input(Input::RestoreComplete);
        Ok(admin)
    }

    fn input(&mut self, input: Input) {
        self.broker
            .handle(now(self.started), input, &mut self.pending);
    }

    /// Every session, in key order.
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.broker.sessions().collect()
    }

    /// Deletes a session and its stored state; false if there is no such session.
    ///
    /// # Errors
    ///
    /// When a store write fails or does not finish in time.
    pub fn delete(&mut self, key: SessionKey) -> Result<bool, String> {
        if !self.broker.sessions().any(|s| s.key == key) {
            return Ok(false);
        }
        self.input(Input::DiscardSession(key));
        self.apply()?;
        Ok(true)
    }

    /// The NATS messages the commands so far asked to publish, taken: in a fleet, publish
    /// them (`JetStreamBackend::publish`) so a deleted session's client is disconnected from
    /// the node it is on.
    pub fn take_notices(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.notices)
    }

    /// Carries out the store writes asked for so far and waits for each to finish.
    fn apply(&mut self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        let mut waiting = 0usize;
        loop {
            let actions: Vec<Action> = self.pending.drain().collect();
            for action in actions {
                if let Action::NatsPublish { .. } = action {
                    self.notices.push(action);
                } else if let Action::Store { id, request } = action {
                    let tx = tx.clone();
                    waiting += 1;
                    self.store.submit(
                        id,
                        request,
                        Box::new(move |id, reply| {
                            let _ = tx.send((id, reply));
                        }),
                    );
                }
            }
            if waiting == 0 {
                return Ok(());
            }
            let (id, reply) = rx
                .recv_timeout(STORE_WAIT)
                .map_err(|_| "the store did not finish its writes in time".to_string())?;
            waiting -= 1;
            if let Err(e) = &reply {
                return Err(format!("a store write failed: {e}"));
            }
            self.input(Input::Stored { id, reply });
        }
    }
}

fn now(started: std::time::Instant) -> Now {
    crate::clock::now_since(started)
}

/// The sessions as a table, one line each, for `jetmq sessions list`.
#[must_use]
pub fn format_sessions(sessions: &[SessionInfo], now: WallClock) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<32} {:<5} {:<8} {:<12} {:>8} {:>6} {:>6}  filters",
        "account", "client id", "mqtt", "state", "expires in", "offline", "queued", "sent"
    );
    for s in sessions {
        let state = match (s.online, s.persistent) {
            (true, _) => "online",
            (false, true) => "offline",
            (false, false) => "ending",
        };
        let offline_for = s
            .disconnected_at
            .map(|at| now.as_unix_millis().saturating_sub(at.as_unix_millis()) / 1000);
        let expires = match (s.persistent, s.expiry, offline_for) {
            (false, _, _) => "at close".to_string(),
            (true, None, _) => "never".to_string(),
            (true, Some(e), Some(off)) => format!("{}s", e.as_secs().saturating_sub(off)),
            (true, Some(e), None) => format!("{}s", e.as_secs()),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<32} {:<5} {:<8} {:<12} {:>8} {:>6} {:>6}  {}",
            s.key.account,
            s.key.client_id,
            match s.protocol {
                jetmq_core::codec::ProtocolVersion::V5 => "5.0",
                jetmq_core::codec::ProtocolVersion::V311 => "3.1.1",
                jetmq_core::codec::ProtocolVersion::V31 => "3.1",
            },
            state,
            expires,
            offline_for.map_or_else(|| "-".to_string(), |s| format!("{s}s")),
            s.queued,
            s.inflight,
            s.subscriptions.join(" ")
        );
    }
    let _ = writeln!(out, "{} session(s)", sessions.len());
    out
}
