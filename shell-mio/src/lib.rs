//! jetmq-mio: the jetmq broker core on one `mio::Poll`, for applications that run their own
//! event loop, with no async runtime anywhere in its dependency tree.
//!
//! - [`MioServer`] registers jetmq's listeners and connections on the application's `Poll`
//!   with tokens from a range the application gives it ([`Tokens`]); the application passes
//!   it the events of those tokens, polls with [`MioServer::poll_timeout`] and calls
//!   [`MioServer::after_poll`] after every poll. Store work runs on the store's own thread and
//!   authentication on a helper thread; both complete through the `Poll`'s `mio::Waker`,
//!   which the application lends jetmq (mio allows one per `Poll`).
//! - [`spawn`] runs a server on a `Poll` of its own thread (the `jetmq-mio` binary does).
//!
//! Listeners: TCP, TLS (rustls driven directly on the non-blocking socket), WebSocket and
//! secure WebSocket (tungstenite, non-blocking), configured with the same file as `jetmq`.
//! Everything protocol-related happens in `jetmq-core`; this crate only moves bytes.

mod connection;
mod runner;
mod server;
mod transport;

pub use runner::{spawn, Running, Stopper};
pub use server::{MioServer, Tokens};
