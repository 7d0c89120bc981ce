//! jetmq-core: the sans-IO heart of the jetmq MQTT broker.
//!
//! Everything here is pure: bytes and events go in, actions come out. There are no sockets,
//! threads, clocks or global randomness in this crate, so every run can be replayed.
//!
//! - [`codec`]: MQTT 3.1.1 and 5.0 packets, decoded incrementally and zero-copy, encoded into
//!   caller-owned buffers.
//! - [`topic`]: validated topic names and filters, wildcard matching, shared subscriptions and
//!   the MQTT topic ⇄ NATS subject mapping.
//! - [`broker`]: the broker state machine, `Broker::handle(now, input, &mut outbox)`, made of
//!   parts that own their data (connections, sessions, routing, retained messages, store
//!   requests, timers; see its module docs for a diagram).
//! - `fleet` (internal): what nodes sharing one JetStream need: connect stamps and the
//!   `$JETMQ.` subjects and headers they exchange.
//! - [`js`]: the store in JetStream terms (requests, replies, typed records) and its executors
//!   (JetStream over the NATS protocol, and in memory).
//! - [`nats`]: the NATS client protocol as a state machine.
//! - [`replay`]: the recording format: every input with its time, replayable byte for byte.
//! - [`time`], [`rng`]: time and randomness as data, passed in by the caller.
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
