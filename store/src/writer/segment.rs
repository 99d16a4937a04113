//! One segment of a writer batch: the submissions, commits, proposals and acknowledgements
//! between two barrier operations (device removal, expiry), applied with a number of
//! statements that does not grow with the segment, except for commits, which are rare.
//!
//! Three phases: read what the decisions need (groups and members, earlier submissions,
//! what waits in the recipients' queues) with a few set-based queries; let
//! `relais_core::ordering` decide every operation in order in memory; then write the
//! group changes (each an epoch compare-and-set), the new messages, queue entries,
//! submission records and acknowledgements a chunk at a time.

use std::collections::HashMap;

use relais_core::ordering::{
    self, Decision, Earlier, GroupChange, GroupView, Op, Plan, Planned, QueueBounds, Segment,
};
use relais_core::{DeliveryKind, DeviceId};

use super::sql::{Arg, Conn, Error};
use super::statements::{self, NewMessage, NewSubmission};
use super::{Accepted, Answer, CommitRequest, ProposalRequest, SubmitRequest, Submitted, Writer};
use crate::backend::Backend;
use crate::outlet::{CommittedMessage, Fanout};

/// An operation a segment applies.
pub(super) enum SegmentOp {
    Submit(SubmitRequest),
    Commit(CommitRequest),
    Propose(ProposalRequest),
    Ack { device: DeviceId, seqs: Vec<i64> },
}

impl SegmentOp {
    /// The operation as the decisions see it; `sizes` holds a proposal request's sizes.
    fn op<'a>(&'a self, sizes: &'a [usize]) -> Op<'a> {
        match self {
            SegmentOp::Submit(r) => Op::Submit {
                sender: r.sender,
                message_id: &r.message_id,
                group_id: &r.group_id,
                epoch: r.epoch,
                bytes: r.body.len(),
            },
            SegmentOp::Commit(r) => Op::Commit {
                sender: r.sender,
                message_id: &r.message_id,
                group_id: &r.group_id,
                from_epoch: r.from_epoch,
                members_after: &r.members_after,
                bytes: r.commit.len(),
                welcome: r.welcome.as_ref().map(|(w, to)| (w.len(), to.as_slice())),
            },
            SegmentOp::Propose(r) => Op::Propose {
                group_id: &r.group_id,
                epoch: r.epoch,
                proposals: sizes,
            },
            SegmentOp::Ack { device, seqs } => Op::Ack {
                device: *device,
                seqs,
            },
        }
    }

    /// The sizes of a proposal request's proposals; empty for the others.
    fn proposal_sizes(&self) -> Vec<usize> {
        match self {
            SegmentOp::Propose(r) => r.proposals.iter().map(|p| p.len()).collect(),
            _ => Vec::new(),
        }
    }
}

impl Writer {
    pub(super) async fn run_segment(
        &mut self,
        conn: &mut Conn,
        mut ops: Vec<SegmentOp>,
        answers: &mut Vec<Answer>,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<(), Error> {
        let sizes: Vec<Vec<usize>> = ops.iter().map(SegmentOp::proposal_sizes).collect();
        let plan = self.decide(conn, &ops, &sizes).await?;
        let figures = &plan.figures;
        self.stats.queued += figures.queued;
        for (total, n) in self.stats.kinds.iter_mut().zip(figures.stored) {
            *total += n;
        }
        self.stats.epochs += figures.epochs_advanced;
        self.stats.skipped += figures.skipped;
        for change in &plan.changes {
            apply_change(conn, change, &ops[change.op]).await?;
        }
        let submissions = new_submissions(&plan, &ops);
        let Plan {
            messages,
            acks,
            ack_ops,
            decisions,
            ..
        } = plan;
        let messages = new_messages(messages, &mut ops);
        let seqs = statements::insert_messages(conn, &messages).await?;
        statements::insert_queue(conn, &messages, &seqs).await?;
        statements::insert_submissions(conn, &submissions, &seqs).await?;
        let acked = self.remove_acknowledged(conn, &acks, ack_ops).await?;

        for decision in decisions {
            answers.push(answer(decision, &seqs, &acked));
        }
        let push = conn.backend() == Backend::Sqlite;
        for (message, seq) in messages.into_iter().zip(seqs) {
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

    /// Reads what the segment's decisions need (groups, earlier submissions, queue usage)
    /// and decides every operation; `sizes` holds each proposal request's sizes.
    async fn decide<'a>(
        &mut self,
        conn: &mut Conn,
        ops: &'a [SegmentOp],
        sizes: &'a [Vec<usize>],
    ) -> Result<Plan<'a>, Error> {
        let decided: Vec<Op<'a>> = ops.iter().zip(sizes).map(|(op, s)| op.op(s)).collect();
        let needs = ordering::needs(&decided);
        let groups: HashMap<Vec<u8>, GroupView> = statements::groups(conn, &needs.groups)
            .await?
            .into_iter()
            .map(|(id, (epoch, members))| (id, GroupView { epoch, members }))
            .collect();
        let earlier: HashMap<(DeviceId, Vec<u8>), Earlier> =
            statements::submissions(conn, &needs.submissions)
                .await?
                .into_iter()
                .map(|(key, (seq, epoch))| (key, Earlier { seq, epoch }))
                .collect();
        let unknown = ordering::usage_needed(&decided, &groups, &self.queue_usage);
        if !unknown.is_empty() {
            self.queue_usage
                .extend(statements::queue_usage(conn, &unknown).await?);
        }
        let bounds = QueueBounds {
            messages_max: self.options.queue_messages_max,
            bytes_max: self.options.queue_bytes_max,
            share_per_sender_percent: self.options.queue_share_per_sender_percent,
        };
        let mut segment = Segment::new(bounds, groups, earlier, &mut self.queue_usage);
        for op in decided {
            segment.decide(op);
        }
        Ok(segment.finish())
    }

    /// Removes the acknowledged entries that are still queued; returns how many each
    /// acknowledgement removed.
    async fn remove_acknowledged(
        &mut self,
        conn: &mut Conn,
        acks: &HashMap<(DeviceId, i64), usize>,
        ack_ops: usize,
    ) -> Result<Vec<u32>, Error> {
        let entries: Vec<(DeviceId, i64)> = acks.keys().copied().collect();
        // Only SQLite's writer keeps usage from one batch to the next.
        let sizes = conn.backend() == Backend::Sqlite && !self.queue_usage.is_empty();
        let (removed, sizes) = statements::remove_acknowledged(conn, &entries, sizes).await?;
        let mut acked = vec![0u32; ack_ops];
        for entry in &removed {
            acked[acks[entry]] += 1;
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
        Ok(acked)
    }
}

/// Writes a commit's new epoch, state and members, or proposals' state, if the group is
/// still at the epoch the decision read. The decisions were made under the writers' lock
/// from storage read under it, so the compare-and-set cannot miss unless something wrote
/// without the lock: the batch then fails rather than misorder the group.
async fn apply_change(conn: &mut Conn, change: &GroupChange, op: &SegmentOp) -> Result<(), Error> {
    let state = match op {
        SegmentOp::Commit(r) => &r.state,
        SegmentOp::Propose(r) => &r.state,
        _ => unreachable!("only commits and proposals change a group"),
    };
    let updated = conn
        .execute(
            "UPDATE groups SET epoch = $1, state = $2 WHERE group_id = $3 AND epoch = $4",
            &[
                Arg::Int(change.to as i64),
                Arg::Blob(state),
                Arg::Blob(&change.group_id),
                Arg::Int(change.from as i64),
            ],
        )
        .await?;
    if updated != 1 {
        return Err(Error::Invariant(
            "a group's epoch changed under the writers' lock",
        ));
    }
    if let Some(members) = &change.members {
        statements::set_members(conn, &change.group_id, members).await?;
    }
    Ok(())
}

/// The plan's messages with their bodies and senders, taken from their operations: an
/// application message's are moved (it is its operation's only message), a commit's and
/// proposals' are copied (one operation, several messages).
fn new_messages(planned: Vec<Planned>, ops: &mut [SegmentOp]) -> Vec<NewMessage> {
    planned
        .into_iter()
        .map(|m| {
            let (group_id, sender_user, sender_fingerprint, now_ms, body) = match &mut ops[m.op] {
                SegmentOp::Submit(r) => (
                    std::mem::take(&mut r.group_id),
                    std::mem::take(&mut r.sender_user),
                    std::mem::take(&mut r.sender_fingerprint),
                    r.now_ms,
                    std::mem::take(&mut r.body),
                ),
                SegmentOp::Commit(r) => {
                    let body = match (&r.welcome, m.kind) {
                        (Some((welcome, _)), DeliveryKind::Welcome) => welcome,
                        _ => &r.commit,
                    };
                    (
                        r.group_id.clone(),
                        r.sender_user.clone(),
                        r.sender_fingerprint.clone(),
                        r.now_ms,
                        body.clone(),
                    )
                }
                SegmentOp::Propose(r) => (
                    r.group_id.clone(),
                    String::new(),
                    String::new(),
                    r.now_ms,
                    r.proposals[m.part].clone(),
                ),
                SegmentOp::Ack { .. } => unreachable!("acknowledgements store no message"),
            };
            NewMessage {
                kind: m.kind,
                group_id,
                sender: m.sender,
                sender_user,
                sender_fingerprint,
                now_ms,
                body,
                recipients: m.recipients,
            }
        })
        .collect()
}

/// The message ids to remember, with the time of their operation.
fn new_submissions(plan: &Plan<'_>, ops: &[SegmentOp]) -> Vec<NewSubmission> {
    plan.remembered
        .iter()
        .map(|r| NewSubmission {
            sender: r.sender,
            message_id: r.message_id.to_vec(),
            message: r.message,
            epoch: r.epoch,
            now_ms: match &ops[r.op] {
                SegmentOp::Submit(s) => s.now_ms,
                SegmentOp::Commit(c) => c.now_ms,
                SegmentOp::Propose(p) => p.now_ms,
                SegmentOp::Ack { .. } => 0,
            },
        })
        .collect()
}

/// An operation's answer, with the sequence numbers storage gave the plan's messages.
fn answer(decision: Decision, seqs: &[i64], acked: &[u32]) -> Answer {
    let accepted = |seq, epoch, duplicate, skipped| {
        Answer::Submitted(Ok(Submitted {
            accepted: Accepted {
                seq,
                epoch,
                duplicate,
            },
            recipients_skipped: skipped,
        }))
    };
    match decision {
        Decision::Refused(refusal) => Answer::Submitted(Err(refusal)),
        Decision::Earlier(Earlier { seq, epoch }) => accepted(seq, epoch, true, 0),
        Decision::Stored {
            message,
            epoch,
            duplicate,
            skipped,
        } => accepted(message.map_or(0, |i| seqs[i]), epoch, duplicate, skipped),
        Decision::Acked(slot) => Answer::Acked(acked[slot]),
    }
}
