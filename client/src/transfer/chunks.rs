//! The shape of history on the wire: how a device cuts its conversations' entries into
//! chunks, newest first, and how the receiving device checks a chunk whole before it
//! imports anything of it (`docs/reference/history-transfer.md`).

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use relais_core::mls::governance;
use relais_protocol::pb;

use super::CHUNK_BYTES;
use crate::state::HistoryRow;

/// The largest entry text sent: one that fits a chunk on its own.
pub(super) const ENTRY_TEXT_BYTES_MAX: usize = CHUNK_BYTES - 1024;
/// Chunks one answer may announce: 10,000 entries of 1,000 conversations fit in far fewer.
const CHUNKS_MAX: u32 = 4_096;
/// Conversations one chunk may name.
const CONVERSATIONS_PER_CHUNK_MAX: usize = 1_000;
/// Entries one chunk may hold: a chunk of the smallest entries (empty texts, 16-byte ids)
/// holds about 8,000.
const ENTRIES_PER_CHUNK_MAX: usize = 20_000;
/// Longest message id accepted in an entry, as the relay bounds `message_id`.
const MESSAGE_ID_BYTES_MAX: usize = 64;

/// Entries to import, by conversation (its group id), each conversation's oldest first.
pub(super) type Imported = Vec<(Vec<u8>, Vec<HistoryRow>)>;

/// A conversation this device is in, as a chunk is checked against it.
pub(super) struct Here {
    pub(super) name: String,
    pub(super) users: BTreeSet<String>,
}

/// Checks a chunk for this device against the conversations it is in: its shape and
/// bounds, every conversation one of them, every entry's sender one of its members (or
/// none, for a line the sending device wrote). Gives the entries to import, or why not.
pub(super) fn check_chunk(
    chunk: &pb::HistoryChunk,
    here: &BTreeMap<Vec<u8>, Here>,
) -> Result<Imported, String> {
    if chunk.transfer_id.len() != 16 || chunk.total == 0 || chunk.total > CHUNKS_MAX {
        return Err("its transfer id or chunk count is malformed".into());
    }
    if chunk.index >= chunk.total {
        return Err(format!(
            "it says it is chunk {} of {}",
            chunk.index + 1,
            chunk.total
        ));
    }
    let entries: usize = chunk.conversations.iter().map(|c| c.entries.len()).sum();
    if chunk.conversations.len() > CONVERSATIONS_PER_CHUNK_MAX || entries > ENTRIES_PER_CHUNK_MAX {
        return Err("it holds more conversations or entries than a chunk may".into());
    }
    let mut imported = Vec::new();
    for conversation in &chunk.conversations {
        let Some(known) = here.get(&conversation.group_id) else {
            return Err(format!(
                "it names a conversation this device is not in ({}…)",
                hex::encode(&conversation.group_id[..conversation.group_id.len().min(4)])
            ));
        };
        let mut rows = Vec::with_capacity(conversation.entries.len());
        for entry in &conversation.entries {
            let member =
                governance::valid_user(&entry.sender) && known.users.contains(&entry.sender);
            if !entry.sender.is_empty() && !member {
                return Err(format!(
                    "it gives {:?} as the sender of a message in {:?}, who is not a member of it",
                    entry.sender, known.name
                ));
            }
            if !(1..=MESSAGE_ID_BYTES_MAX).contains(&entry.message_id.len())
                || entry.sent_at_ms <= 0
                || entry.text.len() > ENTRY_TEXT_BYTES_MAX
            {
                return Err(format!(
                    "it holds a malformed entry in {:?} (its id, time or length)",
                    known.name
                ));
            }
            rows.push(HistoryRow {
                group_id: conversation.group_id.clone(),
                sender: entry.sender.clone(),
                message_id: entry.message_id.clone(),
                sent_at_ms: entry.sent_at_ms,
                text: entry.text.clone(),
            });
        }
        imported.push((conversation.group_id.clone(), rows));
    }
    Ok(imported)
}

/// Cuts conversations (entries oldest first) into chunks of about `budget` bytes, newest
/// entries first, so that each chunk holds older entries of a conversation than the one
/// before; inside a chunk each conversation's entries stay oldest first. An entry larger
/// than `budget` travels alone.
pub(super) fn split(
    conversations: Vec<pb::HistoryConversation>,
    budget: usize,
) -> Vec<Vec<pb::HistoryConversation>> {
    let mut chunks = Vec::new();
    let mut current: Vec<pb::HistoryConversation> = Vec::new();
    let mut size = 0;
    for conversation in conversations {
        let group_id = conversation.group_id;
        let mut part: Vec<pb::HistoryEntry> = Vec::new();
        for entry in conversation.entries.into_iter().rev() {
            // An entry's framing, and its part's group id and framing when it starts one.
            let cost = |part: &[pb::HistoryEntry]| {
                entry.encoded_len()
                    + 8
                    + if part.is_empty() {
                        group_id.len() + 8
                    } else {
                        0
                    }
            };
            if size > 0 && size + cost(&part) > budget {
                if !part.is_empty() {
                    current.push(part_of(&group_id, std::mem::take(&mut part)));
                }
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            size += cost(&part);
            part.push(entry);
        }
        if !part.is_empty() {
            current.push(part_of(&group_id, part));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// A conversation's part of a chunk from its entries newest first.
fn part_of(group_id: &[u8], mut newest_first: Vec<pb::HistoryEntry>) -> pb::HistoryConversation {
    newest_first.reverse();
    pb::HistoryConversation {
        group_id: group_id.to_vec(),
        entries: newest_first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sender: &str, n: u8, text_bytes: usize) -> pb::HistoryEntry {
        pb::HistoryEntry {
            sender: sender.into(),
            message_id: vec![n; 16],
            sent_at_ms: 1_000 + i64::from(n),
            text: "x".repeat(text_bytes),
        }
    }

    fn conversation(id: u8, entries: Vec<pb::HistoryEntry>) -> pb::HistoryConversation {
        pb::HistoryConversation {
            group_id: vec![id; 16],
            entries,
        }
    }

    /// The message ids of a conversation across chunks, in the order they come.
    fn ids(chunks: &[Vec<pb::HistoryConversation>], id: u8) -> Vec<Vec<u8>> {
        chunks
            .iter()
            .flat_map(|chunk| chunk.iter().filter(|c| c.group_id == [id; 16]))
            .map(|c| c.entries.iter().map(|e| e.message_id[0]).collect())
            .collect()
    }

    #[test]
    fn chunks_stay_under_the_budget_and_come_newest_first() {
        let first: Vec<_> = (1..=30).map(|n| entry("alice@x", n, 100)).collect();
        let second: Vec<_> = (31..=35).map(|n| entry("", n, 100)).collect();
        let chunks = split(
            vec![
                conversation(1, first),
                conversation(2, second),
                conversation(3, Vec::new()),
            ],
            1_000,
        );
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|c| c.encoded_len()).sum();
            assert!(bytes <= 1_000, "{bytes} bytes");
        }
        let first = ids(&chunks, 1);
        assert!(first.len() > 2, "cut into several chunks: {first:?}");
        assert_eq!(first[0].last(), Some(&30), "the newest entries come first");
        // Every chunk's part holds entries older than the part before, oldest first.
        let flat: Vec<u8> = first.iter().rev().flatten().copied().collect();
        assert_eq!(flat, (1..=30).collect::<Vec<u8>>());
        assert_eq!(ids(&chunks, 2).concat(), (31..=35).collect::<Vec<u8>>());
        assert!(ids(&chunks, 3).is_empty(), "nothing to send, no part");

        let alone = split(
            vec![conversation(1, vec![entry("alice@x", 1, 5_000)])],
            1_000,
        );
        assert_eq!(
            alone.len(),
            1,
            "an entry larger than the budget travels alone"
        );
        assert!(split(Vec::new(), 1_000).is_empty());
    }

    fn here() -> BTreeMap<Vec<u8>, Here> {
        let users = ["alice@x", "bob@x"].map(String::from).into_iter().collect();
        [(
            vec![1; 16],
            Here {
                name: "ops".into(),
                users,
            },
        )]
        .into_iter()
        .collect()
    }

    fn chunk(conversations: Vec<pb::HistoryConversation>) -> pb::HistoryChunk {
        pb::HistoryChunk {
            request_id: vec![7; 16],
            requester_key: vec![8; 32],
            transfer_id: vec![9; 16],
            index: 0,
            total: 1,
            conversations,
        }
    }

    #[test]
    fn a_chunk_is_taken_whole_or_refused_with_the_reason() {
        let good = chunk(vec![conversation(
            1,
            vec![
                entry("bob@x", 1, 5),
                entry("", 2, 5),
                entry("alice@x", 3, 5),
            ],
        )]);
        let imported = check_chunk(&good, &here()).expect("accepted");
        assert_eq!(imported.len(), 1);
        let senders: Vec<&str> = imported[0].1.iter().map(|r| r.sender.as_str()).collect();
        assert_eq!(senders, ["bob@x", "", "alice@x"]);

        let refusal = |chunk: pb::HistoryChunk| check_chunk(&chunk, &here()).expect_err("refused");
        let elsewhere = chunk(vec![conversation(2, vec![entry("bob@x", 1, 5)])]);
        assert!(refusal(elsewhere).contains("a conversation this device is not in"));
        let stranger = chunk(vec![conversation(
            1,
            vec![entry("bob@x", 1, 5), entry("mallory@x", 2, 5)],
        )]);
        assert!(refusal(stranger).contains("\"mallory@x\" as the sender of a message in \"ops\""));
        let not_a_user = chunk(vec![conversation(1, vec![entry("*", 1, 5)])]);
        assert!(refusal(not_a_user).contains("who is not a member"));
        let mut past_the_end = good.clone();
        past_the_end.index = 1;
        assert!(refusal(past_the_end).contains("chunk 2 of 1"));
        let mut too_many = good.clone();
        too_many.total = CHUNKS_MAX + 1;
        assert!(refusal(too_many).contains("malformed"));
        let mut no_id = good.clone();
        no_id.conversations[0].entries[0].message_id.clear();
        assert!(refusal(no_id).contains("malformed entry"));
    }
}
