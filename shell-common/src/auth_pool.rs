//! Authentication checks off the broker's loop, bounded so that they cannot be used to exhaust
//! the broker: shared by every shell (std threads and a mutex, no runtime).
//!
//! - Password (Argon2, about 19 MiB and tens of milliseconds each) and SCRAM checks run on a
//!   small fixed pool of threads ([`AuthLimits::threads`]) fed by a bounded queue
//!   ([`AuthLimits::queue`]). When the queue is full a new check is refused at once with
//!   [`ConnectReason::ServerBusy`] (CONNACK v5 0x89, 3.1.1 return code 3) instead of piling up.
//! - A queued check whose connection has closed is dropped, not run ([`AuthPool::cancel`]).
//! - Failed logins (a wrong password, an unknown user, a wrong SCRAM proof) are counted per
//!   source address (IPv6: per /64) and per user name. After
//!   [`AuthLimits::max_failures_per_address`] (or `_per_user`) failures within
//!   [`AuthLimits::failure_window`], further attempts from that address (for that user) are
//!   refused with [`ConnectReason::ConnectionRateExceeded`] (v5 0x9F, 3.1.1 code 3) without
//!   running a check, until the window that began with the first failure has passed.
//! - Decisions that need no check (anonymous clients, unknown methods) are made at once on
//!   the caller's thread, so a flood of bad passwords does not keep anonymous clients out.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jetmq_core::broker::{AuthDecision, AuthRequest, AuthStage, ConnId, Input};
use jetmq_core::codec::ConnectReason;
use tracing::{debug, info};

use crate::auth::AuthSource;

/// How authentication checks are bounded (`[auth]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Threads running password and SCRAM checks (`auth.threads`, default 2).
    pub threads: usize,
    /// Checks waiting for a thread; more are refused as Server busy (`auth.queue`, default 64).
    pub queue: usize,
    /// Failed logins from one address within the window before its attempts are refused
    /// (`auth.max_failures_per_address`, default 5; 0: no limit).
    pub max_failures_per_address: u32,
    /// Failed logins for one user name within the window before its attempts are refused
    /// (`auth.max_failures_per_user`, default 5; 0: no limit).
    pub max_failures_per_user: u32,
    /// How long failures are counted from the first one (`auth.failure_window_secs`,
    /// default 60 s).
    pub failure_window: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            threads: 2,
            queue: 64,
            max_failures_per_address: 5,
            max_failures_per_user: 5,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// The most addresses (and, separately, user names) whose failures are remembered; past it the
/// entries whose window has passed are forgotten first, then the oldest.
const MAX_TRACKED: usize = 16_384;

/// How a shell hands a decision back to its loop.
type Complete = Box<dyn Fn(Input) + Send + Sync>;

/// A check waiting for a thread.
struct Job {
    request: Box<AuthRequest>,
    address: Option<IpAddr>,
    user: Option<String>,
}

/// Failed logins of one address or user name in the current window.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    since: Instant,
    count: u32,
}

/// Failed logins per key, bounded in size.
#[derive(Debug)]
struct Failures<K> {
    limit: u32,
    window: Duration,
    entries: HashMap<K, Strikes>,
}

impl<K: std::hash::Hash + Eq + Clone> Failures<K> {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            entries: HashMap::new(),
        }
    }

    /// Whether `key` has used up its failures in the current window.
    fn blocked(&mut self, key: &K, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        match self.entries.get(key) {
            Some(s) if now.saturating_duration_since(s.since) >= self.window => {
                self.entries.remove(key);
                false
            }
            Some(s) => s.count >= self.limit,
            None => false,
        }
    }

    /// Counts one failure of `key`.
    fn strike(&mut self, key: K, now: Instant) {
        if self.limit == 0 {
            return;
        }
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&key) {
            let window = self.window;
            self.entries
                .retain(|_, s| now.saturating_duration_since(s.since) < window);
            if self.entries.len() >= MAX_TRACKED {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, s)| s.since)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let strikes = self.entries.entry(key).or_insert(Strikes {
            since: now,
            count: 0,
        });
        if now.saturating_duration_since(strikes.since) >= self.window {
            *strikes = Strikes {
                since: now,
                count: 0,
            };
        }
        strikes.count = strikes.count.saturating_add(1);
    }
}

/// What the pool's threads and its users share.
struct State {
    queue: VecDeque<Job>,
    stopping: bool,
    by_address: Failures<IpAddr>,
    by_user: Failures<String>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    source: AuthSource,
    capacity: usize,
    complete: Complete,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread cannot panic while holding the lock (it only moves jobs and counts).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer(&self, conn: ConnId, decision: AuthDecision) {
        (self.complete)(Input::Authenticated { conn, decision });
    }
}

/// The pool of authentication threads of one server; dropping it stops the threads (a check
/// under way finishes first).
pub struct AuthPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuthPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPool")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl AuthPool {
    /// Starts `limits.threads` threads deciding with `source`; every decision goes to
    /// `complete` as [`Input::Authenticated`] (from a pool thread, or from the caller of
    /// [`submit`](Self::submit) when no check is needed or the check is refused).
    ///
    /// # Errors
    ///
    /// A thread cannot be started.
    pub fn start(
        source: AuthSource,
        limits: AuthLimits,
        complete: impl Fn(Input) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                stopping: false,
                by_address: Failures::new(limits.max_failures_per_address, limits.failure_window),
                by_user: Failures::new(limits.max_failures_per_user, limits.failure_window),
            }),
            work: Condvar::new(),
            source,
            capacity: limits.queue.max(1),
            complete: Box::new(complete),
        });
        for i in 0..limits.threads.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("jetmq-auth-{i}"))
                .spawn(move || work(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Decides on `request`: at once when it needs no check, when its address or user name
    /// has failed too often (0x9F) or when the queue is full (0x89); otherwise a pool thread
    /// checks it.
    pub fn submit(&self, request: Box<AuthRequest>) {
        let config = self.shared.source.current();
        if !config.needs_check(&request) {
            let decision = config.decide(&request);
            self.shared.answer(request.conn, decision);
            return;
        }
        let address = source_address(&request.info.peer);
        let user = attempted_user(&request);
        let now = Instant::now();
        let refusal = {
            let mut state = self.shared.lock();
            let limited = address.is_some_and(|a| state.by_address.blocked(&a, now))
                || user.as_ref().is_some_and(|u| state.by_user.blocked(u, now));
            if limited {
                Some(ConnectReason::ConnectionRateExceeded)
            } else if state.stopping || state.queue.len() >= self.shared.capacity {
                Some(ConnectReason::ServerBusy)
            } else {
                state.queue.push_back(Job {
                    request,
                    address,
                    user,
                });
                self.shared.work.notify_one();
                return;
            }
        };
        if let Some(reason) = refusal {
            info!(
                conn = request.conn.get(),
                ?reason,
                "authentication refused without a check"
            );
            self.shared.answer(request.conn, AuthDecision::Deny(reason));
        }
    }

    /// Forgets the queued check of `conn`, whose connection has closed.
    pub fn cancel(&self, conn: ConnId) {
        let mut state = self.shared.lock();
        if !state.queue.is_empty() {
            let before = state.queue.len();
            state.queue.retain(|job| job.request.conn != conn);
            if state.queue.len() != before {
                debug!(conn = conn.get(), "queued authentication dropped: closed");
            }
        }
    }

    /// Checks waiting for a thread now.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl Drop for AuthPool {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        state.queue.clear();
        drop(state);
        self.shared.work.notify_all();
    }
}

/// A pool thread: takes jobs until the pool is dropped.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return;
                }
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let decision = shared.source.current().decide(&job.request);
        if let AuthDecision::Deny(reason) = &decision {
            info!(
                conn = job.request.conn.get(),
                ?reason,
                "connection refused by authentication"
            );
            if *reason == ConnectReason::BadUserNameOrPassword {
                let now = Instant::now();
                let mut state = shared.lock();
                if let Some(address) = job.address {
                    state.by_address.strike(address, now);
                }
                if let Some(user) = job.user {
                    state.by_user.strike(user, now);
                }
            }
        }
        shared.answer(job.request.conn, decision);
    }
}

/// The address failures are counted for: the peer's IP, an IPv6 peer's /64 (what one host
/// usually has to itself). `None` when the peer is not an IP address (tests).
fn source_address(peer: &str) -> Option<IpAddr> {
    let ip = peer.parse::<SocketAddr>().ok()?.ip();
    Some(match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 @ IpAddr::V4(_) => v4,
    })
}

/// The user name a request tries to authenticate as: the CONNECT's, or for SCRAM the one in
/// its messages.
fn attempted_user(request: &AuthRequest) -> Option<String> {
    if request.method.as_deref() == Some(crate::scram::METHOD) {
        let from_scram = match (request.stage, &request.state) {
            (AuthStage::Continue, Some(state)) => crate::scram::state_user(state),
            _ => request
                .data
                .as_deref()
                .and_then(crate::scram::client_first_user),
        };
        if from_scram.is_some() {
            return from_scram;
        }
    }
    request.username.as_ref().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmq_core::broker::{ConnInfo, ListenerKind};
    use jetmq_core::codec::ProtocolVersion;
    use std::sync::mpsc;

    fn request(conn: u64, peer: &str, user: &str, password: &[u8]) -> Box<AuthRequest> {
        Box::new(AuthRequest {
            conn: ConnId::new(conn).expect("id"),
            info: ConnInfo {
                peer: peer.to_string().into(),
                listener: ListenerKind::Test,
                tls_identity: None,
            },
            protocol: ProtocolVersion::V5,
            client_id: "c".into(),
            username: Some(user.into()),
            password: Some(bytes::Bytes::copy_from_slice(password)),
            method: None,
            data: None,
            stage: AuthStage::Connect,
            state: None,
        })
    }

    fn source() -> AuthSource {
        let mut config = crate::auth::AuthConfig::open();
        config.allow_anonymous = false;
        config.users.insert(
            "alice".into(),
            crate::auth::hash_password(b"right").expect("hash"),
        );
        AuthSource::new(config)
    }

    fn pool(limits: AuthLimits) -> (AuthPool, mpsc::Receiver<(u64, AuthDecision)>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let pool = AuthPool::start(source(), limits, move |input| {
            if let Input::Authenticated { conn, decision } = input {
                let _ = tx.lock().expect("lock").send((conn.get(), decision));
            }
        })
        .expect("starts");
        (pool, rx)
    }

    fn pool_with_queue(queue: usize) -> (AuthPool, mpsc::Receiver<(u64, AuthDecision)>) {
        pool(AuthLimits {
            threads: 1,
            queue,
            max_failures_per_address: 0,
            max_failures_per_user: 0,
            ..AuthLimits::default()
        })
    }

    fn next(rx: &mpsc::Receiver<(u64, AuthDecision)>) -> (u64, AuthDecision) {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a decision")
    }

    #[test]
    fn failures_are_limited_per_address_and_per_user() {
        let (pool, rx) = pool(AuthLimits {
            max_failures_per_address: 2,
            max_failures_per_user: 3,
            ..AuthLimits::default()
        });
        for conn in 1..=2 {
            pool.submit(request(conn, "10.0.0.1:1000", "alice", b"wrong"));
            let (_, d) = next(&rx);
            assert_eq!(d, AuthDecision::Deny(ConnectReason::BadUserNameOrPassword));
        }
        // The address has used its failures: even the right password is refused unchecked.
        pool.submit(request(3, "10.0.0.1:1001", "alice", b"right"));
        assert_eq!(
            next(&rx),
            (3, AuthDecision::Deny(ConnectReason::ConnectionRateExceeded))
        );
        // Another address may try alice once more, then alice is limited everywhere.
        pool.submit(request(4, "10.0.0.2:1000", "alice", b"wrong"));
        assert_eq!(
            next(&rx).1,
            AuthDecision::Deny(ConnectReason::BadUserNameOrPassword)
        );
        pool.submit(request(5, "10.0.0.3:1000", "alice", b"right"));
        assert_eq!(
            next(&rx),
            (5, AuthDecision::Deny(ConnectReason::ConnectionRateExceeded))
        );
        // Another user from a fresh address is checked as usual.
        pool.submit(request(6, "10.0.0.4:1000", "bob", b"x"));
        assert_eq!(
            next(&rx).1,
            AuthDecision::Deny(ConnectReason::BadUserNameOrPassword)
        );
    }

    #[test]
    fn the_window_passes() {
        let mut f = Failures::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        f.strike("a", t0);
        f.strike("a", t0 + Duration::from_secs(1));
        assert!(f.blocked(&"a", t0 + Duration::from_secs(59)));
        assert!(!f.blocked(&"a", t0 + Duration::from_secs(60)));
        assert!(!f.blocked(&"b", t0));
    }

    #[test]
    fn remembered_failures_are_bounded() {
        let mut f = Failures::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            f.strike(i, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(f.entries.len(), MAX_TRACKED);
        // The oldest went first.
        assert!(!f.entries.contains_key(&0));
        assert!(f.entries.contains_key(&(MAX_TRACKED + 9)));
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_closed_connections_are_dropped() {
        let (pool, rx) = pool_with_queue(2);
        // Hold the only thread: the queue is only filled while the first check runs.
        let mut busy = 0;
        for conn in 1..=20 {
            pool.submit(request(conn, "10.0.0.1:1", "alice", b"wrong"));
        }
        let mut answered = Vec::new();
        for _ in 0..20 {
            let (conn, d) = next(&rx);
            if d == AuthDecision::Deny(ConnectReason::ServerBusy) {
                busy += 1;
            }
            answered.push(conn);
        }
        assert!(busy >= 17, "{busy} refused as busy");
        drop(pool);
        let (pool, rx) = pool_with_queue(8);
        // Cancelled checks are never answered.
        for conn in 100..=101 {
            pool.submit(request(conn, "10.0.0.1:1", "alice", b"wrong"));
        }
        pool.submit(request(102, "10.0.0.1:1", "alice", b"wrong"));
        pool.cancel(ConnId::new(101).expect("id"));
        pool.cancel(ConnId::new(102).expect("id"));
        let mut seen = Vec::new();
        while let Ok((conn, _)) = rx.recv_timeout(Duration::from_secs(3)) {
            seen.push(conn);
        }
        assert!(seen.contains(&100), "{seen:?}");
        assert!(!seen.contains(&102), "{seen:?}");
    }

    #[test]
    fn addresses_are_grouped() {
        assert_eq!(
            source_address("[2001:db8::1]:1883"),
            source_address("[2001:db8::2]:1883")
        );
        assert_ne!(source_address("10.0.0.1:1"), source_address("10.0.0.2:1"));
        assert_eq!(
            source_address("[::ffff:10.0.0.1]:5"),
            source_address("10.0.0.1:7")
        );
        assert_eq!(source_address("test"), None);
    }
}
