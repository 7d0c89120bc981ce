//! How many sessions the broker holds, in all and per user (`max_sessions`,
//! `max_sessions_per_user`): every session kept costs memory, and a persistent one is kept
//! long after its client left, so their number is bounded.

use std::collections::BTreeMap;

use bytestring::ByteString;

use super::config::BrokerConfig;

/// The sessions each authenticated user holds, counted as sessions are made and removed.
#[derive(Debug, Default)]
pub(crate) struct SessionQuota {
    per_owner: BTreeMap<ByteString, usize>,
}

impl SessionQuota {
    /// Whether one more session, owned by `owner`, fits beside the `held` ones.
    pub(crate) fn admits(
        &self,
        config: &BrokerConfig,
        held: usize,
        owner: Option<&ByteString>,
    ) -> bool {
        let total_ok = config.max_sessions == 0 || held < config.max_sessions;
        let per_user = config.max_sessions_per_user;
        let owner_ok = per_user == 0
            || owner.is_none_or(|o| self.per_owner.get(o).copied().unwrap_or(0) < per_user);
        total_ok && owner_ok
    }

    /// Counts a session of `owner` (nothing for an anonymous one).
    pub(crate) fn add(&mut self, owner: Option<&ByteString>) {
        if let Some(owner) = owner {
            *self.per_owner.entry(owner.clone()).or_insert(0) += 1;
        }
    }

    /// Uncounts a session of `owner`; a user with none left is forgotten.
    pub(crate) fn remove(&mut self, owner: Option<&ByteString>) {
        let Some(owner) = owner else {
            return;
        };
        if let Some(count) = self.per_owner.get_mut(owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_owner.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(total: usize, per_user: usize) -> BrokerConfig {
        BrokerConfig {
            max_sessions: total,
            max_sessions_per_user: per_user,
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn the_total_bounds_every_session_and_zero_means_no_limit() {
        let quota = SessionQuota::default();
        assert!(quota.admits(&config(2, 0), 1, None));
        assert!(!quota.admits(&config(2, 0), 2, None));
        assert!(quota.admits(&config(0, 0), 1_000_000, None));
    }

    #[test]
    fn each_user_has_its_own_count_and_anonymous_sessions_have_none() {
        let mut quota = SessionQuota::default();
        let (alice, bob) = (ByteString::from("alice"), ByteString::from("bob"));
        let c = config(0, 2);
        quota.add(Some(&alice));
        quota.add(Some(&alice));
        quota.add(None);
        assert!(!quota.admits(&c, 3, Some(&alice)));
        assert!(quota.admits(&c, 3, Some(&bob)));
        assert!(quota.admits(&c, 3, None));
        quota.remove(Some(&alice));
        assert!(quota.admits(&c, 2, Some(&alice)));
        quota.remove(Some(&alice));
        quota.remove(Some(&alice));
        assert!(
            quota.per_owner.is_empty(),
            "a user with no session is forgotten"
        );
    }
}
