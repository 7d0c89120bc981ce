//! The broker's sessions by key (account and client identifier).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use slab::Slab;

use super::session::{Session, SessionId, SessionKey};

/// Which session holds a key, as `(hash of the key, session)` pairs in a B-tree set: 16 bytes
/// per session, where a map keyed by the key itself kept a second copy of it (a 72-byte entry,
/// plus a reference-count allocation for each copied string). Lookups compare the session's
/// own key, so a hash collision costs a comparison, never a wrong answer, and the hash
/// function affects only the layout, never what the broker does.
#[derive(Debug, Default)]
pub(crate) struct SessionIndex(BTreeSet<(u64, SessionId)>);

/// A hasher with fixed keys: the same key hashes the same in every run.
fn key_hash(key: &SessionKey) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
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
