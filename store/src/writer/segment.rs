//! One segment of a writer batch: the submissions, commits, proposals and acknowledgements
//! between two barrier operations (device removal, expiry), applied with a number of
//! statements that does not grow with the segment, except for commits, which are rare.
//!
//! Three phases: read what the decisions need (groups and members, earlier submissions,
//! what waits in the recipients' queues) with a few set-based queries; decide every
//! operation in order in memory, mirroring each change so that later operations see
//! earlier ones (a message after a commit in the same batch is checked against the new
//! epoch), a full recipient or one the sender holds its share of skipped; then write the new
//! messages, queue entries, submission records and acknowledgements a chunk at a time.
//! Commits and proposals still run their epoch compare-and-set in storage as they are
//! decided: storage, not this memory, decides which commit wins.

use std::collections::{HashMap, HashSet};

use relais_core::{DeliveryKind, DeviceId, Refusal};

use super::sql::{Arg, Conn, Error};
use super::statements::{self, NewMessage, NewSubmission};
use super::{
    APPLICATION_EPOCH_WINDOW, Accepted, Answer, CommitRequest, ProposalRequest, SubmitRequest,
    Submitted, Writer,
};
use crate::backend::Backend;
use crate::outlet::{CommittedMessage, Fanout};

/// An operation a segment applies.
pub(super) enum SegmentOp {
    Submit(SubmitRequest),
    Commit(CommitRequest),
    Propose(ProposalRequest),
    Ack { device: DeviceId, seqs: Vec<i64> },
}

/// What the segment has read or decided so far.
#[derive(Default)]
struct Known {
    /// Each touched group's epoch and members, as storage has them plus this segment's changes.
    groups: HashMap<Vec<u8>, (u64, Vec<DeviceId>)>,
    /// Message ids accepted before this segment: (seq, epoch).
    earlier: HashMap<(DeviceId, Vec<u8>), (i64, u64)>,
    /// Message ids accepted in this segment: (message index, epoch).
    this: HashMap<(DeviceId, Vec<u8>), (Option<usize>, u64)>,
}

/// An answer that may need the sequence numbers assigned at write time.
enum Pending {
    Ready(Answer),
    Stored {
        message: Option<usize>,
        epoch: u64,
        duplicate: bool,
        /// Recipients whose full queue the message was not added to.
        skipped: u32,
    },
    /// An acknowledgement: its index among the segment's acknowledgements.
    Acked(usize),
}

/// The segment's writes, decided but not yet made.
#[derive(Default)]
struct Plan {
    messages: Vec<NewMessage>,
    submissions: Vec<NewSubmission>,
    /// Each acknowledged queue entry once, credited to the first acknowledgement naming it.
    acks: HashMap<(DeviceId, i64), usize>,
    ack_ops: usize,
    answers: Vec<Pending>,
}

impl Writer {
    pub(super) async fn run_segment(
        &mut self,
        conn: &mut Conn,
        ops: Vec<SegmentOp>,
        answers: &mut Vec<Answer>,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<(), Error> {
        let mut known = self.load(conn, &ops).await?;
        let mut plan = Plan::default();
        for op in ops {
            let pending = match op {
                SegmentOp::Submit(request) => self.decide_submit(&mut known, &mut plan, request),
                SegmentOp::Commit(request) => {
                    self.decide_commit(conn, &mut known, &mut plan, request)
                        .await?
                }
                SegmentOp::Propose(request) => {
                    self.decide_propose(conn, &mut known, &mut plan, request)
                        .await?
                }
                SegmentOp::Ack { device, seqs } => {
                    let slot = plan.ack_ops;
                    plan.ack_ops += 1;
                    for seq in seqs {
                        plan.acks.entry((device, seq)).or_insert(slot);
                    }
                    Pending::Acked(slot)
                }
            };
            plan.answers.push(pending);
        }

        let seqs = statements::insert_messages(conn, &plan.messages).await?;
        statements::insert_queue(conn, &plan.messages, &seqs).await?;
        statements::insert_submissions(conn, &plan.submissions, &seqs).await?;
        let entries: Vec<(DeviceId, i64)> = plan.acks.keys().copied().collect();
        // Only SQLite's writer keeps usage from one batch to the next.
        let sizes = conn.backend() == Backend::Sqlite && !self.queue_usage.is_empty();
        let (removed, sizes) = statements::remove_acknowledged(conn, &entries, sizes).await?;
        let mut acked = vec![0u32; plan.ack_ops];
        for entry in &removed {
            acked[plan.acks[entry]] += 1;
            if let Some(usage) = self.queue_usage.get_mut(&entry.0) {
                match sizes.get(&entry.1) {
                    Some((sender, bytes)) => usage.count(*sender, *bytes, -1),
                    // Unreadable only if the message is gone, which the entry forbids;
                    // reload rather than guess.
                    None => {
                        self.queue_usage.remove(&entry.0);
                    }
                }
            }
        }
        self.stats.queued -= removed.len() as i64;
        self.stats.acked += removed.len() as u64;

        for pending in plan.answers {
            answers.push(match pending {
                Pending::Ready(answer) => answer,
                Pending::Stored {
                    message,
                    epoch,
                    duplicate,
                    skipped,
                } => Answer::Submitted(Ok(Submitted {
                    accepted: Accepted {
                        seq: message.map_or(0, |i| seqs[i]),
                        epoch,
                        duplicate,
                    },
                    recipients_skipped: skipped,
                })),
                Pending::Acked(slot) => Answer::Acked(acked[slot]),
            });
        }
        let push = conn.backend() == Backend::Sqlite;
        for (message, seq) in plan.messages.into_iter().zip(seqs) {
            fanouts.push(if push {
                Fanout::Push(CommittedMessage {
                    seq,
                    kind: message.kind,
                    group_id: message.group_id,
                    sender_user: message.sender_user,
                    sender_fingerprint: message.sender_fingerprint,
                    accepted_at_ms: message.now_ms,
                    body: message.body,
                    recipients: message.recipients,
                })
            } else {
                Fanout::Wake(message.recipients)
            });
        }
        Ok(())
    }

    /// Reads the groups, earlier submissions and queue usage the segment's ops need.
    async fn load(&mut self, conn: &mut Conn, ops: &[SegmentOp]) -> Result<Known, Error> {
        let mut group_ids: Vec<&[u8]> = Vec::new();
        let mut keys: Vec<(DeviceId, &[u8])> = Vec::new();
        for op in ops {
            match op {
                SegmentOp::Submit(r) => {
                    group_ids.push(&r.group_id);
                    keys.push((r.sender, &r.message_id));
                }
                SegmentOp::Commit(r) => {
                    group_ids.push(&r.group_id);
                    keys.push((r.sender, &r.message_id));
                }
                SegmentOp::Propose(r) => group_ids.push(&r.group_id),
                SegmentOp::Ack { .. } => {}
            }
        }
        group_ids.sort_unstable();
        group_ids.dedup();
        let mut known = Known {
            groups: statements::groups(conn, &group_ids).await?,
            earlier: statements::submissions(conn, &keys).await?,
            this: HashMap::new(),
        };
        // Only application messages are refused or skipped for a full queue, so only
        // their groups' members' queues are needed.
        let mut unknown: HashSet<DeviceId> = HashSet::new();
        for op in ops {
            if let SegmentOp::Submit(r) = op
                && let Some((_, members)) = known.groups.get(&r.group_id)
            {
                unknown.extend(members.iter().filter(|d| !self.queue_usage.contains_key(d)));
            }
        }
        if !unknown.is_empty() {
            let unknown: Vec<DeviceId> = unknown.into_iter().collect();
            self.queue_usage
                .extend(statements::queue_usage(conn, &unknown).await?);
        }
        known.groups.shrink_to_fit();
        Ok(known)
    }

    fn decide_submit(&mut self, known: &mut Known, plan: &mut Plan, r: SubmitRequest) -> Pending {
        if let Some(pending) = known.duplicate(r.sender, &r.message_id) {
            return pending;
        }
        let refuse = |e| Pending::Ready(Answer::Submitted(Err(e)));
        let Some((current, members)) = known.groups.get(&r.group_id) else {
            return refuse(Refusal::UnknownGroup);
        };
        let current = *current;
        if r.epoch > current || r.epoch + APPLICATION_EPOCH_WINDOW < current {
            return refuse(Refusal::WrongEpoch {
                message: r.epoch,
                current,
            });
        }
        if !members.contains(&r.sender) {
            return refuse(Refusal::NotAMember);
        }
        let (recipients, skipped) = match self.recipients(members, r.sender, r.body.len()) {
            Ok(decided) => decided,
            Err(e) => return refuse(e),
        };
        self.stats.skipped += u64::from(skipped);
        let message = self.plan_message(
            plan,
            NewMessage {
                kind: DeliveryKind::Application,
                group_id: r.group_id,
                sender: Some(r.sender),
                sender_user: r.sender_user,
                sender_fingerprint: r.sender_fingerprint,
                now_ms: r.now_ms,
                body: r.body,
                recipients,
            },
        );
        known.accept(
            plan,
            r.sender,
            r.message_id,
            message,
            current,
            r.now_ms,
            skipped,
        )
    }

    /// Whom an application message of `bytes` from `sender` is queued for, and how many
    /// members are skipped. A recipient whose queue is full, or of which the sender holds
    /// its share already, is skipped, not a reason to refuse: the others should not wait
    /// on it, nor should one member who never reads mute a sender in every group they
    /// share (the skipped device sees a gap in the sender's generations). Refused: a
    /// message that no recipient takes, for the sender's share (`SenderQuota`) if that
    /// is what stopped any of them, else for full queues.
    fn recipients(
        &self,
        members: &[DeviceId],
        sender: DeviceId,
        bytes: usize,
    ) -> Result<(Vec<DeviceId>, u32), Refusal> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let options = &self.options;
        let share = |max: i64| {
            let percent = i128::from(options.queue_share_per_sender_percent.clamp(1, 100));
            ((i128::from(max) * percent / 100) as i64).max(1)
        };
        let (share_messages, share_bytes) = (
            share(options.queue_messages_max),
            share(options.queue_bytes_max),
        );
        let mut recipients = Vec::with_capacity(members.len());
        let (mut skipped, mut over_share) = (0u32, 0u32);
        for device in members.iter().copied().filter(|d| *d != sender) {
            // A device whose usage is not known here joined in this segment's commit: its
            // queue is checked from the next batch on.
            let Some(usage) = self.queue_usage.get(&device) else {
                recipients.push(device);
                continue;
            };
            if usage.messages >= options.queue_messages_max
                || usage.bytes.saturating_add(bytes) > options.queue_bytes_max
            {
                skipped += 1;
                continue;
            }
            let (held, held_bytes) = usage.by_sender.get(&sender).copied().unwrap_or_default();
            if held >= share_messages || held_bytes.saturating_add(bytes) > share_bytes {
                over_share += 1;
                continue;
            }
            recipients.push(device);
        }
        if recipients.is_empty() && over_share > 0 {
            return Err(Refusal::SenderQuota);
        }
        if recipients.is_empty() && skipped > 0 {
            return Err(Refusal::QueueFull);
        }
        Ok((recipients, skipped + over_share))
    }

    async fn decide_commit(
        &mut self,
        conn: &mut Conn,
        known: &mut Known,
        plan: &mut Plan,
        r: CommitRequest,
    ) -> Result<Pending, Error> {
        if let Some(pending) = known.duplicate(r.sender, &r.message_id) {
            return Ok(pending);
        }
        let new_epoch = r.from_epoch + 1;
        let updated = conn
            .execute(
                "UPDATE groups SET epoch = $1, state = $2 WHERE group_id = $3 AND epoch = $4",
                &[
                    Arg::Int(new_epoch as i64),
                    Arg::Blob(&r.state),
                    Arg::Blob(&r.group_id),
                    Arg::Int(r.from_epoch as i64),
                ],
            )
            .await?;
        let Some((epoch, members)) = known.groups.get_mut(&r.group_id) else {
            return Ok(Pending::Ready(Answer::Submitted(Err(
                Refusal::UnknownGroup,
            ))));
        };
        if updated == 0 {
            return Ok(Pending::Ready(Answer::Submitted(Err(
                Refusal::EpochConflict { current: *epoch },
            ))));
        }
        statements::set_members(conn, &r.group_id, &r.members_after).await?;
        let recipients: Vec<DeviceId> =
            members.iter().copied().filter(|d| *d != r.sender).collect();
        *epoch = new_epoch;
        *members = r.members_after;
        members.sort_unstable();
        members.dedup();
        self.stats.epochs += 1;
        // Handshake messages are never refused for a full queue: a member that misses a
        // commit could never read the group again.
        let message = self.plan_message(
            plan,
            NewMessage {
                kind: DeliveryKind::Commit,
                group_id: r.group_id.clone(),
                sender: Some(r.sender),
                sender_user: r.sender_user.clone(),
                sender_fingerprint: r.sender_fingerprint.clone(),
                now_ms: r.now_ms,
                body: r.commit,
                recipients,
            },
        );
        if let Some((welcome, welcomed)) = r.welcome {
            self.plan_message(
                plan,
                NewMessage {
                    kind: DeliveryKind::Welcome,
                    group_id: r.group_id,
                    sender: Some(r.sender),
                    sender_user: r.sender_user,
                    sender_fingerprint: r.sender_fingerprint,
                    now_ms: r.now_ms,
                    body: welcome,
                    recipients: welcomed,
                },
            );
        }
        Ok(known.accept(
            plan,
            r.sender,
            r.message_id,
            message,
            new_epoch,
            r.now_ms,
            0,
        ))
    }

    async fn decide_propose(
        &mut self,
        conn: &mut Conn,
        known: &mut Known,
        plan: &mut Plan,
        r: ProposalRequest,
    ) -> Result<Pending, Error> {
        let updated = conn
            .execute(
                "UPDATE groups SET state = $1 WHERE group_id = $2 AND epoch = $3",
                &[
                    Arg::Blob(&r.state),
                    Arg::Blob(&r.group_id),
                    Arg::Int(r.epoch as i64),
                ],
            )
            .await?;
        let Some((epoch, members)) = known.groups.get(&r.group_id) else {
            return Ok(Pending::Ready(Answer::Submitted(Err(
                Refusal::UnknownGroup,
            ))));
        };
        if updated == 0 {
            return Ok(Pending::Ready(Answer::Submitted(Err(
                Refusal::EpochConflict { current: *epoch },
            ))));
        }
        let recipients = members.clone();
        let mut last = None;
        for proposal in r.proposals {
            last = self.plan_message(
                plan,
                NewMessage {
                    kind: DeliveryKind::Proposal,
                    group_id: r.group_id.clone(),
                    sender: None,
                    sender_user: String::new(),
                    sender_fingerprint: String::new(),
                    now_ms: r.now_ms,
                    body: proposal,
                    recipients: recipients.clone(),
                },
            );
        }
        Ok(Pending::Stored {
            message: last,
            epoch: r.epoch,
            duplicate: false,
            skipped: 0,
        })
    }

    /// Adds a message to the plan and counts it; `None` (nothing stored) when it has no
    /// recipient.
    fn plan_message(&mut self, plan: &mut Plan, message: NewMessage) -> Option<usize> {
        if message.recipients.is_empty() {
            return None;
        }
        self.stats.queued += message.recipients.len() as i64;
        let kind_index = DeliveryKind::ALL.iter().position(|k| *k == message.kind);
        self.stats.kinds[kind_index.unwrap_or(0)] += 1;
        let sender = message.sender.unwrap_or(DeviceId(0));
        let bytes = i64::try_from(message.body.len()).unwrap_or(i64::MAX);
        for device in &message.recipients {
            if let Some(usage) = self.queue_usage.get_mut(device) {
                usage.count(sender, bytes, 1);
            }
        }
        plan.messages.push(message);
        Some(plan.messages.len() - 1)
    }
}

impl Known {
    /// The answer to a resubmission of an already accepted message id.
    fn duplicate(&self, sender: DeviceId, message_id: &[u8]) -> Option<Pending> {
        let key = (sender, message_id.to_vec());
        if let Some((seq, epoch)) = self.earlier.get(&key) {
            return Some(Pending::Ready(Answer::Submitted(Ok(Submitted {
                accepted: Accepted {
                    seq: *seq,
                    epoch: *epoch,
                    duplicate: true,
                },
                recipients_skipped: 0,
            }))));
        }
        self.this.get(&key).map(|(message, epoch)| Pending::Stored {
            message: *message,
            epoch: *epoch,
            duplicate: true,
            skipped: 0,
        })
    }

    /// Records an accepted message id so a resubmission is recognised.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        plan: &mut Plan,
        sender: DeviceId,
        message_id: Vec<u8>,
        message: Option<usize>,
        epoch: u64,
        now_ms: i64,
        skipped: u32,
    ) -> Pending {
        self.this
            .insert((sender, message_id.clone()), (message, epoch));
        plan.submissions.push(NewSubmission {
            sender,
            message_id,
            message,
            epoch,
            now_ms,
        });
        Pending::Stored {
            message,
            epoch,
            duplicate: false,
            skipped,
        }
    }
}
