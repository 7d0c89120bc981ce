//! What makes a broker a node of a fleet, apart from the broker's flows: the wire format the
//! nodes speak on NATS (`$JETMQ.` subjects, headers, connect notices) and the clock that
//! orders the connects of one client through different nodes.
//!
//! The broker's fleet flows (`broker/bridge.rs`, `fleet_record.rs`, `catch_up.rs`,
//! `shared_fleet.rs`) use these and decide the rest.

pub(crate) mod clock;
pub(crate) mod wire;
