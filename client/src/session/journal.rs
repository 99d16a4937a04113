//! What processing tells a running session beside the history rows it writes: each
//! membership change as data (who changed which devices of whom, at which epoch) and the
//! relay's answer to each submitted message. Entries are recorded only after the local
//! transaction that stored the change has committed, so a session never announces what
//! was not stored.

use std::collections::VecDeque;

use super::events::{DeliveryState, Member};

/// Entries kept between two looks of the session: it looks after every delivery and every
/// command, and one command records one entry per commit or message it submits, so this
/// is reached only by a command that submits thousands; past it entries are counted, and
/// the history still holds every line they would have announced.
const JOURNAL_MAX: usize = 4096;

/// A running session's link into the client: whether one runs, and what processing
/// committed since the session last looked. Without a session nothing is recorded.
#[derive(Debug, Default)]
pub(crate) struct Live {
    attached: bool,
    entries: VecDeque<Committed>,
    dropped: u64,
}

/// A change processing committed that history rows do not carry as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Committed {
    /// A commit merged into `group_id` (another member's, or this device's once accepted).
    Membership {
        group_id: Vec<u8>,
        actor: String,
        epoch: u64,
        added: Vec<Member>,
        removed: Vec<Member>,
    },
    /// The relay's answer to an application message this device submitted, or its loss.
    Delivery {
        group_id: Vec<u8>,
        message_id: Vec<u8>,
        state: DeliveryState,
        reason: Option<String>,
    },
}

impl Live {
    /// Whether a session runs on this client: deliveries are then processed as they
    /// arrive, so a command need not wait for more before it acts.
    pub(crate) fn attached(&self) -> bool {
        self.attached
    }

    pub(crate) fn attach(&mut self) {
        self.attached = true;
    }

    pub(crate) fn detach(&mut self) {
        *self = Live::default();
    }

    /// Records a committed change for the session, if one runs.
    pub(crate) fn record(&mut self, entry: Committed) {
        if !self.attached {
            return;
        }
        if self.entries.len() >= JOURNAL_MAX {
            self.dropped += 1;
            return;
        }
        self.entries.push_back(entry);
    }

    /// What was recorded since the last call, oldest first, and how many entries did not
    /// fit.
    pub(crate) fn take(&mut self) -> (Vec<Committed>, u64) {
        let entries = self.entries.drain(..).collect();
        (entries, std::mem::take(&mut self.dropped))
    }
}

/// The membership change between two states of a group's members (user and device key
/// in hex), if any device came or went.
pub(crate) fn membership(
    group_id: &[u8],
    actor: &str,
    epoch: u64,
    before: &[(String, String)],
    after: &[(String, String)],
) -> Option<Committed> {
    let difference = |from: &[(String, String)], to: &[(String, String)]| -> Vec<Member> {
        from.iter()
            .filter(|m| !to.contains(m))
            .map(|(user, device_key)| Member {
                user: user.clone(),
                device_key: device_key.clone(),
            })
            .collect()
    };
    let added = difference(after, before);
    let removed = difference(before, after);
    (!added.is_empty() || !removed.is_empty()).then(|| Committed::Membership {
        group_id: group_id.to_vec(),
        actor: actor.to_owned(),
        epoch,
        added,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8) -> Committed {
        Committed::Delivery {
            group_id: vec![n],
            message_id: vec![n],
            state: DeliveryState::Sent,
            reason: None,
        }
    }

    #[test]
    fn nothing_is_recorded_without_a_session_and_the_journal_is_bounded() {
        let mut live = Live::default();
        live.record(delivery(1));
        assert_eq!(live.take(), (Vec::new(), 0));
        live.attach();
        for n in 0..JOURNAL_MAX + 2 {
            live.record(delivery(n as u8));
        }
        let (entries, dropped) = live.take();
        assert_eq!((entries.len(), dropped), (JOURNAL_MAX, 2));
        assert_eq!(entries[1], delivery(1), "oldest first");
        assert_eq!(live.take(), (Vec::new(), 0), "taken once");
        live.record(delivery(9));
        live.detach();
        assert!(!live.attached());
        assert_eq!(live.take(), (Vec::new(), 0), "detaching forgets");
    }

    #[test]
    fn a_membership_change_names_the_devices_that_came_and_went() {
        let member = |user: &str, key: &str| (user.to_owned(), key.to_owned());
        let before = [member("alice@x", "aa"), member("bob@x", "bb")];
        let after = [member("alice@x", "aa"), member("carol@x", "cc")];
        let change = membership(&[7], "alice@x", 3, &before, &after).expect("a change");
        let device = |user: &str, key: &str| Member {
            user: user.into(),
            device_key: key.into(),
        };
        assert_eq!(
            change,
            Committed::Membership {
                group_id: vec![7],
                actor: "alice@x".into(),
                epoch: 3,
                added: vec![device("carol@x", "cc")],
                removed: vec![device("bob@x", "bb")],
            }
        );
        assert_eq!(membership(&[7], "alice@x", 4, &after, &after), None);
    }
}
