//! Saving a persistent session's subscriptions with a bounded number of rewrites.
//!
//! A subscription change of a persistent session is acknowledged (SUBACK, UNSUBACK) only once
//! a save that includes it has been written: the session's record and its consumer's filter
//! subjects, each holding every subscription. Saving once per change would let a client that
//! pipelines many small SUBSCRIBEs make the broker write ever larger records, one per packet
//! (quadratic store traffic from a linear input). So a session has at most one save in
//! flight: changes made meanwhile wait together for one next save of the then-current state,
//! issued when the one in flight completes. A client pipelining changes costs about one save
//! per store round trip, and every acknowledgement still follows a save that includes it.
//! The broker keeps a session's saves by [`SessionId`] only while one is in flight or
//! waiting (idle sessions cost nothing); an entry whose session ended goes with its last
//! answer (or timeout), never touching a later session of the same slot.
//!
//! A change deferred this way reaches the session's consumer only with its save: a message
//! stored between the change and that save is routed to the session from memory but is not
//! held by its consumer, so a restart before the client acknowledged it loses it. (It was
//! published before the change's acknowledgement; a change made with no save in flight is
//! saved at once, as before.)

use std::collections::BTreeSet;

use super::io::{ConnId, Outbox};
use super::requests::RequestOwner;
use super::sessions::SessionId;
use super::Broker;

/// An acknowledgement waiting for a save: its connection and the token of its pipeline entry
/// (which waits for one write).
pub(crate) type WaitingAck = (ConnId, u64);

/// The acknowledgements a completed save releases, and whether it failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) acks: Vec<WaitingAck>,
    pub(crate) failed: bool,
}

/// The saves of one persistent session's subscriptions: the one in flight, and the
/// acknowledgements waiting for it or for the next.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionSave {
    /// Writes of the save in flight not yet answered (0: no save in flight).
    in_flight: u32,
    /// Whether a write of the save in flight failed.
    failed: bool,
    /// Acknowledgements of the changes the save in flight includes.
    covered: Vec<WaitingAck>,
    /// Acknowledgements of the changes made since it was issued, for the next save.
    next: Vec<WaitingAck>,
}

impl SubscriptionSave {
    /// Notes a change whose acknowledgement `ack` waits for a save; true when that save is to
    /// be issued now (none is in flight), false when it is the next one.
    pub(crate) fn changed(&mut self, ack: WaitingAck) -> bool {
        self.next.push(ack);
        self.in_flight == 0
    }

    /// A save of `writes` writes is issued for the current state: the changes waiting are
    /// included. With no writes it is complete at once (returned).
    pub(crate) fn issue(&mut self, writes: u32) -> Option<Saved> {
        // No save is in flight: a change issues one only then, and so does a completion.
        self.covered.append(&mut self.next);
        self.in_flight = writes;
        self.failed = false;
        (writes == 0).then(|| self.take_covered())
    }

    /// One write of the save in flight was answered (`ok`: it succeeded); returns what the
    /// save releases once its last write is answered.
    pub(crate) fn answered(&mut self, ok: bool) -> Option<Saved> {
        if self.in_flight == 0 {
            return None;
        }
        self.in_flight -= 1;
        self.failed |= !ok;
        (self.in_flight == 0).then(|| self.take_covered())
    }

    /// Whether changes wait for a save and none is in flight: the next save is due.
    pub(crate) fn wants_save(&self) -> bool {
        self.in_flight == 0 && !self.next.is_empty()
    }

    /// Whether nothing is in flight or waiting (the save state can go).
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.next.is_empty()
    }

    /// Gives up the next save (its session ended or stopped being persistent): its
    /// acknowledgements are released, as `failed` says.
    pub(crate) fn abandon(&mut self, failed: bool) -> Saved {
        Saved {
            acks: std::mem::take(&mut self.next),
            failed,
        }
    }

    fn take_covered(&mut self) -> Saved {
        Saved {
            acks: std::mem::take(&mut self.covered),
            failed: std::mem::take(&mut self.failed),
        }
    }
}

impl Broker {
    /// Makes a persistent session's changed subscriptions durable before the acknowledgement
    /// `ack` goes out: at once when no save of the session is in flight, else with the next.
    pub(super) fn save_subscriptions(
        &mut self,
        session: SessionId,
        ack: WaitingAck,
        out: &mut Outbox,
    ) {
        if self.sessions.get(session).is_none() {
            // Nothing to save, so nothing to rely on.
            let saved = Saved {
                acks: vec![ack],
                failed: true,
            };
            self.release_subscription_acks(saved, out);
            return;
        }
        if self
            .subscription_saves
            .entry(session)
            .or_default()
            .changed(ack)
        {
            self.issue_subscription_save(session, out);
        }
    }

    /// Issues the save of a session's current subscriptions: its record and its consumer's
    /// filter subjects.
    fn issue_subscription_save(&mut self, r: SessionId, out: &mut Outbox) {
        if self.sessions.get(r).is_none() {
            // Its session is gone (callers check): never save a later session of its slot.
            if let Some(mut save) = self.subscription_saves.remove(&r) {
                self.release_subscription_acks(save.abandon(true), out);
            }
            return;
        }
        // The consumer takes its new filters now: a fleet session catches up from here.
        self.schedule_catch_up(r, BTreeSet::new());
        let writes = self.session_writes(r);
        let Some(save) = self.subscription_saves.get_mut(&r) else {
            return;
        };
        if let Some(saved) = save.issue(u32::try_from(writes.len()).unwrap_or(u32::MAX)) {
            self.subscription_saves.remove(&r);
            self.release_subscription_acks(saved, out);
            return;
        }
        let owner = RequestOwner::SubscriptionSave { session: r };
        for req in writes {
            self.request(req, owner, out);
        }
    }

    /// A write of the subscription save of `session` was answered (a timeout too); once the
    /// save is complete its acknowledgements go (failed if a write failed) and the next save
    /// is issued if changes wait for it.
    pub(super) fn on_subscriptions_saved(
        &mut self,
        session: SessionId,
        ok: bool,
        out: &mut Outbox,
    ) {
        let r = session;
        // `None`: the session ended (a later one may have its slot, with saves of its own).
        let persistent = self.sessions.get(session).map(|s| s.persistent);
        let Some(save) = self.subscription_saves.get_mut(&r) else {
            return;
        };
        let Some(saved) = save.answered(ok) else {
            return;
        };
        // With the session gone or no longer persistent no next save is needed: what waited
        // for it goes now (failed when the session is gone, as nothing was saved for it;
        // its connections closed first, so normally nobody is left to tell).
        let abandoned = match persistent {
            _ if !save.wants_save() => None,
            Some(true) => None,
            Some(false) => Some(save.abandon(false)),
            None => Some(save.abandon(true)),
        };
        // The next save goes out before the acknowledgements are released: releasing them
        // may read further packets of the connection, whose changes then wait for it.
        if save.is_idle() {
            self.subscription_saves.remove(&r);
        } else {
            self.issue_subscription_save(r, out);
        }
        self.release_subscription_acks(saved, out);
        if let Some(abandoned) = abandoned {
            self.release_subscription_acks(abandoned, out);
        }
    }

    /// Counts a save's answer for the pipeline entries waiting for it (failed entries close
    /// their connection as any failed write does) and completes the entries now ready. Those
    /// of connections gone are dropped, as their pipelines went with them.
    fn release_subscription_acks(&mut self, saved: Saved, out: &mut Outbox) {
        let mut conns: Vec<ConnId> = Vec::new();
        for (conn, token) in saved.acks {
            let Some(entry) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.pipeline.get_mut(token))
            else {
                continue;
            };
            entry.waiting = entry.waiting.saturating_sub(1);
            entry.failed |= saved.failed;
            if !conns.contains(&conn) {
                conns.push(conn);
            }
        }
        for conn in conns {
            self.drain_pipeline(Some(conn), out);
            // As in `acknowledge_subscription_change`: the room is given back once done.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.pipeline.release_room();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(token: u64) -> WaitingAck {
        (ConnId::new(1).expect("non-zero"), token)
    }

    #[test]
    fn changes_made_while_a_save_is_in_flight_share_the_next_save() {
        let mut save = SubscriptionSave::default();
        assert!(save.changed(ack(1)), "the first change is saved at once");
        assert_eq!(save.issue(2), None);
        assert!(!save.changed(ack(2)));
        assert!(!save.changed(ack(3)));
        assert!(!save.wants_save(), "not while a save is in flight");
        assert_eq!(save.answered(true), None, "one write of two");
        assert_eq!(
            save.answered(true),
            Some(Saved {
                acks: vec![ack(1)],
                failed: false
            })
        );
        assert!(save.wants_save());
        assert_eq!(save.issue(2), None);
        assert_eq!(save.answered(false), None);
        assert_eq!(
            save.answered(true),
            Some(Saved {
                acks: vec![ack(2), ack(3)],
                failed: true
            }),
            "one failed write fails the save"
        );
        assert!(save.is_idle());
        assert_eq!(save.answered(true), None, "a stray answer changes nothing");
    }

    #[test]
    fn a_save_without_writes_completes_at_once_and_an_abandoned_one_releases_its_acks() {
        let mut save = SubscriptionSave::default();
        assert!(save.changed(ack(1)));
        assert_eq!(
            save.issue(0),
            Some(Saved {
                acks: vec![ack(1)],
                failed: false
            })
        );
        assert!(save.changed(ack(2)));
        assert_eq!(save.issue(1), None);
        assert!(!save.changed(ack(3)));
        assert!(save.answered(true).is_some());
        assert_eq!(
            save.abandon(true),
            Saved {
                acks: vec![ack(3)],
                failed: true
            }
        );
        assert!(save.is_idle());
    }
}
