//! [`Connections`]: every open connection, the ones with bytes to send at the end of the call,
//! the broker's own pipeline (wills waiting for store writes), and who holds which publisher
//! back.
//!
//! Output is gathered per connection during a call and sent as one action per connection at
//! its end ([`Connections::flush_one`]), in the order the connections first got bytes. A
//! connection whose unsent bytes pass `max_unsent_bytes` is a slow consumer from then on. A
//! publisher is not read while anything holds it back ([`Connection::held_by`]): overloaded
//! sessions, or all queues together past `max_total_queued_bytes` ([`Connections::hold_for_total`]).

use std::collections::BTreeMap;

use super::connection::{Connection, Pipeline};
use super::io::{Action, ConnId, Outbox};
use crate::time::Timestamp;

/// The largest output buffer sized from the previous flush.
const OUT_HINT_MAX: usize = 64 * 1024;

/// The connections with bytes to send at the end of this call, in the order they got them.
#[derive(Debug, Default)]
pub(crate) struct FlushList(Vec<ConnId>);

impl FlushList {
    /// Puts `conn` (which is `c`) on the list, once.
    pub(crate) fn mark(&mut self, conn: ConnId, c: &mut Connection) {
        if !c.dirty {
            c.dirty = true;
            self.0.push(conn);
        }
    }
}

/// Every open connection, and the bookkeeping of their output and of held publishers.
#[derive(Debug)]
pub(crate) struct Connections {
    /// Boxed: a B-tree node holds eleven entries inline, and half-full nodes of 550-byte
    /// connections would waste more than the pointer costs.
    conns: BTreeMap<ConnId, Box<Connection>>,
    /// Connections with bytes to send at the end of this call.
    dirty: FlushList,
    /// Publishes the broker makes itself (wills), waiting for store writes.
    system: Pipeline,
    /// Publishers not read until all queues together are under `max_total_queued_bytes`.
    held_for_total: Vec<ConnId>,
    /// Publishers let go during this call, read again at its end.
    resume_soon: Vec<ConnId>,
    /// `max_unsent_bytes`: unsent bytes beyond it make a connection a slow consumer.
    max_unsent: usize,
}

impl Connections {
    /// No connection yet; a connection with more than `max_unsent` unsent bytes is slow.
    pub(crate) fn new(max_unsent: usize) -> Self {
        Self {
            conns: BTreeMap::new(),
            dirty: FlushList::default(),
            system: Pipeline::default(),
            held_for_total: Vec::new(),
            resume_soon: Vec::new(),
            max_unsent,
        }
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether `conn` is open.
    pub(crate) fn contains_key(&self, conn: &ConnId) -> bool {
        self.conns.contains_key(conn)
    }

    /// The connection `conn`.
    pub(crate) fn get(&self, conn: &ConnId) -> Option<&Connection> {
        self.conns.get(conn).map(|c| &**c)
    }

    /// The connection `conn`, to change.
    pub(crate) fn get_mut(&mut self, conn: &ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(conn).map(|c| &mut **c)
    }

    /// The connection `conn` with the flush list, so that bytes written to it mark it without a
    /// second lookup (the delivery path).
    pub(crate) fn get_mut_with_flush(
        &mut self,
        conn: ConnId,
    ) -> Option<(&mut Connection, &mut FlushList)> {
        let c = self.conns.get_mut(&conn)?;
        Some((&mut **c, &mut self.dirty))
    }

    /// Adds a connection (whose number is not in use).
    pub(crate) fn insert(&mut self, conn: ConnId, c: Connection) {
        self.conns.insert(conn, Box::new(c));
    }

    /// Takes a connection out.
    pub(crate) fn remove(&mut self, conn: &ConnId) -> Option<Box<Connection>> {
        self.conns.remove(conn)
    }

    /// Every open connection's number, in order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// The pipeline of `conn`, or the broker's own for `None`.
    pub(crate) fn pipeline_mut(&mut self, conn: Option<ConnId>) -> Option<&mut Pipeline> {
        match conn {
            Some(id) => self.conns.get_mut(&id).map(|c| &mut c.pipeline),
            None => Some(&mut self.system),
        }
    }

    /// Puts `conn` on the flush list (once) if it is open.
    pub(crate) fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            self.dirty.mark(conn, c);
        }
    }

    /// Takes the flush list (to be given back with [`Connections::restore_flush_list`]).
    pub(crate) fn take_flush_list(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.dirty.0)
    }

    /// Gives back the flush list's room once flushed, empty.
    pub(crate) fn restore_flush_list(&mut self, mut list: Vec<ConnId>) {
        list.clear();
        self.dirty.0 = list;
    }

    /// Sends what `conn` accumulated as one action at `now`; true when its unsent bytes just
    /// went over the limit (it became a slow consumer).
    pub(crate) fn flush_one(&mut self, conn: ConnId, now: Timestamp, out: &mut Outbox) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.dirty = false;
        if c.out.is_empty() {
            return false;
        }
        // Split off, not taken: once the shell has written the bytes, the next encode reclaims
        // the same allocation, so steady-state delivery does not allocate.
        let bytes = c.out.split().freeze();
        c.out_hint = u32::try_from(bytes.len().min(OUT_HINT_MAX)).unwrap_or(u32::MAX);
        c.unsent += bytes.len();
        let slow = c.unsent > self.max_unsent && c.slow_since.is_none();
        if slow {
            c.slow_since = Some(now);
        }
        out.push(Action::Send { conn, bytes });
        slow
    }

    /// Whether `conn` has more unsent bytes than a healthy connection may have.
    pub(crate) fn is_slow(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| Self::over_limit(c, self.max_unsent))
    }

    /// Whether `c` has more unsent bytes than `max_unsent` (the test of
    /// [`is_slow`](Self::is_slow) on a connection at hand).
    pub(crate) fn over_limit(c: &Connection, max_unsent: usize) -> bool {
        c.unsent + c.out.len() > max_unsent
    }

    /// `max_unsent_bytes`.
    pub(crate) fn max_unsent(&self) -> usize {
        self.max_unsent
    }

    /// The shell wrote `bytes` of `conn`'s output: `Some(caught up)` for an open connection,
    /// where caught up means it is no slow consumer any more.
    pub(crate) fn flushed(&mut self, conn: ConnId, bytes: usize) -> Option<bool> {
        let c = self.conns.get_mut(&conn)?;
        c.unsent = c.unsent.saturating_sub(bytes);
        let caught_up = c.unsent <= self.max_unsent;
        if caught_up {
            c.slow_since = None;
        }
        Some(caught_up)
    }

    /// Whether a timer entry for `conn` must be set at `at`: it is open and has none as early
    /// (the entry is then noted as set).
    pub(crate) fn arm_timer(&mut self, conn: ConnId, at: Timestamp) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let arm = c.timer_at.is_none_or(|t| at < t);
        if arm {
            c.timer_at = Some(at);
        }
        arm
    }

    /// Stops reading `conn` (tells the shell, once).
    pub(crate) fn pause(&mut self, conn: ConnId, out: &mut Outbox) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.read_paused {
                c.read_paused = true;
                out.push(Action::PauseRead { conn });
            }
        }
    }

    /// Reads `conn` again if its reading is paused and nothing keeps it paused any more (see
    /// [`Connection::may_read`] with `limit`); true when it was resumed (the shell is told).
    pub(crate) fn unpause(&mut self, conn: ConnId, limit: usize, out: &mut Outbox) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let resume = c.read_paused && c.may_read(limit);
        if resume {
            c.read_paused = false;
            out.push(Action::ResumeRead { conn });
        }
        resume
    }

    /// One more reason not to read `publisher`: its reading pauses.
    pub(crate) fn hold(&mut self, publisher: ConnId, out: &mut Outbox) {
        if let Some(c) = self.conns.get_mut(&publisher) {
            c.held_by += 1;
        }
        self.pause(publisher, out);
    }

    /// Holds `publisher` back until all queues are under their total limit; false when it is
    /// held for that already.
    pub(crate) fn hold_for_total(&mut self, publisher: ConnId) -> bool {
        if self.held_for_total.contains(&publisher) {
            return false;
        }
        self.held_for_total.push(publisher);
        true
    }

    /// Lets go of the publishers held for the total limit, when any are.
    pub(crate) fn release_held_for_total(&mut self) {
        for publisher in std::mem::take(&mut self.held_for_total) {
            self.unhold(publisher);
        }
    }

    /// Whether publishers are held for the total limit.
    pub(crate) fn any_held_for_total(&self) -> bool {
        !self.held_for_total.is_empty()
    }

    /// One reason less not to read `publisher`; with none left it is read again at the end of
    /// the call ([`next_to_resume`](Self::next_to_resume)).
    pub(crate) fn unhold(&mut self, publisher: ConnId) {
        if let Some(c) = self.conns.get_mut(&publisher) {
            c.held_by = c.held_by.saturating_sub(1);
            if c.held_by == 0 {
                self.resume_soon.push(publisher);
            }
        }
    }

    /// The next publisher let go during this call whose reading resumes now (see
    /// [`unpause`](Self::unpause)), last let go first.
    pub(crate) fn next_to_resume(&mut self, limit: usize, out: &mut Outbox) -> Option<ConnId> {
        while let Some(conn) = self.resume_soon.pop() {
            if self.unpause(conn, limit, out) {
                return Some(conn);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ConnInfo, ListenerKind};

    fn conn(n: u64) -> ConnId {
        ConnId::new(n).expect("non-zero")
    }

    fn open(conns: &mut Connections, n: u64) {
        let info = ConnInfo {
            peer: "127.0.0.1:1".into(),
            listener: ListenerKind::Test,
            tls_identity: None,
        };
        let now = Timestamp::from_nanos(0);
        conns.insert(conn(n), Connection::new(info, now, now, 1024));
    }

    #[test]
    fn connections_flush_once_each_in_the_order_they_got_bytes() {
        let mut conns = Connections::new(4);
        open(&mut conns, 1);
        open(&mut conns, 2);
        for n in [2, 1, 2] {
            if let Some((c, flush)) = conns.get_mut_with_flush(conn(n)) {
                c.out.extend_from_slice(b"abc");
                flush.mark(conn(n), c);
            }
        }
        let list = conns.take_flush_list();
        assert_eq!(list, [conn(2), conn(1)]);
        let mut out = Outbox::new();
        let now = Timestamp::from_nanos(7);
        assert!(
            conns.flush_one(conn(2), now, &mut out),
            "6 bytes over 4: slow"
        );
        assert!(!conns.flush_one(conn(1), now, &mut out));
        conns.restore_flush_list(list);
        assert_eq!(out.len(), 2);
        assert!(conns.is_slow(conn(2)));
        assert_eq!(conns.flushed(conn(2), 6), Some(true), "caught up");
        assert!(!conns.is_slow(conn(2)));
        assert_eq!(conns.flushed(conn(3), 1), None, "not open");
    }

    #[test]
    fn a_publisher_is_read_again_once_nothing_holds_it() {
        let mut conns = Connections::new(1024);
        open(&mut conns, 1);
        let mut out = Outbox::new();
        conns.hold(conn(1), &mut out);
        assert!(conns.hold_for_total(conn(1)));
        assert!(!conns.hold_for_total(conn(1)), "once");
        conns.hold(conn(1), &mut out);
        assert_eq!(out.len(), 1, "paused once");
        conns.unhold(conn(1));
        assert_eq!(conns.next_to_resume(10, &mut out), None, "still held");
        conns.release_held_for_total();
        assert!(!conns.any_held_for_total());
        assert_eq!(conns.next_to_resume(10, &mut out), Some(conn(1)));
        assert!(matches!(
            out.actions().last(),
            Some(Action::ResumeRead { .. })
        ));
    }

    #[test]
    fn a_connection_timer_is_armed_only_when_earlier() {
        let mut conns = Connections::new(1024);
        open(&mut conns, 1);
        let at = |n| Timestamp::from_nanos(n);
        assert!(conns.arm_timer(conn(1), at(10)));
        assert!(!conns.arm_timer(conn(1), at(20)));
        assert!(conns.arm_timer(conn(1), at(5)));
        assert!(!conns.arm_timer(conn(9), at(1)), "not open");
    }
}
