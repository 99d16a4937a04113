//! What a session last saw of the stored conversations and verified contacts, so that it
//! announces their changes as events: whatever changes the stored rows (a Welcome, a
//! conversation's info, a rename or a departure recorded by code this module does not
//! know) is announced the same way.

use std::collections::{BTreeMap, BTreeSet};

use super::events::{ConversationChange, Event};
use crate::state::Conversation;

/// The conversations and verification states the session has announced.
#[derive(Debug, Default)]
pub(crate) struct View {
    conversations: BTreeMap<Vec<u8>, Conversation>,
    /// Conversations this device left or was removed from (their rows may remain).
    left: BTreeSet<Vec<u8>>,
    /// Each contact the user verified once: whether their devices are still those confirmed.
    verified: BTreeMap<String, bool>,
}

impl View {
    pub(crate) fn new(conversations: Vec<Conversation>, verified: BTreeMap<String, bool>) -> View {
        View {
            conversations: conversations
                .into_iter()
                .map(|c| (c.group_id.clone(), c))
                .collect(),
            left: BTreeSet::new(),
            verified,
        }
    }

    /// A conversation's name as events give it: its title, or a short id until its name
    /// arrives (as `recv` shows it).
    pub(crate) fn name(&self, group_id: &[u8]) -> String {
        self.conversations
            .get(group_id)
            .map_or_else(|| short_id(group_id), |c| c.title.clone())
    }

    /// The changes from what was seen to `now`: conversations created (once their kind is
    /// known), renamed, or gone.
    pub(crate) fn conversations(&mut self, now: Vec<Conversation>) -> Vec<Event> {
        let mut events = Vec::new();
        let mut current: BTreeMap<Vec<u8>, Conversation> = BTreeMap::new();
        for conversation in now {
            let seen = self.conversations.get(&conversation.group_id);
            let was_named = seen.is_some_and(|c| c.kind != "unknown");
            if conversation.kind != "unknown" {
                if !was_named {
                    events.push(change(&conversation, ConversationChange::Created, None));
                } else if let Some(seen) = seen.filter(|s| s.title != conversation.title) {
                    let previous = Some(seen.title.clone());
                    events.push(change(&conversation, ConversationChange::Renamed, previous));
                }
            }
            current.insert(conversation.group_id.clone(), conversation);
        }
        for (group_id, gone) in &self.conversations {
            if !current.contains_key(group_id) && self.left.insert(group_id.clone()) {
                events.push(change(gone, ConversationChange::Left, None));
            }
        }
        self.conversations = current;
        events
    }

    /// This device was removed from a conversation (a commit took its device out): it
    /// left, once.
    pub(crate) fn removed(&mut self, group_id: &[u8]) -> Option<Event> {
        let conversation = self.conversations.get(group_id)?;
        self.left
            .insert(group_id.to_vec())
            .then(|| change(conversation, ConversationChange::Left, None))
    }

    /// The changes from the verification states seen to `now`: a contact verified anew,
    /// or whose devices changed since (a contact no longer verified at all is unverified).
    pub(crate) fn verification(&mut self, now: BTreeMap<String, bool>) -> Vec<Event> {
        let mut events = Vec::new();
        for (contact, verified) in &now {
            if self.verified.get(contact) != Some(verified) {
                events.push(Event::Verification {
                    contact: contact.clone(),
                    verified: *verified,
                });
            }
        }
        for (contact, was) in &self.verified {
            if *was && !now.contains_key(contact) {
                events.push(Event::Verification {
                    contact: contact.clone(),
                    verified: false,
                });
            }
        }
        self.verified = now;
        events
    }
}

fn change(
    conversation: &Conversation,
    change: ConversationChange,
    previous_name: Option<String>,
) -> Event {
    Event::Conversation {
        conversation: conversation.title.clone(),
        group_id: hex::encode(&conversation.group_id),
        change,
        kind: conversation.kind.clone(),
        previous_name,
    }
}

/// A name for a conversation whose real name has not arrived yet, as `recv` gives it.
pub(crate) fn short_id(group_id: &[u8]) -> String {
    hex::encode(&group_id[..group_id.len().min(4)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(id: u8, kind: &str, title: &str) -> Conversation {
        Conversation {
            group_id: vec![id; 16],
            kind: kind.into(),
            title: title.into(),
        }
    }

    fn changes(events: &[Event]) -> Vec<(String, ConversationChange, Option<String>)> {
        events
            .iter()
            .map(|e| match e {
                Event::Conversation {
                    conversation,
                    change,
                    previous_name,
                    ..
                } => (conversation.clone(), *change, previous_name.clone()),
                other => panic!("not a conversation change: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn conversations_are_announced_once_named_renamed_and_gone() {
        let mut view = View::new(vec![conversation(1, "group", "ops")], BTreeMap::new());
        assert!(
            view.conversations(vec![conversation(1, "group", "ops")])
                .is_empty()
        );
        // Joined from a Welcome: announced once the creator's info names it.
        let joined = conversation(2, "unknown", "02020202");
        let now = vec![conversation(1, "group", "ops"), joined];
        assert!(view.conversations(now).is_empty());
        assert_eq!(view.name(&[2; 16]), "02020202");
        let now = vec![
            conversation(1, "group", "ops"),
            conversation(2, "direct", "bob@x"),
        ];
        assert_eq!(
            changes(&view.conversations(now)),
            [("bob@x".into(), ConversationChange::Created, None)]
        );
        let now = vec![conversation(1, "group", "crisis")];
        assert_eq!(
            changes(&view.conversations(now)),
            [
                (
                    "crisis".into(),
                    ConversationChange::Renamed,
                    Some("ops".into())
                ),
                ("bob@x".into(), ConversationChange::Left, None),
            ]
        );
        assert_eq!(
            changes(&[view.removed(&[1; 16]).expect("left")]),
            [("crisis".into(), ConversationChange::Left, None)]
        );
        assert!(view.removed(&[1; 16]).is_none(), "once");
        assert!(view.removed(&[9; 16]).is_none(), "unknown here");
    }

    #[test]
    fn verification_changes_are_announced() {
        let states = |list: &[(&str, bool)]| -> BTreeMap<String, bool> {
            list.iter().map(|(c, v)| (c.to_string(), *v)).collect()
        };
        let mut view = View::new(Vec::new(), states(&[("bob@x", true)]));
        assert!(view.verification(states(&[("bob@x", true)])).is_empty());
        assert_eq!(
            view.verification(states(&[("bob@x", false), ("carol@x", true)])),
            [
                Event::Verification {
                    contact: "bob@x".into(),
                    verified: false
                },
                Event::Verification {
                    contact: "carol@x".into(),
                    verified: true
                },
            ]
        );
        assert_eq!(
            view.verification(states(&[("bob@x", false)])),
            [Event::Verification {
                contact: "carol@x".into(),
                verified: false
            }]
        );
    }
}
