//! What the jetmq nodes of a fleet say to each other on NATS: the `$JETMQ.` subjects (connect
//! notices, retained messages, shared-subscription taken notices and hand-overs) and the
//! headers a live copy carries between nodes, beside `Nmqtt-Pub`
//! ([`PUB_HEADER`](crate::js::records::PUB_HEADER)).

use bytestring::ByteString;

use crate::js::{records, Header};

/// The subjects jetmq nodes keep to themselves.
pub(crate) const RESERVED: &str = "$JETMQ.";
/// Where connect notices go, one subject per client identifier hash.
pub(crate) const CONNECT_NOTICE_PREFIX: &str = "$JETMQ.conn.";
/// The subscription to every connect notice.
pub(crate) const CONNECT_NOTICES: &str = "$JETMQ.conn.>";
/// Where retained messages go to every node, whether or not it has subscribers for them.
pub(crate) const RETAINED_PREFIX: &str = "$JETMQ.retained.";
/// The subscription to every node's retained messages.
pub(crate) const RETAINED_NOTICES: &str = "$JETMQ.retained.>";
/// The stream sequence of a stored message (jetmq nodes).
pub(crate) const SEQ_HEADER: &str = "Jetmq-Seq";
/// Present on a message published with RETAIN (jetmq nodes).
pub(crate) const RETAIN_HEADER: &str = "Jetmq-Retain";
/// Present on a connect notice that ends the session everywhere (an administrator's delete).
pub(crate) const DISCARD_HEADER: &str = "Jetmq-Discard";
/// A connect notice's order: the connect's stamp and the node's number, in decimal.
pub(crate) const CONNECT_HEADER: &str = "Jetmq-Connect";
/// Where a node tells the others it took a stored message for a shared subscription.
pub(crate) const TAKEN_PREFIX: &str = "$JETMQ.taken.";
/// Where a node hands the unfinished messages of a member whose session ended, with no other
/// member of its own left, to a node that has one (the queue group's own subscription).
pub(crate) const HANDOVER_PREFIX: &str = "$JETMQ.handover.";

/// How often a handed-over message was passed on by nodes that had no member any more.
pub(crate) const HOPS_HEADER: &str = "Jetmq-Hops";

/// A `Jetmq-Connect` value: the connect's stamp and its node's number.
pub(crate) fn connect_order(value: &str) -> Option<(u64, u64)> {
    let (stamp, node) = value.split_once(' ')?;
    Some((stamp.parse().ok()?, node.parse().ok()?))
}

/// The first value of header `name` (names compared without case, as NATS servers do).
pub(crate) fn header<'a>(headers: &'a [(ByteString, ByteString)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// Whose session a connect notice is about: its account and client identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoticeKey {
    pub(crate) account: ByteString,
    pub(crate) client_id: ByteString,
}

/// A connect notice: another node connected a client (with its connect's order, the
/// connect's stamp and the node's number; none from a jetmq that did not send one), or an
/// administrator deleted its session everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectNotice {
    /// The client of `key` connected through another node.
    Connected {
        key: NoticeKey,
        order: Option<(u64, u64)>,
    },
    /// The session of `key` was deleted by an administrator.
    Discarded { key: NoticeKey },
}

impl ConnectNotice {
    /// The notice a message on a connect-notice subject carries; `None` when its payload is
    /// no `account\nclient id`.
    pub(crate) fn read(headers: &[(ByteString, ByteString)], payload: &[u8]) -> Option<Self> {
        let (account, client_id) = std::str::from_utf8(payload).ok()?.split_once('\n')?;
        let key = NoticeKey {
            account: account.into(),
            client_id: client_id.into(),
        };
        if header(headers, DISCARD_HEADER).is_some() {
            return Some(Self::Discarded { key });
        }
        let order = header(headers, CONNECT_HEADER).and_then(connect_order);
        Some(Self::Connected { key, order })
    }

    /// The subject, headers and payload of this notice on NATS. A connect's order is written
    /// when it has one.
    pub(crate) fn write(&self) -> (ByteString, Vec<Header>, bytes::Bytes) {
        let (key, header) = match self {
            Self::Connected { key, order } => (
                key,
                order.map(|(stamp, node)| Header {
                    name: CONNECT_HEADER,
                    value: format!("{stamp} {node}").into(),
                }),
            ),
            Self::Discarded { key } => (
                key,
                Some(Header {
                    name: DISCARD_HEADER,
                    value: ByteString::from_static("1"),
                }),
            ),
        };
        let subject = format!(
            "{CONNECT_NOTICE_PREFIX}{}",
            records::client_hash(&key.client_id)
        );
        let payload = format!("{}\n{}", key.account, key.client_id);
        (subject.into(), header.into_iter().collect(), payload.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(notice: &ConnectNotice) -> Option<ConnectNotice> {
        let (subject, headers, payload) = notice.write();
        assert!(subject.starts_with(CONNECT_NOTICE_PREFIX));
        let headers: Vec<(ByteString, ByteString)> = headers
            .into_iter()
            .map(|h| (ByteString::from(h.name), h.value))
            .collect();
        ConnectNotice::read(&headers, &payload)
    }

    #[test]
    fn connect_notices_read_back_as_written() {
        let key = NoticeKey {
            account: "$G".into(),
            client_id: "a b\u{e9}".into(),
        };
        let connected = ConnectNotice::Connected {
            key: key.clone(),
            order: Some((42, 7)),
        };
        assert_eq!(read_back(&connected), Some(connected));
        let discarded = ConnectNotice::Discarded { key };
        assert_eq!(read_back(&discarded), Some(discarded));
        assert_eq!(ConnectNotice::read(&[], b"no newline"), None);
        let older = [(ByteString::from("jetmq-connect"), ByteString::from("x"))];
        assert!(
            matches!(
                ConnectNotice::read(&older, b"$G\nc"),
                Some(ConnectNotice::Connected { order: None, .. })
            ),
            "an order that does not parse counts as none; header names ignore case"
        );
    }
}
