//! The store vocabulary carried out on JetStream, sans-IO: [`JetStream`] turns each
//! [`StoreRequest`] into JetStream API requests on a [`NatsClient`] and the replies back into
//! [`StoreReply`]s. The shell moves the NATS socket's bytes and hands over the messages that
//! arrive on the executor's inbox.
//!
//! How the vocabulary maps:
//! - `Publish` is a JetStream publish (with `Nats-Expected-Stream`), `Purge` a filtered
//!   stream purge, `Delete` a message delete, `GetLast` a `last_by_subj` get, `List` a chain of
//!   `next_by_subj` gets.
//! - A consumer is a durable pull consumer on `$MQTT_msgs` (deliver new, explicit acks). Its
//!   filters are made disjoint first (JetStream refuses overlapping ones); with no filter it is
//!   deleted, since a JetStream consumer without filters wants everything.
//! - `Pending` hands out what this executor was handed and has not acknowledged, then pulls
//!   more (`CONSUMER.MSG.NEXT`, no wait). `Ack` acknowledges through the delivery's
//!   `$JS.ACK.` subject (without waiting for a confirmation, as the NATS server's MQTT does);
//!   a message not handed out yet is pulled first, since JetStream acknowledges deliveries,
//!   not sequences. `Release` gives what the executor holds back with `-NAK`, for another
//!   node to pull at once.
//!
//! A new executor (a restarted broker) is not handed again what an earlier one was handed
//! and did not acknowledge until the consumer's ack wait has passed: that is JetStream's
//! redelivery, where the embedded store hands everything unacknowledged out at once.

pub mod api;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use bytestring::ByteString;

use self::api::{
    AckInfo, ApiError, ApiPrefix, ConsumerConfig, CreateConsumer, MsgDelete, MsgGet, NextRequest,
    Purge, Reply, StreamConfig,
};
use super::subjects::validate;
use super::{StoreError, StoreReply, StoreRequest, StoredMessage, Stream};
use crate::js::RequestId;
use crate::nats::{Headers, Message, NatsClient};
use crate::time::Timestamp;

/// Every stream jetmq keeps state in.
const STREAMS: [Stream; 5] = [
    Stream::Sessions,
    Stream::Messages,
    Stream::Qos2In,
    Stream::PubRel,
    Stream::Retained,
];

/// The most messages one pull asks for when looking for a message to acknowledge.
const ACK_PULL_BATCH: usize = 256;

/// How long a second pull waits when the first found nothing: JetStream acknowledges a
/// publish a moment before its consumers see the message, so an immediate pull right after
/// can miss it.
const PATIENT_PULL: Duration = Duration::from_millis(20);

/// How JetStream is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Where the API listens (the JetStream domain).
    pub api: ApiPrefix,
    /// The subject prefix replies come back on; unique per executor (`_INBOX.<random>`).
    pub inbox: String,
    /// How many servers keep a copy of each stream jetmq creates.
    pub replicas: usize,
    /// How long a handed-out message may stay unacknowledged before JetStream hands it out
    /// again.
    pub ack_wait: Duration,
    /// The most messages a consumer has handed out and not had acknowledged.
    pub max_ack_pending: usize,
    /// How long an API request may go unanswered (checked by [`JetStream::tick`]).
    pub api_timeout: Duration,
}

impl JetStreamConfig {
    /// The defaults (local JetStream, one replica, ack wait 30 s, max ack pending 1024, as the
    /// NATS server's MQTT), replies on `inbox`.
    #[must_use]
    pub fn new(inbox: impl Into<String>) -> Self {
        Self {
            api: ApiPrefix::new(None),
            inbox: inbox.into(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            api_timeout: Duration::from_secs(5),
        }
    }
}

/// A message a consumer handed to this executor, not yet acknowledged.
#[derive(Debug, Clone)]
struct Handed {
    message: StoredMessage,
    /// Its `$JS.ACK.` subject.
    ack: ByteString,
}

/// What a successful reply becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A publish acknowledgement: `Stored`.
    Stored,
    /// Success: `Done` (also when the thing was not there).
    Done,
    /// A message delete: `Done`, also for a sequence past the end (JetStream's "stream store
    /// EOF").
    Deleted,
    /// A consumer delete: `Done`, also when there was no such consumer.
    ConsumerDeleted,
    /// A message get: `Message`.
    Message(Stream),
}

/// What to do once a pull has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterPull {
    /// Answer a `Pending`.
    Pending { limit: usize },
    /// Acknowledge this sequence, pulling again if it did not come yet.
    Ack { seq: u64 },
}

/// A request in flight, by the token at the end of its reply subject.
#[derive(Debug)]
enum Op {
    /// Looking a stream up (`created`: after creating it), in set-up round `round`.
    EnsureStream {
        stream: Stream,
        created: bool,
        round: u64,
    },
    /// One API request answering one store request.
    Request { id: RequestId, expect: Expect },
    /// A `List`, one message get at a time.
    List(Listing),
    /// A pull from a consumer.
    Pull(Pull),
    /// A pull answered "no responders": is the consumer gone, or only its leader away?
    PullCheck(Pull),
}

impl Op {
    /// The store request it answers (none for setting up).
    fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::EnsureStream { .. } => None,
            Self::Request { id, .. }
            | Self::List(Listing { id, .. })
            | Self::Pull(Pull { id, .. })
            | Self::PullCheck(Pull { id, .. }) => Some(*id),
        }
    }
}

/// A `List` in progress.
#[derive(Debug)]
struct Listing {
    id: RequestId,
    stream: Stream,
    /// The filter subject (`<prefix>>`).
    filter: String,
    /// The messages so far.
    got: Vec<StoredMessage>,
}

/// A pull from a consumer in progress.
#[derive(Debug)]
struct Pull {
    id: RequestId,
    consumer: ByteString,
    /// The batch size asked for.
    asked: usize,
    /// The messages that came so far.
    received: usize,
    after: AfterPull,
    /// Whether this is the second, waiting pull.
    patient: bool,
    /// Whether the consumer's existence is being checked before the first pull (see
    /// `known_consumers`).
    first: bool,
}

/// Where setting the streams up stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setup {
    /// Streams are being looked up or created; this many are left.
    Ensuring(usize),
    /// Every stream exists.
    Ready,
    /// A stream could not be set up (JetStream off, or a cluster without a leader yet): the
    /// requests waiting failed with this, and the next one starts setting up again.
    Failed(String),
}

/// The JetStream executor of the store vocabulary.
#[derive(Debug)]
pub struct JetStream {
    config: JetStreamConfig,
    setup: Setup,
    /// Requests made before the streams were ready.
    waiting: VecDeque<(RequestId, StoreRequest)>,
    /// Requests in flight and when they were sent.
    ops: BTreeMap<u64, (Op, Timestamp)>,
    /// The time of the last [`tick`](Self::tick).
    now: Timestamp,
    next_token: u64,
    /// Per consumer: what it handed out here and was not acknowledged, by sequence.
    handed: BTreeMap<ByteString, BTreeMap<u64, Handed>>,
    /// Per consumer: the token of its pull in flight, and the `Pending`s and `Ack`s that wait
    /// for it to end. Pulled messages arrive under their own subject, so one pull at a time
    /// per consumer tells whose they are.
    pulling: BTreeMap<ByteString, (u64, VecDeque<(RequestId, StoreRequest)>)>,
    /// Consumers seen to exist (one answered a pull, or its info was read). A pull from any
    /// other is preceded by a look at its info: a missing consumer's pull is answered only by
    /// NATS's "no responders", which never comes while something else subscribes to the
    /// subject (a `>` subscriber anywhere in the account), so it would wait until timed out.
    known_consumers: BTreeSet<ByteString>,
    /// The inbox subscription's number.
    inbox_sid: Option<u64>,
    /// The set-up round: replies of an earlier one are ignored.
    round: u64,
    finished: Vec<(RequestId, Result<StoreReply, StoreError>)>,
}

impl JetStream {
    /// An executor; [`start`](Self::start) sets it going.
    #[must_use]
    pub fn new(config: JetStreamConfig) -> Self {
        Self {
            config,
            setup: Setup::Ensuring(0),
            waiting: VecDeque::new(),
            ops: BTreeMap::new(),
            now: Timestamp::from_nanos(0),
            next_token: 0,
            handed: BTreeMap::new(),
            pulling: BTreeMap::new(),
            known_consumers: BTreeSet::new(),
            inbox_sid: None,
            round: 0,
            finished: Vec::new(),
        }
    }

    /// Subscribes to the inbox and makes sure every stream exists (creating what is missing);
    /// requests wait until that is done. Call once, and again after
    /// [`connection_lost`](Self::connection_lost) when a new connection is up.
    pub fn start(&mut self, nats: &mut NatsClient) {
        if self.inbox_sid.is_none() {
            self.inbox_sid = Some(nats.subscribe(&format!("{}.*", self.config.inbox), None));
        }
        if self.setup == Setup::Ready {
            return;
        }
        self.setup = Setup::Ensuring(STREAMS.len());
        self.round += 1;
        let round = self.round;
        for stream in STREAMS {
            let subject = self
                .config
                .api
                .subject(&format!("STREAM.INFO.{}", stream.name()));
            self.send(
                nats,
                &subject,
                None,
                b"",
                Op::EnsureStream {
                    stream,
                    created: false,
                    round,
                },
            );
        }
    }

    /// The NATS connection is gone: every request in flight fails (the broker treats a failed
    /// write as not done).
    pub fn connection_lost(&mut self) {
        for (op, _) in std::mem::take(&mut self.ops).into_values() {
            if let Some(id) = op.request_id() {
                self.finished.push((
                    id,
                    Err(StoreError::Unavailable(
                        "the NATS connection was lost".into(),
                    )),
                ));
            }
        }
        for (_, waiting) in std::mem::take(&mut self.pulling).into_values() {
            for (id, _) in waiting {
                self.finished.push((
                    id,
                    Err(StoreError::Unavailable(
                        "the NATS connection was lost".into(),
                    )),
                ));
            }
        }
        if self.setup != Setup::Ready {
            self.setup = Setup::Ensuring(0);
        }
    }

    /// Starts a request; its result comes out of [`take_finished`](Self::take_finished).
    pub fn submit(&mut self, id: RequestId, request: StoreRequest, nats: &mut NatsClient) {
        if let Err(why) = validate(&request) {
            self.finished.push((id, Err(StoreError::invalid(why))));
            return;
        }
        match &self.setup {
            Setup::Ready if nats.is_connected() => self.execute(id, request, nats),
            Setup::Ready => self.finished.push((
                id,
                Err(StoreError::Unavailable(
                    "the NATS connection is down; it is being re-established".into(),
                )),
            )),
            Setup::Ensuring(_) => self.waiting.push_back((id, request)),
            Setup::Failed(_) => {
                self.waiting.push_back((id, request));
                self.start(nats);
            }
        }
    }

    /// Handles a message from NATS; false when it is not for this executor.
    pub fn on_message(&mut self, msg: &Message, nats: &mut NatsClient) -> bool {
        if Some(msg.sid) != self.inbox_sid {
            return false;
        }
        // A pulled message keeps its own subject; its ack subject names the consumer.
        let pulled = msg
            .reply
            .as_deref()
            .and_then(AckInfo::parse)
            .and_then(|info| self.pulling.get(info.consumer))
            .map(|(token, _)| *token);
        let token = pulled.or_else(|| {
            msg.subject
                .strip_prefix(self.config.inbox.as_str())
                .and_then(|t| t.strip_prefix('.'))
                .and_then(|t| t.parse::<u64>().ok())
        });
        let Some(token) = token else {
            return true;
        };
        let Some((op, _)) = self.ops.remove(&token) else {
            return true;
        };
        match op {
            Op::EnsureStream {
                stream,
                created,
                round,
            } => {
                if round == self.round {
                    self.on_ensured(stream, created, msg, nats);
                }
            }
            Op::Request { id, expect } => {
                let result = reply_result(msg, expect);
                self.finished.push((id, result));
            }
            Op::List(listing) => self.on_listed(listing, msg, nats),
            Op::Pull(pull) => self.on_pulled(token, pull, msg, nats),
            Op::PullCheck(mut pull) => {
                let reply = parse_reply(msg);
                let gone = matches!(
                    reply,
                    Ok(Reply { error: Some(ref e), .. }) if e.is_missing_consumer()
                );
                let exists = matches!(reply, Ok(Reply { error: None, .. }));
                if gone {
                    self.end_pull(pull, false, nats);
                } else if exists && pull.first {
                    pull.first = false;
                    self.known_consumers.insert(pull.consumer.clone());
                    self.send_pull(nats, pull);
                } else {
                    self.finished.push((
                        pull.id,
                        Err(StoreError::Unavailable(
                            "JetStream could not reach the consumer's leader".into(),
                        )),
                    ));
                    self.end_pull_waiting(&pull.consumer, nats);
                }
            }
        }
        true
    }

    /// The time passes: requests unanswered for the API timeout fail with
    /// [`StoreError::Timeout`]; a set-up that went unanswered (a cluster still electing its
    /// leader) fails the requests waiting for it, and the next request starts it again.
    pub fn tick(&mut self, now: Timestamp, nats: &mut NatsClient) {
        self.now = now;
        let expired: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, (_, sent))| {
                now.saturating_duration_since(*sent) >= self.config.api_timeout
            })
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            let Some((op, _)) = self.ops.remove(&token) else {
                continue;
            };
            match op {
                Op::EnsureStream { round, .. } => {
                    if round == self.round && self.setup != Setup::Ready {
                        self.fail_setup(format!(
                            "no answer from JetStream within {:?}: is it enabled, and does a \
                             cluster have a leader?",
                            self.config.api_timeout
                        ));
                    }
                }
                Op::Request { id, .. } | Op::List(Listing { id, .. }) => {
                    self.finished.push((id, Err(StoreError::Timeout)));
                }
                Op::Pull(pull) | Op::PullCheck(pull) => {
                    // A pull that was never answered may be one of a consumer gone meanwhile.
                    self.known_consumers.remove(&pull.consumer);
                    self.finished.push((pull.id, Err(StoreError::Timeout)));
                    self.end_pull_waiting(&pull.consumer, nats);
                }
            }
        }
    }

    /// Setting the streams up failed: the requests waiting for it fail with `why`.
    fn fail_setup(&mut self, why: String) {
        for (id, _) in std::mem::take(&mut self.waiting) {
            self.finished
                .push((id, Err(StoreError::Unavailable(why.clone().into()))));
        }
        self.setup = Setup::Failed(why);
    }

    /// The results of the requests that have finished since the last call.
    pub fn take_finished(&mut self) -> Vec<(RequestId, Result<StoreReply, StoreError>)> {
        std::mem::take(&mut self.finished)
    }

    /// Whether every stream is set up.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.setup == Setup::Ready
    }

    fn send(
        &mut self,
        nats: &mut NatsClient,
        subject: &str,
        headers: Option<&Headers>,
        body: &[u8],
        op: Op,
    ) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        let reply = format!("{}.{token}", self.config.inbox);
        if nats.publish(subject, Some(&reply), headers, body).is_err() {
            self.fail(
                op,
                StoreError::Unavailable("the NATS send buffer is full".into()),
            );
        } else {
            self.ops.insert(token, (op, self.now));
        }
        token
    }

    fn fail(&mut self, op: Op, err: StoreError) {
        if let Some(id) = op.request_id() {
            self.finished.push((id, Err(err)));
        }
    }

    fn api_request(
        &mut self,
        nats: &mut NatsClient,
        rest: &str,
        body: &impl serde::Serialize,
        id: RequestId,
        expect: Expect,
    ) {
        let subject = self.config.api.subject(rest);
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.send(nats, &subject, None, &body, Op::Request { id, expect });
    }

    /// Deletes a consumer (the API wants an empty body), forgetting what it handed out.
    fn delete_consumer(&mut self, nats: &mut NatsClient, id: RequestId, name: &ByteString) {
        self.handed.remove(name);
        self.known_consumers.remove(name);
        let subject = self.config.api.subject(&format!(
            "CONSUMER.DELETE.{}.{name}",
            Stream::Messages.name()
        ));
        let op = Op::Request {
            id,
            expect: Expect::ConsumerDeleted,
        };
        self.send(nats, &subject, None, b"", op);
    }

    fn execute(&mut self, id: RequestId, request: StoreRequest, nats: &mut NatsClient) {
        match request {
            StoreRequest::Publish {
                stream,
                subject,
                headers,
                payload,
            } => self.publish(nats, id, stream, &subject, headers, &payload),
            StoreRequest::Purge { stream, subject } => {
                if stream == Stream::Messages {
                    for handed in self.handed.values_mut() {
                        handed.retain(|_, h| h.message.subject != subject);
                    }
                }
                let rest = format!("STREAM.PURGE.{}", stream.name());
                self.api_request(nats, &rest, &Purge { filter: &subject }, id, Expect::Done);
            }
            StoreRequest::Delete { stream, seq } => {
                if stream == Stream::Messages {
                    for handed in self.handed.values_mut() {
                        handed.remove(&seq);
                    }
                }
                let rest = format!("STREAM.MSG.DELETE.{}", stream.name());
                let body = MsgDelete {
                    seq,
                    no_erase: true,
                };
                self.api_request(nats, &rest, &body, id, Expect::Deleted);
            }
            StoreRequest::GetLast { stream, subject } => {
                let rest = format!("STREAM.MSG.GET.{}", stream.name());
                let body = MsgGet {
                    last_by_subj: Some(&subject),
                    ..MsgGet::default()
                };
                self.api_request(nats, &rest, &body, id, Expect::Message(stream));
            }
            StoreRequest::Get { stream, seq } => {
                let rest = format!("STREAM.MSG.GET.{}", stream.name());
                let body = MsgGet {
                    seq: Some(seq),
                    ..MsgGet::default()
                };
                self.api_request(nats, &rest, &body, id, Expect::Message(stream));
            }
            StoreRequest::List { stream, prefix } => {
                let listing = Listing {
                    id,
                    stream,
                    filter: format!("{prefix}>"),
                    got: Vec::new(),
                };
                self.list_from(nats, listing, 1);
            }
            StoreRequest::UpsertConsumer { name, filters } => {
                self.upsert_consumer(nats, id, &name, &filters);
            }
            StoreRequest::DeleteConsumer { name } => self.delete_consumer(nats, id, &name),
            StoreRequest::Ack { consumer, seq } => {
                if let Some((_, waiting)) = self.pulling.get_mut(&consumer) {
                    waiting.push_back((id, StoreRequest::Ack { consumer, seq }));
                } else {
                    self.ack(nats, id, consumer, seq);
                }
            }
            StoreRequest::Release { consumer } => {
                if let Some((_, waiting)) = self.pulling.get_mut(&consumer) {
                    waiting.push_back((id, StoreRequest::Release { consumer }));
                } else {
                    self.release(nats, id, &consumer);
                }
            }
            StoreRequest::Pending { consumer, limit } => {
                self.pending(nats, id, consumer, limit);
            }
        }
    }

    /// Publishes a message to its stream (JetStream checks the stream it lands in).
    fn publish(
        &mut self,
        nats: &mut NatsClient,
        id: RequestId,
        stream: Stream,
        subject: &str,
        headers: Vec<super::Header>,
        payload: &[u8],
    ) {
        let mut entries: Vec<(ByteString, ByteString)> =
            vec![("Nats-Expected-Stream".into(), stream.name().into())];
        entries.extend(headers.into_iter().map(|h| (h.name.into(), h.value)));
        let headers = Headers::new(entries);
        let op = Op::Request {
            id,
            expect: Expect::Stored,
        };
        self.send(nats, subject, Some(&headers), payload, op);
    }

    /// Creates or updates the durable consumer `name` with `filters` (made disjoint, as
    /// JetStream requires); with none left the consumer is deleted.
    fn upsert_consumer(
        &mut self,
        nats: &mut NatsClient,
        id: RequestId,
        name: &ByteString,
        filters: &[ByteString],
    ) {
        let filters = disjoint_filters(filters.iter().map(ToString::to_string).collect());
        if filters.is_empty() {
            self.delete_consumer(nats, id, name);
            return;
        }
        let rest = format!("CONSUMER.CREATE.{}.{name}", Stream::Messages.name());
        let body = CreateConsumer {
            stream_name: Stream::Messages.name(),
            config: ConsumerConfig::new(
                name,
                filters,
                self.config.ack_wait,
                self.config.max_ack_pending,
            ),
        };
        self.api_request(nats, &rest, &body, id, Expect::Done);
    }

    /// Hands out up to `limit` of `consumer`'s messages: what it holds, pulled up to the
    /// limit (after a pull of the consumer already out).
    fn pending(
        &mut self,
        nats: &mut NatsClient,
        id: RequestId,
        consumer: ByteString,
        limit: usize,
    ) {
        if let Some((_, waiting)) = self.pulling.get_mut(&consumer) {
            waiting.push_back((id, StoreRequest::Pending { consumer, limit }));
            return;
        }
        let held = self.handed.get(&consumer).map_or(0, BTreeMap::len);
        if held >= limit {
            self.answer_pending(id, &consumer, limit);
        } else {
            let want = (limit - held).min(self.config.max_ack_pending.saturating_sub(held));
            self.pull(nats, id, consumer, want, AfterPull::Pending { limit });
        }
    }

    /// Asks for the listing's next message at or after `seq`.
    fn list_from(&mut self, nats: &mut NatsClient, listing: Listing, seq: u64) {
        let subject = self
            .config
            .api
            .subject(&format!("STREAM.MSG.GET.{}", listing.stream.name()));
        let body = serde_json::to_vec(&MsgGet {
            next_by_subj: Some(&listing.filter),
            seq: Some(seq),
            ..MsgGet::default()
        })
        .unwrap_or_default();
        self.send(nats, &subject, None, &body, Op::List(listing));
    }

    fn on_listed(&mut self, mut listing: Listing, msg: &Message, nats: &mut NatsClient) {
        let id = listing.id;
        match parse_reply(msg) {
            Ok(Reply {
                message: Some(raw), ..
            }) => {
                let next = raw.seq.saturating_add(1);
                let Some(m) = stored_from_raw(listing.stream, raw) else {
                    self.finished.push((
                        id,
                        Err(StoreError::invalid("JetStream sent an unreadable message")),
                    ));
                    return;
                };
                listing.got.push(m);
                self.list_from(nats, listing, next);
            }
            Ok(Reply { error: Some(e), .. }) if e.is_missing_message() => {
                self.finished
                    .push((id, Ok(StoreReply::Messages(listing.got))));
            }
            Ok(reply) => self.finished.push((id, Err(api_failure(reply.error)))),
            Err(e) => self.finished.push((id, Err(e))),
        }
    }

    fn ack(&mut self, nats: &mut NatsClient, id: RequestId, consumer: ByteString, seq: u64) {
        let handed = self.handed.get_mut(&consumer).and_then(|h| h.remove(&seq));
        if let Some(h) = handed {
            // Like the NATS server's MQTT, without waiting for a confirmation: JetStream takes
            // a connection's messages in order, and an ack that is lost only means the
            // message is handed out again (a duplicate, never a loss).
            let result = nats
                .publish(&h.ack, None, None, b"+ACK")
                .map(|()| StoreReply::Done)
                .map_err(|_| StoreError::Unavailable("the NATS send buffer is full".into()));
            self.finished.push((id, result));
            return;
        }
        let held = self.handed.get(&consumer).map_or(0, BTreeMap::len);
        let want = ACK_PULL_BATCH.min(self.config.max_ack_pending.saturating_sub(held));
        if want == 0 {
            // Nothing more can be handed out until some are acknowledged: the message stays
            // pending, and comes back after a restart (a duplicate, never a loss).
            self.finished.push((id, Ok(StoreReply::Done)));
            return;
        }
        self.pull(nats, id, consumer, want, AfterPull::Ack { seq });
    }

    /// Gives back (`-NAK`: JetStream hands them out again at once) what `consumer` handed out
    /// here and was not acknowledged. Answered once the NATS server has read the NAKs (the
    /// reply to a request sent after them), so a broker stopping after the answer has not
    /// dropped them with its connection.
    fn release(&mut self, nats: &mut NatsClient, id: RequestId, consumer: &ByteString) {
        let handed = self.handed.remove(consumer).unwrap_or_default();
        if handed.is_empty() {
            self.finished.push((id, Ok(StoreReply::Done)));
            return;
        }
        for h in handed.values() {
            if nats.publish(&h.ack, None, None, b"-NAK").is_err() {
                // What was not given back is handed out again after the ack wait.
                self.finished.push((
                    id,
                    Err(StoreError::Unavailable(
                        "the NATS send buffer is full".into(),
                    )),
                ));
                return;
            }
        }
        let subject = self.config.api.subject("INFO");
        let op = Op::Request {
            id,
            expect: Expect::Done,
        };
        self.send(nats, &subject, None, b"", op);
    }

    fn pull(
        &mut self,
        nats: &mut NatsClient,
        id: RequestId,
        consumer: ByteString,
        want: usize,
        after: AfterPull,
    ) {
        if want == 0 {
            self.after_pull(nats, id, consumer, after, false);
            return;
        }
        let first = !self.known_consumers.contains(&consumer);
        let pull = Pull {
            id,
            consumer,
            asked: want,
            received: 0,
            after,
            patient: false,
            first,
        };
        if first {
            self.check_consumer(nats, pull);
        } else {
            self.send_pull(nats, pull);
        }
    }

    /// Reads the pull's consumer's info (answered by JetStream itself, present or not) before
    /// the pull, or after a pull that "no responders" answered.
    fn check_consumer(&mut self, nats: &mut NatsClient, pull: Pull) {
        let subject = self.config.api.subject(&format!(
            "CONSUMER.INFO.{}.{}",
            Stream::Messages.name(),
            pull.consumer
        ));
        let consumer = pull.consumer.clone();
        let token = self.send(nats, &subject, None, b"", Op::PullCheck(pull));
        self.track_pull(nats, consumer, token);
    }

    /// Makes request `token` the consumer's pull in flight (what waits for the pull keeps
    /// waiting), or, when it could not be sent, carries out what waited.
    fn track_pull(&mut self, nats: &mut NatsClient, consumer: ByteString, token: u64) {
        if self.ops.contains_key(&token) {
            let waiting = self
                .pulling
                .remove(&consumer)
                .map(|(_, w)| w)
                .unwrap_or_default();
            self.pulling.insert(consumer, (token, waiting));
        } else {
            self.end_pull_waiting(&consumer, nats);
        }
    }

    /// Asks the consumer for the pull's batch: at once, or (patient) waiting a moment.
    fn send_pull(&mut self, nats: &mut NatsClient, pull: Pull) {
        let subject = self.config.api.subject(&format!(
            "CONSUMER.MSG.NEXT.{}.{}",
            Stream::Messages.name(),
            pull.consumer
        ));
        let body = serde_json::to_vec(&NextRequest {
            batch: pull.asked,
            no_wait: !pull.patient,
            expires: pull
                .patient
                .then(|| u64::try_from(PATIENT_PULL.as_nanos()).unwrap_or(u64::MAX)),
        })
        .unwrap_or_default();
        let consumer = pull.consumer.clone();
        let token = self.send(nats, &subject, None, &body, Op::Pull(pull));
        self.track_pull(nats, consumer, token);
    }

    fn on_pulled(&mut self, token: u64, mut pull: Pull, msg: &Message, nats: &mut NatsClient) {
        let status = msg.headers.as_ref().and_then(|h| h.status);
        let ack_seq = msg
            .reply
            .as_deref()
            .and_then(AckInfo::parse)
            .map(|info| info.stream_seq);
        if let (None, Some(seq)) = (status, ack_seq) {
            pull.received += 1;
            let message = StoredMessage {
                stream: Stream::Messages,
                subject: msg.subject.clone(),
                seq,
                headers: stored_headers(msg.headers.as_ref()),
                payload: msg.payload.clone(),
                pending_for: vec![pull.consumer.clone()],
            };
            let ack = msg.reply.clone().unwrap_or_default();
            self.handed
                .entry(pull.consumer.clone())
                .or_default()
                .insert(seq, Handed { message, ack });
            if pull.received < pull.asked {
                self.ops.insert(token, (Op::Pull(pull), self.now));
                return;
            }
        }
        if status == Some(503) && pull.received == 0 {
            // No responders: the consumer is gone, or its leader is being elected.
            self.known_consumers.remove(&pull.consumer);
            self.check_consumer(nats, pull);
            return;
        }
        self.known_consumers.insert(pull.consumer.clone());
        if status == Some(404) && pull.received == 0 && !pull.patient {
            pull.patient = true;
            self.send_pull(nats, pull);
            return;
        }
        // The batch is complete, or a status (404 no messages, 408 waited enough, 409) ended
        // it.
        let full = pull.received >= pull.asked;
        self.end_pull(pull, full, nats);
    }

    /// A pull is over: what waited for it goes on.
    fn end_pull(&mut self, pull: Pull, full: bool, nats: &mut NatsClient) {
        let waiting = self
            .pulling
            .remove(&pull.consumer)
            .map(|(_, w)| w)
            .unwrap_or_default();
        self.after_pull(nats, pull.id, pull.consumer, pull.after, full);
        for (id, request) in waiting {
            self.execute(id, request, nats);
        }
    }

    /// A consumer's pull failed: the requests that waited for it are carried out now.
    fn end_pull_waiting(&mut self, consumer: &ByteString, nats: &mut NatsClient) {
        let waiting = self
            .pulling
            .remove(consumer)
            .map(|(_, w)| w)
            .unwrap_or_default();
        for (id, request) in waiting {
            self.execute(id, request, nats);
        }
    }

    fn after_pull(
        &mut self,
        nats: &mut NatsClient,
        id: RequestId,
        consumer: ByteString,
        after: AfterPull,
        full: bool,
    ) {
        match after {
            AfterPull::Pending { limit } => self.answer_pending(id, &consumer, limit),
            AfterPull::Ack { seq } => {
                let handed = self.handed.get(&consumer);
                let found = handed.is_some_and(|h| h.contains_key(&seq));
                let passed = handed
                    .and_then(|h| h.keys().next_back())
                    .is_some_and(|last| *last > seq);
                if found || (full && !passed) {
                    self.ack(nats, id, consumer, seq);
                } else {
                    // Not pending for this consumer (acknowledged, deleted, never matched).
                    self.finished.push((id, Ok(StoreReply::Done)));
                }
            }
        }
    }

    fn answer_pending(&mut self, id: RequestId, consumer: &ByteString, limit: usize) {
        let messages = self.handed.get(consumer).map_or_else(Vec::new, |h| {
            h.values().take(limit).map(|h| h.message.clone()).collect()
        });
        self.finished.push((id, Ok(StoreReply::Messages(messages))));
    }

    fn on_ensured(&mut self, stream: Stream, created: bool, msg: &Message, nats: &mut NatsClient) {
        let outcome = match parse_reply(msg) {
            Ok(Reply { error: None, .. }) => Ok(()),
            Ok(Reply { error: Some(e), .. })
                if created && e.err_code == ApiError::STREAM_NAME_IN_USE =>
            {
                Ok(())
            }
            Ok(Reply { error: Some(e), .. })
                if !created && e.err_code == ApiError::STREAM_NOT_FOUND =>
            {
                let subject = self
                    .config
                    .api
                    .subject(&format!("STREAM.CREATE.{}", stream.name()));
                let body =
                    serde_json::to_vec(&StreamConfig::for_stream(stream, self.config.replicas))
                        .unwrap_or_default();
                self.send(
                    nats,
                    &subject,
                    None,
                    &body,
                    Op::EnsureStream {
                        stream,
                        created: true,
                        round: self.round,
                    },
                );
                return;
            }
            Ok(Reply { error: Some(e), .. }) => Err(format!(
                "JetStream refused stream {}: {} (code {}, error {})",
                stream.name(),
                e.description,
                e.code,
                e.err_code
            )),
            Err(e) => Err(format!(
                "stream {}: {e}; is JetStream enabled on the NATS server (nats-server -js)?",
                stream.name()
            )),
        };
        match (outcome, &self.setup) {
            (Err(why), _) => self.fail_setup(why),
            (Ok(()), Setup::Ensuring(left)) => {
                let left = left.saturating_sub(1);
                self.setup = Setup::Ensuring(left);
                if left == 0 {
                    self.setup = Setup::Ready;
                    for (id, request) in std::mem::take(&mut self.waiting) {
                        self.submit(id, request, nats);
                    }
                }
            }
            (Ok(()), _) => {}
        }
    }
}

/// A reply's JSON, or what the failure means when there is none.
fn parse_reply(msg: &Message) -> Result<Reply, StoreError> {
    if let Some(status) = msg.headers.as_ref().and_then(|h| h.status) {
        return Err(if status == 503 {
            StoreError::Unavailable(
                "JetStream did not answer (no responders): is it enabled on the NATS server?"
                    .into(),
            )
        } else {
            StoreError::Unavailable(format!("JetStream answered with status {status}").into())
        });
    }
    serde_json::from_slice(&msg.payload)
        .map_err(|e| StoreError::invalid(format!("JetStream sent a reply jetmq cannot read: {e}")))
}

/// A failed API reply as a store error: unavailable for 5xx, a lost conditional write for a
/// wrong last sequence, refused as invalid otherwise.
fn api_failure(error: Option<ApiError>) -> StoreError {
    match error {
        Some(e) if e.code >= 500 => StoreError::Unavailable(
            format!("JetStream: {} (error {})", e.description, e.err_code).into(),
        ),
        Some(e) if e.is_wrong_last_sequence() => StoreError::wrong_last_sequence(),
        Some(e) => StoreError::invalid(format!(
            "JetStream: {} (error {})",
            e.description, e.err_code
        )),
        None => StoreError::invalid("JetStream sent an unexpected reply"),
    }
}

/// The store reply a one-request operation's answer stands for.
fn reply_result(msg: &Message, expect: Expect) -> Result<StoreReply, StoreError> {
    let reply = parse_reply(msg)?;
    match (expect, reply) {
        (
            Expect::Stored,
            Reply {
                error: None,
                seq: Some(seq),
                ..
            },
        ) => Ok(StoreReply::Stored { seq }),
        (Expect::Done | Expect::Deleted | Expect::ConsumerDeleted, Reply { error: None, .. }) => {
            Ok(StoreReply::Done)
        }
        (Expect::ConsumerDeleted, Reply { error: Some(e), .. }) if e.is_missing_consumer() => {
            Ok(StoreReply::Done)
        }
        (Expect::Deleted, Reply { error: Some(e), .. })
            if e.is_missing_message() || e.description.contains("EOF") =>
        {
            Ok(StoreReply::Done)
        }
        (
            Expect::Message(stream),
            Reply {
                error: None,
                message: Some(raw),
                ..
            },
        ) => stored_from_raw(stream, raw)
            .map(|m| StoreReply::Message(Some(m)))
            .ok_or_else(|| StoreError::invalid("JetStream sent an unreadable message")),
        (Expect::Message(_), Reply { error: Some(e), .. }) if e.is_missing_message() => {
            Ok(StoreReply::Message(None))
        }
        (_, reply) => Err(api_failure(reply.error)),
    }
}

/// A message from `STREAM.MSG.GET` as the store vocabulary has it.
fn stored_from_raw(stream: Stream, raw: api::RawMessage) -> Option<StoredMessage> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = match raw.data {
        Some(d) => b64.decode(d).ok()?,
        None => Vec::new(),
    };
    let headers = match raw.hdrs {
        Some(h) => Some(Headers::decode(&b64.decode(h).ok()?)?),
        None => None,
    };
    Some(StoredMessage {
        stream,
        subject: raw.subject.into(),
        seq: raw.seq,
        headers: stored_headers(headers.as_ref()),
        payload: Bytes::from(payload),
        pending_for: Vec::new(),
    })
}

/// A stored message's headers without JetStream's own (`Nats-...`).
fn stored_headers(headers: Option<&Headers>) -> Vec<(ByteString, ByteString)> {
    headers.map_or_else(Vec::new, |h| {
        h.entries
            .iter()
            .filter(|(n, _)| !n.starts_with("Nats-"))
            .cloned()
            .collect()
    })
}

/// Consumer filters JetStream accepts: duplicates and filters inside another dropped, and
/// filters that still overlap replaced by one that covers both (JetStream refuses
/// overlapping filter subjects).
#[must_use]
pub fn disjoint_filters(mut filters: Vec<String>) -> Vec<String> {
    filters.sort();
    filters.dedup();
    loop {
        let pair = (0..filters.len()).find_map(|i| {
            (0..filters.len())
                .find(|&j| j != i && overlap(&filters[i], &filters[j]))
                .map(|j| (i, j))
        });
        let Some((i, j)) = pair else {
            return filters;
        };
        let joined = if covers(&filters[i], &filters[j]) {
            filters[i].clone()
        } else if covers(&filters[j], &filters[i]) {
            filters[j].clone()
        } else {
            join(&filters[i], &filters[j])
        };
        let (a, b) = (i.max(j), i.min(j));
        filters.remove(a);
        filters.remove(b);
        filters.push(joined);
        filters.sort();
        filters.dedup();
    }
}

/// Whether some subject matches both filters.
fn overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) | (None, None) => return true,
            (Some(p), Some(q)) if p == q || p == "*" || q == "*" => {}
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let mut x = outer.split('.');
    let mut y = inner.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (None, None) => return true,
            (Some("*"), Some(q)) if q != ">" => {}
            (Some(p), Some(q)) if p == q && p != ">" => {}
            _ => return false,
        }
    }
}

/// A filter matching everything either filter matches: equal tokens kept and `*` where they
/// differ when both have the same shape; otherwise the tokens both share up to the shorter's
/// last, then `>`.
fn join(a: &str, b: &str) -> String {
    let x: Vec<&str> = a.split('.').collect();
    let y: Vec<&str> = b.split('.').collect();
    let same_shape = x.len() == y.len() && !x.contains(&">") && !y.contains(&">");
    let keep = if same_shape {
        x.len()
    } else {
        x.len().min(y.len()) - 1
    };
    let mut out: Vec<&str> = x
        .iter()
        .zip(&y)
        .take(keep)
        .map(|(p, q)| if p == q { *p } else { "*" })
        .collect();
    if !same_shape {
        out.push(">");
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_conditional_write_is_told_apart_from_other_refusals() {
        let error = |code: u16, err_code: u32| {
            api_failure(Some(ApiError {
                code,
                err_code,
                description: "d".into(),
            }))
        };
        assert_eq!(error(400, 10071), StoreError::wrong_last_sequence());
        assert_eq!(error(400, 10164), StoreError::wrong_last_sequence());
        assert!(matches!(
            error(400, ApiError::STREAM_NOT_FOUND),
            StoreError::Rejected(crate::js::Rejection::Invalid(_))
        ));
        assert!(matches!(error(503, 10071), StoreError::Unavailable(_)));
        assert!(!api_failure(None).is_wrong_last_sequence());
    }

    #[test]
    fn filters_made_disjoint() {
        let f = |v: &[&str]| disjoint_filters(v.iter().map(ToString::to_string).collect());
        assert_eq!(f(&["a.>", "a.b", "c"]), ["a.>", "c"]);
        assert_eq!(f(&["a.b", "a.b"]), ["a.b"]);
        assert_eq!(f(&["a.*.c", "a.b.*"]), ["a.*.*"]);
        assert_eq!(
            f(&["a.*", "a.b.>"]),
            ["a.*", "a.b.>"],
            "no subject matches both"
        );
        assert_eq!(f(&["a.*", "*.b.>"]), ["*.b.>", "a.*"]);
        assert_eq!(f(&["a.*.c", "*.b.>"]), ["*.*.>"]);
        assert_eq!(f(&["a.b", "c.d"]), ["a.b", "c.d"]);
        assert!(f(&[]).is_empty());
        // The result never overlaps and covers every input.
        let inputs = ["x.*.z", "x.y.>", "x.y", "q.*", "q.r.s"];
        let out = f(&inputs);
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                assert!(!overlap(a, b), "{a} and {b} overlap");
            }
        }
        for input in inputs {
            assert!(
                out.iter().any(|o| covers(o, input)),
                "{input} not covered by {out:?}"
            );
        }
    }
}
