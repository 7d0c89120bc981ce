//! The jetmq server: [`jetmq_core::broker::Broker`] driven by tokio.
//!
//! Listeners serve MQTT over TCP, TLS (rustls), WebSocket and secure WebSocket
//! (tokio-tungstenite); TLS and WebSocket handshakes run in their own tasks, then every kind of
//! connection is the same byte stream to its connection task.
//!
//! One task owns the broker and is the only place protocol decisions are made
//! (`server::run`). A connection's task only moves bytes, reading and writing independently:
//! socket reads become `Input::Received` (bounded channel, so a flood of input waits on the
//! socket instead of growing memory), what the broker sends is written and reported as
//! `Input::Flushed`, which the broker uses to find slow consumers. Store requests run off the
//! broker task and come back as `Input::Stored`. The broker's single timer follows
//! `next_deadline()`.
//!
//! What every shell shares (configuration, authentication, store backends, the NATS link,
//! TLS settings, recording, administration, metrics) is the `jetmq-shell` crate, re-exported
//! here under the same module names.

pub use jetmq_shell::{
    admin, auth, auth_pool, backends, clock, config, effective, inputs, jetstream, metrics,
    nats_config, nats_link, notice, operator, record, scram, sockets, tls, ws_upgrade,
};

/// The store backends ([`jetmq_shell::store`]) and the choice of one for a configuration
/// ([`jetmq_shell::backends::open`]), under one name.
pub mod store {
    pub use jetmq_shell::backends::open;
    pub use jetmq_shell::store::*;
}

pub mod server;

mod connection;
mod ws;
