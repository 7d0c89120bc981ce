//! jetmq-shell: what every jetmq shell shares, so that a shell is only its runtime.
//!
//! A shell (`jetmq` on tokio, `jetmq-mio` on one mio loop) owns sockets, its timer and the way
//! work finished on other threads wakes its loop. Everything else lives here: the loop around
//! the broker itself ([`driver::Driver`]: restore, handle and record each input, carry out
//! every action that is not a connection's), configuration and its command line,
//! authentication (passwords, SCRAM, the checking pool), the store backends (embedded, memory,
//! JetStream) and the NATS link, TLS and WebSocket settings, recording for `jetmq replay`,
//! administration, metrics and notice logging.
//!
//! Nothing here depends on an async runtime: no tokio, no mio (the test script checks). Work
//! that blocks (store writes, password hashing, the NATS connection) runs on threads of its own
//! and comes back to the shell's loop as broker inputs through an [`inputs::InputQueue`].

pub mod admin;
pub mod auth;
pub mod auth_pool;
pub mod backends;
pub mod clock;
pub mod command_line;
pub mod config;
pub mod config_error;
pub mod driver;
pub mod effective;
pub mod inputs;
pub mod jetstream;
pub mod metrics;
pub mod nats_config;
pub mod nats_link;
mod nats_tls;
pub mod notice;
pub mod operator;
pub mod record;
pub mod scram;
pub mod sockets;
pub mod store;
pub mod tls;
pub mod ws_upgrade;
