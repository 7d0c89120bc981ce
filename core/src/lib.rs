//! jetmq-core: the sans-IO heart of the jetmq MQTT broker.
//!
//! Everything here is pure: bytes and events go in, actions come out. There are no sockets,
//! threads, clocks or global randomness in this crate, so every run can be replayed.
//!
//! - [`codec`]: MQTT 3.1.1 and 5.0 packets, decoded incrementally and zero-copy, encoded into
//!   caller-owned buffers.
//! - [`topic`]: validated topic names and filters, wildcard matching, shared subscriptions and
//!   the MQTT topic ⇄ NATS subject mapping.
#![forbid(unsafe_code)]

pub mod broker;
pub mod codec;
mod fleet;
pub mod js;
pub mod nats;
pub mod replay;
pub mod rng;
pub mod time;
pub mod topic;
