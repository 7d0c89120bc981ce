//! The jetmq server: [`jetmq_core::broker::Broker`] driven by tokio (feature `server`, on by
//! default), and what every shell shares: configuration, authentication, store backends, TLS
//! settings, recording and administration (the crate without its default features, as
//! jetmq-mio uses it).
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

pub mod admin;
pub mod auth;
pub mod auth_pool;
pub mod clock;
pub mod config;
pub mod inputs;
pub mod jetstream;
pub mod metrics;
pub mod nats_config;
pub mod nats_link;
mod nats_tls;
pub mod notice;
pub mod record;
pub mod scram;
#[cfg(feature = "server")]
pub mod server;
pub mod sockets;
pub mod store;
pub mod tls;
pub mod ws_upgrade;

#[cfg(feature = "server")]
mod connection;
#[cfg(feature = "server")]
mod ws;
