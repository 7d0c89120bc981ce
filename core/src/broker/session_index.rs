//! The broker's sessions by key (account and client identifier).

use std::collections::BTreeSet;

use slab::Slab;

use super::io::SessionKey;
use super::session::Session;

/// A session's slot in the session table (the index holds only live sessions' slots).
type SessionId = usize;

/// Which session holds a key, as `(hash of the key, session)` pairs in a B-tree set: 16 bytes
/// per session, where a map keyed by the key itself kept a second copy of it (a 72-byte entry,
/// plus a reference-count allocation for each copied string). Lookups compare the session's
/// own key, so a hash collision costs a comparison, never a wrong answer. The hash is the one
/// session records are named by (`$MQTT.sess.<8-character hash>`, the NATS server's), so the
/// sessions whose records would share a subject are found together
/// ([`SessionIndex::sharing_record`]).
#[derive(Debug, Default)]
pub(crate) struct SessionIndex(BTreeSet<(u64, SessionId)>);

/// The 8-character client-identifier hash of the session's record subject, as a number.
fn key_hash(key: &SessionKey) -> u64 {
    let hash = crate::js::records::client_hash(&key.client_id);
    let mut bytes = [0u8; 8];
    for (b, h) in bytes.iter_mut().zip(hash.bytes()) {
        *b = h;
    }
    u64::from_le_bytes(bytes)
}

impl SessionIndex {
    /// The session of `key`, looked up in `sessions`.
    pub(crate) fn get(&self, key: &SessionKey, sessions: &Slab<Box<Session>>) -> Option<SessionId> {
        let hash = key_hash(key);
        self.0
            .range((hash, SessionId::MIN)..=(hash, SessionId::MAX))
            .map(|&(_, id)| id)
            .find(|&id| sessions.get(id).is_some_and(|s| s.key == *key))
    }

    /// Sessions of other client identifiers whose records would have the subject `key`'s has
    /// (a hash collision).
    pub(crate) fn sharing_record<'a>(
        &'a self,
        key: &'a SessionKey,
        sessions: &'a Slab<Box<Session>>,
    ) -> impl Iterator<Item = SessionId> + 'a {
        let hash = key_hash(key);
        self.0
            .range((hash, SessionId::MIN)..=(hash, SessionId::MAX))
            .map(|&(_, id)| id)
            .filter(move |&id| {
                sessions
                    .get(id)
                    .is_some_and(|s| s.key.client_id != key.client_id)
            })
    }

    /// Records that session `id` holds `key` (which no other session holds).
    pub(crate) fn insert(&mut self, key: &SessionKey, id: SessionId) {
        self.0.insert((key_hash(key), id));
    }

    /// Forgets that session `id` holds `key`.
    pub(crate) fn remove(&mut self, key: &SessionKey, id: SessionId) {
        self.0.remove(&(key_hash(key), id));
    }

    /// Every indexed session, in no meaningful order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.0.iter().map(|&(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ProtocolVersion;

    fn key(client_id: &str) -> SessionKey {
        SessionKey {
            account: "$G".into(),
            client_id: client_id.into(),
        }
    }

    #[test]
    fn finds_the_session_holding_a_key_and_forgets_it() {
        let mut sessions = Slab::new();
        let mut index = SessionIndex::default();
        for (uid, name) in ["a", "b", "c"].into_iter().enumerate() {
            let id = sessions.insert(Box::new(Session::new(
                key(name),
                ProtocolVersion::V311,
                uid as u64,
            )));
            index.insert(&key(name), id);
        }
        let b = index.get(&key("b"), &sessions).expect("b is indexed");
        assert_eq!(sessions[b].key, key("b"));
        assert_eq!(index.get(&key("d"), &sessions), None);
        index.remove(&key("b"), b);
        assert_eq!(index.get(&key("b"), &sessions), None);
        assert_eq!(index.ids().count(), 2);
    }

    #[test]
    fn sessions_whose_records_would_share_a_subject_are_found() {
        // A known collision of the NATS server's 8-character hash.
        let (a, b) = (key("cid-03579431"), key("cid-09191235"));
        let mut sessions = Slab::new();
        let mut index = SessionIndex::default();
        let id = sessions.insert(Box::new(Session::new(a.clone(), ProtocolVersion::V5, 1)));
        index.insert(&a, id);
        assert_eq!(
            index.sharing_record(&b, &sessions).collect::<Vec<_>>(),
            [id]
        );
        assert_eq!(index.sharing_record(&a, &sessions).count(), 0, "not itself");
        assert_eq!(index.sharing_record(&key("other"), &sessions).count(), 0);
        assert_eq!(index.get(&b, &sessions), None);
    }

    #[test]
    fn the_same_hash_for_two_keys_still_finds_each() {
        // Force a collision: both sessions filed under one hash.
        let mut sessions = Slab::new();
        let x = sessions.insert(Box::new(Session::new(key("x"), ProtocolVersion::V5, 1)));
        let y = sessions.insert(Box::new(Session::new(key("y"), ProtocolVersion::V5, 2)));
        let mut index = SessionIndex::default();
        let hash = key_hash(&key("x"));
        index.0.insert((hash, x));
        index.0.insert((hash, y));
        assert_eq!(index.get(&key("x"), &sessions), Some(x));
        // "y" hashes elsewhere, so it is not found under x's hash: lookups use the key's own.
        assert_eq!(index.get(&key("y"), &sessions), None);
        index.0.insert((key_hash(&key("y")), y));
        assert_eq!(index.get(&key("y"), &sessions), Some(y));
    }
}
