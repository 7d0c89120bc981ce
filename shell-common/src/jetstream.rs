//! The JetStream store backend: the core's [`JetStream`] executor on a NATS connection of its
//! own (threads, reconnecting with backoff). Requests made while the connection is down fail
//! at once with `Unavailable`, which the broker turns into a failure reason code or a close,
//! never a false acknowledgement.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytestring::ByteString;
use jetmq_core::broker::Action;
use jetmq_core::js::jetstream::JetStream;
use jetmq_core::js::records::{self, SessionRecord};
use jetmq_core::js::{RequestId, StoreError, StoreReply, StoreRequest, StoredMessage, Stream};
use jetmq_core::nats::Event;

use crate::nats_config::NatsConfig;
use crate::nats_link::{Endpoint, Hooks, Link, Settled, Shared};
use crate::store::{Completion, StoreBackend, Wake};

/// How often the executor's clock ticks.
const TICK: Duration = Duration::from_millis(200);

/// The executor and the completions of the requests it is carrying out.
struct State {
    js: JetStream,
    completions: HashMap<RequestId, Completion>,
    /// Called after each group of completions ([`StoreBackend::group_completions`]).
    after_completions: Option<Wake>,
}

/// Requests that finished together: their completions with their results, and what to call
/// after them.
#[derive(Default)]
struct Finished {
    done: Vec<(Completion, RequestId, Result<StoreReply, StoreError>)>,
    after: Option<Wake>,
}

impl State {
    /// The completions of the requests that finished, paired with their results.
    fn finished(&mut self) -> Finished {
        let done: Vec<_> = self
            .js
            .take_finished()
            .into_iter()
            .filter_map(|(id, result)| self.completions.remove(&id).map(|done| (done, id, result)))
            .collect();
        let after = if done.is_empty() {
            None
        } else {
            self.after_completions.clone()
        };
        Finished { done, after }
    }
}

struct JetStreamHooks;

impl Hooks<State> for JetStreamHooks {
    fn connected(&self, shared: &mut Shared<State>) {
        shared.state.js.start(&mut shared.client);
    }

    fn lost(&self, shared: &mut Shared<State>) {
        shared.state.js.connection_lost();
        let finished = shared.state.finished();
        complete(finished);
    }

    fn events(&self, link: &Link<State>, events: &mut Vec<Event>) {
        let finished = link.with(|s| {
            for event in events.drain(..) {
                if let Event::Message(m) = event {
                    s.state.js.on_message(&m, &mut s.client);
                }
            }
            s.state.finished()
        });
        complete(finished.unwrap_or_default());
    }
}

fn complete(finished: Finished) {
    for (done, id, result) in finished.done {
        done(id, result);
    }
    if let Some(after) = finished.after {
        after();
    }
}

/// The store on a NATS server's JetStream.
pub struct JetStreamBackend {
    link: Link<State>,
    config: NatsConfig,
    /// Numbers for the backend's own requests (start-up loading, [`execute`](Self::execute)),
    /// far above the broker's.
    next_own: AtomicU64,
}

impl JetStreamBackend {
    /// Connects to the NATS server of `config` (and keeps reconnecting); the streams are
    /// looked up, or created, once the connection is up.
    ///
    /// # Errors
    ///
    /// The connection's thread cannot be started.
    pub fn connect(config: &NatsConfig, name: &str) -> io::Result<Self> {
        let state = State {
            js: JetStream::new(config.jetstream_config(crate::nats_link::new_inbox())),
            completions: HashMap::new(),
            after_completions: None,
        };
        let link = Link::start(
            Endpoint::new(config, name),
            state,
            "jetmq-jetstream",
            JetStreamHooks,
        )?;
        // The executor's clock: requests JetStream leaves unanswered time out.
        let ticking = link.clone();
        std::thread::Builder::new()
            .name("jetmq-jetstream-timer".into())
            .spawn(move || {
                let start = std::time::Instant::now();
                while !ticking.is_stopped() {
                    std::thread::sleep(TICK);
                    let now = crate::clock::now_since(start).instant;
                    let finished = ticking.with(|s| {
                        s.state.js.tick(now, &mut s.client);
                        s.state.finished()
                    });
                    complete(finished.unwrap_or_default());
                }
            })?;
        Ok(Self {
            link,
            config: config.clone(),
            next_own: AtomicU64::new(1 << 62),
        })
    }

    /// Carries out one request and waits for its result (up to the API timeout).
    ///
    /// # Errors
    ///
    /// The request's [`StoreError`]; [`StoreError::Timeout`] when JetStream does not answer.
    pub fn execute(&self, request: StoreRequest) -> Result<StoreReply, StoreError> {
        let id = RequestId(self.next_own.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel();
        self.submit(
            id,
            request,
            Box::new(move |_, result| {
                let _ = tx.send(result);
            }),
        );
        // The executor times the request out itself; this is the backstop.
        rx.recv_timeout(self.config.api_timeout + Duration::from_secs(1))
            .unwrap_or(Err(StoreError::Timeout))
    }

    fn messages(&self, request: StoreRequest) -> Result<Vec<StoredMessage>, StoreError> {
        let what = format!("{request:?}");
        match self.execute(request)? {
            StoreReply::Messages(m) => Ok(m),
            other => Err(StoreError::Rejected(
                format!("{what}: unexpected reply {other:?}").into(),
            )),
        }
    }

    /// Publishes the broker's NATS messages (`Action::NatsPublish`, such as the notice that
    /// ends a deleted session on the fleet's running nodes) on this connection, and returns
    /// once the NATS server has them: a request sent after them was answered.
    ///
    /// # Errors
    ///
    /// NATS is unreachable, or did not answer in time.
    pub fn publish(&self, actions: &[Action]) -> Result<(), StoreError> {
        let queued = self.link.with(|s| {
            actions
                .iter()
                .all(|a| crate::nats_link::publish(&mut s.client, a))
        });
        if queued != Some(true) {
            return Err(StoreError::Unavailable(
                "NATS is unreachable: the messages were not sent".into(),
            ));
        }
        self.execute(StoreRequest::GetLast {
            stream: Stream::Sessions,
            subject: records::session_subject(""),
        })
        .map(|_| ())
    }

    /// Closes the connection.
    pub fn stop(&self) {
        self.link.stop();
    }
}

impl Drop for JetStreamBackend {
    fn drop(&mut self) {
        self.link.stop();
    }
}

impl StoreBackend for JetStreamBackend {
    fn submit(&self, id: RequestId, request: StoreRequest, done: Completion) {
        let finished = self.link.with(|s| {
            s.state.completions.insert(id, done);
            s.state.js.submit(id, request, &mut s.client);
            s.state.finished()
        });
        complete(finished.unwrap_or_default());
    }

    fn group_completions(&self, wake: Wake) -> bool {
        self.link
            .with(|s| s.state.after_completions = Some(wake))
            .is_some()
    }

    /// Sessions, retained messages and inbound QoS 2 records, then what each session's
    /// consumer hands out (up to its max ack pending).
    fn restore(&self) -> Result<Vec<StoredMessage>, StoreError> {
        // Credentials the server refuses stop the start-up at once, saying which to fix.
        if let Settled::Refused(why) = self.link.wait_settled(self.config.api_timeout) {
            return Err(StoreError::Unavailable(why.into()));
        }
        let first = self
            .messages(StoreRequest::List {
                stream: Stream::Sessions,
                prefix: records::SESSIONS_PREFIX.into(),
            })
            .map_err(|e| match e {
                StoreError::Timeout => StoreError::Unavailable(
                    format!(
                        "no answer from JetStream at {} within {:?}: is nats-server running there \
                         with JetStream enabled (nats-server -js)?",
                        self.config.address_list(),
                        self.config.api_timeout
                    )
                    .into(),
                ),
                other => other,
            })?;
        let mut all = first;
        let consumers: Vec<ByteString> = all
            .iter()
            .filter_map(|m| SessionRecord::from_json(&m.payload))
            .map(|r| records::consumer_name(&r.id))
            .collect();
        tracing::info!(
            sessions = consumers.len(),
            "restoring from JetStream: sessions read; now retained messages and queued messages"
        );
        for (stream, prefix) in [
            (Stream::Retained, records::RETAINED_PREFIX),
            (Stream::Qos2In, records::QOS2_PREFIX),
        ] {
            all.extend(self.messages(StoreRequest::List {
                stream,
                prefix: prefix.into(),
            })?);
        }
        // One request per session: with many sessions this takes a while, so it says how far
        // it got every few seconds.
        let total = consumers.len();
        let mut reported = std::time::Instant::now();
        for (done, consumer) in consumers.into_iter().enumerate() {
            all.extend(self.messages(StoreRequest::Pending {
                consumer,
                limit: self.config.max_ack_pending,
            })?);
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = std::time::Instant::now();
                tracing::info!(
                    done = done + 1,
                    total,
                    "restoring from JetStream: reading the sessions' queued messages"
                );
            }
        }
        Ok(all)
    }
}

/// How often a long restore says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
