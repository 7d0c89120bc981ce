//! What the jetmq nodes of a fleet say to each other on NATS: the `$JETMQ.` subjects (connect
//! notices, retained messages, shared-subscription taken notices and hand-overs) and the
//! headers a live copy carries between nodes, beside `Nmqtt-Pub`
//! ([`PUB_HEADER`](crate::js::records::PUB_HEADER)).

use bytestring::ByteString;

/// The subjects jetmq nodes keep to themselves.
pub(super) const RESERVED: &str = "$JETMQ.";
/// Where connect notices go, one subject per client identifier hash.
pub(super) const CONNECT_NOTICE_PREFIX: &str = "$JETMQ.conn.";
/// The subscription to every connect notice.
pub(super) const CONNECT_NOTICES: &str = "$JETMQ.conn.>";
/// Where retained messages go to every node, whether or not it has subscribers for them.
pub(super) const RETAINED_PREFIX: &str = "$JETMQ.retained.";
/// The subscription to every node's retained messages.
pub(super) const RETAINED_NOTICES: &str = "$JETMQ.retained.>";
/// The stream sequence of a stored message (jetmq nodes).
pub(super) const SEQ_HEADER: &str = "Jetmq-Seq";
/// Present on a message published with RETAIN (jetmq nodes).
pub(super) const RETAIN_HEADER: &str = "Jetmq-Retain";
/// Present on a connect notice that ends the session everywhere (an administrator's delete).
pub(super) const DISCARD_HEADER: &str = "Jetmq-Discard";
/// A connect notice's order: the connect's stamp and the node's number, in decimal.
pub(super) const CONNECT_HEADER: &str = "Jetmq-Connect";
/// Where a node tells the others it took a stored message for a shared subscription.
pub(super) const TAKEN_PREFIX: &str = "$JETMQ.taken.";
/// Where a node hands the unfinished messages of a member whose session ended, with no other
/// member of its own left, to a node that has one (the queue group's own subscription).
pub(super) const HANDOVER_PREFIX: &str = "$JETMQ.handover.";

/// How often a handed-over message was passed on by nodes that had no member any more.
pub(super) const HOPS_HEADER: &str = "Jetmq-Hops";

/// A `Jetmq-Connect` value: the connect's stamp and its node's number.
pub(super) fn connect_order(value: &str) -> Option<(u64, u64)> {
    let (stamp, node) = value.split_once(' ')?;
    Some((stamp.parse().ok()?, node.parse().ok()?))
}

/// The first value of header `name` (names compared without case, as NATS servers do).
pub(super) fn header<'a>(headers: &'a [(ByteString, ByteString)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}
