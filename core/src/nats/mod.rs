//! The NATS client protocol, sans-IO: the wire format ([`proto`]), message headers
//! ([`headers`]), `INFO`/`CONNECT` JSON ([`info`]) and a client state machine ([`client`])
//! that a shell drives with one more socket. JetStream and the subject bridge build on it.

pub mod client;
pub mod headers;
pub mod info;
pub mod proto;

pub use client::{Event, NatsClient, NonceSigner};
pub use headers::Headers;
pub use info::{ConnectOptions, ServerInfo};
pub use proto::{ClientOp, Decoder, Message, ProtocolError, ServerOp};
