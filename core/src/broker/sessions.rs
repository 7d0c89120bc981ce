//! [`Sessions`]: every session the broker holds, online and offline, by handle and by key,
//! with the quota on how many there may be and the numbers that tell them apart.
//!
//! Every other part names a session by its [`SessionId`], a generational handle: its slot in
//! the table and the session's uid, a number no other session of this broker has had or will
//! have. A handle is checked on every use, so one kept past its session's end (by a timer, a
//! store request, a fan-out in progress) finds nothing, never the later session that took
//! its slot.

use bytestring::ByteString;
use slab::Slab;

use super::config::BrokerConfig;
use super::io::SessionKey;
use super::session::Session;
use super::session_index::SessionIndex;
use super::session_quota::SessionQuota;
use crate::codec::ProtocolVersion;

/// A session as the rest of the broker names it: where it is in the table and which session
/// of that slot it is. Handles order by slot first (then uid), as the subscription tries and
/// timers rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionId {
    /// Where it is in the session table (reused once its session ends).
    slot: usize,
    /// The session's uid, never reused.
    uid: u64,
}

/// Every session the broker holds, online and offline.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// Boxed, so the slab's spare capacity costs a pointer per slot, not a session.
    table: Slab<Box<Session>>,
    by_key: SessionIndex,
    /// Sessions per user, for `max_sessions_per_user`.
    quota: SessionQuota,
    /// The last uid handed out.
    uids: u64,
}

impl Sessions {
    /// How many sessions there are.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The session `id` names, if it still exists.
    pub(crate) fn get(&self, id: SessionId) -> Option<&Session> {
        self.table
            .get(id.slot)
            .map(|s| &**s)
            .filter(|s| s.uid == id.uid)
    }

    /// The session `id` names, if it still exists, to change.
    pub(crate) fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.table
            .get_mut(id.slot)
            .map(|s| &mut **s)
            .filter(|s| s.uid == id.uid)
    }

    /// The handle of the session in `slot`, if there is one.
    fn at(&self, slot: usize) -> Option<SessionId> {
        let uid = self.table.get(slot)?.uid;
        Some(SessionId { slot, uid })
    }

    /// The session that holds `key`, if one does.
    pub(crate) fn find(&self, key: &SessionKey) -> Option<SessionId> {
        self.at(self.by_key.get(key, &self.table)?)
    }

    /// Sessions of other client identifiers whose records would have the subject `key`'s has
    /// (a hash collision of the NATS server's 8-character hash).
    pub(crate) fn sharing_record<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> impl Iterator<Item = &'a Session> + 'a {
        self.by_key
            .sharing_record(key, &self.table)
            .filter_map(|slot| self.table.get(slot).map(|s| &**s))
    }

    /// Whether one more session, of `owner`, fits within `max_sessions` and
    /// `max_sessions_per_user`.
    pub(crate) fn admits(&self, config: &BrokerConfig, owner: Option<&ByteString>) -> bool {
        self.quota.admits(config, self.table.len(), owner)
    }

    /// Makes a session for `key` (which no session holds), owned by `owner`, and counts it
    /// towards its owner's quota.
    pub(crate) fn insert(
        &mut self,
        key: SessionKey,
        version: ProtocolVersion,
        owner: Option<ByteString>,
    ) -> SessionId {
        self.uids += 1;
        let uid = self.uids;
        let slot = self.table.vacant_key();
        self.by_key.insert(&key, slot);
        let mut session = Box::new(Session::new(key, version, uid));
        self.quota.add(owner.as_ref());
        session.owner = owner.map(Box::new);
        let slot = self.table.insert(session);
        SessionId { slot, uid }
    }

    /// Takes the session `id` names out of the table (its key and its quota with it).
    pub(crate) fn remove(&mut self, id: SessionId) -> Option<Box<Session>> {
        self.get(id)?;
        let s = self.table.try_remove(id.slot)?;
        self.quota.remove(s.owner.as_deref());
        self.by_key.remove(&s.key, id.slot);
        Some(s)
    }

    /// Every session with its handle, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> + '_ {
        self.table.iter().map(|(slot, s)| {
            let id = SessionId { slot, uid: s.uid };
            (id, &**s)
        })
    }

    /// Every session with its handle, in slot order, to change.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut Session)> + '_ {
        self.table.iter_mut().map(|(slot, s)| {
            let id = SessionId { slot, uid: s.uid };
            (id, &mut **s)
        })
    }

    /// Every session indexed by key, in no meaningful order.
    pub(crate) fn by_key(&self) -> impl Iterator<Item = &Session> + '_ {
        self.by_key
            .ids()
            .filter_map(|slot| self.table.get(slot).map(|s| &**s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client_id: &str) -> SessionKey {
        SessionKey {
            account: "$G".into(),
            client_id: client_id.into(),
        }
    }

    #[test]
    fn a_handle_never_reaches_a_later_session_of_its_slot() {
        let mut sessions = Sessions::default();
        let a = sessions.insert(key("a"), ProtocolVersion::V5, None);
        assert_eq!(sessions.find(&key("a")), Some(a));
        assert!(sessions.remove(a).is_some());
        assert!(sessions.remove(a).is_none(), "removed once");
        let b = sessions.insert(key("b"), ProtocolVersion::V5, None);
        assert_eq!(b.slot, a.slot, "the slot is reused");
        assert!(sessions.get(a).is_none(), "the old handle finds nothing");
        assert!(sessions.get_mut(a).is_none());
        assert!(sessions.remove(a).is_none(), "nor removes the new session");
        assert_eq!(sessions.get(b).map(|s| s.key.clone()), Some(key("b")));
        assert_eq!(sessions.find(&key("a")), None);
        assert!(b.uid > a.uid);
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn sessions_count_towards_their_owners_quota_until_removed() {
        let config = BrokerConfig {
            max_sessions_per_user: 1,
            ..BrokerConfig::default()
        };
        let alice = ByteString::from("alice");
        let mut sessions = Sessions::default();
        assert!(sessions.admits(&config, Some(&alice)));
        let a = sessions.insert(key("a"), ProtocolVersion::V311, Some(alice.clone()));
        assert!(!sessions.admits(&config, Some(&alice)));
        assert!(
            sessions.admits(&config, None),
            "anonymous sessions are not counted"
        );
        assert_eq!(
            sessions.get(a).and_then(|s| s.owner.as_deref()),
            Some(&alice)
        );
        sessions.remove(a);
        assert!(sessions.admits(&config, Some(&alice)));
    }

    #[test]
    fn iteration_goes_in_slot_order_with_live_handles() {
        let mut sessions = Sessions::default();
        let ids: Vec<SessionId> = ["x", "y", "z"]
            .into_iter()
            .map(|c| sessions.insert(key(c), ProtocolVersion::V5, None))
            .collect();
        sessions.remove(ids[1]);
        let seen: Vec<SessionId> = sessions.iter().map(|(id, _)| id).collect();
        assert_eq!(seen, [ids[0], ids[2]]);
        assert!(seen.iter().all(|id| sessions.get(*id).is_some()));
    }
}
