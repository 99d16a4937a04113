//! The order of a group's messages and who gets them: the writer's decisions for one
//! segment of a batch (the submissions, commits, proposals and acknowledgements between
//! two barriers), made in memory from what storage holds, before anything is written.
//!
//! Each operation is decided in arrival order and sees the effects of the ones before it:
//! a message after a commit in the same segment is checked against the new epoch, a
//! resubmitted message id gets the answer its first submission got, and an
//! acknowledgement is credited with each queue entry it is the first to name. A segment
//! decided in one piece and the same operations decided in several, with storage updated
//! in between, give the same result (the property test below).
//!
//! Storage still runs each commit's epoch compare-and-set when it writes the plan: these
//! decisions are made under the writers' lock, from storage read under it, so the two
//! agree, and a compare-and-set that fails anyway means the lock was not held: the batch
//! fails rather than misorder a group.

use std::collections::HashMap;

use crate::{DeliveryKind, DeviceId, Refusal};

/// Past epochs in which an application message is still accepted: a member may send just
/// as a commit lands; clients keep this many past epochs' secrets (openmls `max_past_epochs`).
pub const APPLICATION_EPOCH_WINDOW: u64 = 4;

/// The bounds on what waits for one device.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub messages_max: i64,
    /// Bytes of undelivered messages one device may have queued.
    pub bytes_max: i64,
    /// Percent of each bound above that one sender may hold (1 to 100).
    pub share_per_sender_percent: u32,
}

/// What waits in one device's queue, as the bounds need it: every kind of message counts,
/// though only application messages are ever refused or skipped for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueUsage {
    pub messages: i64,
    pub bytes: i64,
    /// Messages and bytes per sending device; the service's own proposals under device 0.
    pub by_sender: HashMap<DeviceId, (i64, i64)>,
}

impl QueueUsage {
    /// Counts a message of `bytes` from `sender` in (`sign` 1) or out (`sign` -1).
    pub fn count(&mut self, sender: DeviceId, bytes: i64, sign: i64) {
        self.messages += sign;
        self.bytes += sign * bytes;
        let entry = self.by_sender.entry(sender).or_default();
        entry.0 += sign;
        entry.1 += sign * bytes;
        if entry.0 <= 0 {
            self.by_sender.remove(&sender);
        }
    }
}

/// A group as storage has it: its epoch and its members' devices (sorted, once each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub epoch: u64,
    pub members: Vec<DeviceId>,
}

/// What storage recorded of an earlier submission: the message's sequence number (0 when
/// it had no recipient) and the group's epoch after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earlier {
    pub seq: i64,
    pub epoch: u64,
}

/// One operation of a segment, as the decisions need it; the bodies stay with the store,
/// which knows them by the operation's index.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// An application message, whose header the delivery service has checked.
    Submit {
        sender: DeviceId,
        message_id: &'a [u8],
        group_id: &'a [u8],
        epoch: u64,
        bytes: usize,
    },
    /// A verified commit, to apply if the group is still at `from_epoch`.
    Commit {
        sender: DeviceId,
        message_id: &'a [u8],
        group_id: &'a [u8],
        from_epoch: u64,
        /// The devices in the group after the commit.
        members_after: &'a [DeviceId],
        bytes: usize,
        /// The Welcome's size and the devices it is for.
        welcome: Option<(usize, &'a [DeviceId])>,
    },
    /// The service's own proposals (their sizes), to queue if the group is at `epoch`.
    Propose {
        group_id: &'a [u8],
        epoch: u64,
        proposals: &'a [usize],
    },
    /// A device acknowledges the entries of its queue with these sequence numbers.
    Ack { device: DeviceId, seqs: &'a [i64] },
}

/// A message to store: which operation's body (and which part of it) and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub op: usize,
    pub kind: DeliveryKind,
    /// The proposal's index among its operation's proposals; 0 otherwise.
    pub part: usize,
    /// `None` for the service's own proposals.
    pub sender: Option<DeviceId>,
    pub recipients: Vec<DeviceId>,
}

/// A message id to remember, with the message it produced (an index into the plan's
/// messages) and the group's epoch after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered<'a> {
    pub op: usize,
    pub sender: DeviceId,
    pub message_id: &'a [u8],
    pub message: Option<usize>,
    pub epoch: u64,
}

/// A change to a group that storage applies with a compare-and-set on `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub op: usize,
    pub group_id: Vec<u8>,
    pub from: u64,
    /// `from + 1` for a commit; `from` for proposals, which change the state only.
    pub to: u64,
    /// The members after a commit; `None` for proposals.
    pub members: Option<Vec<DeviceId>>,
}

/// The answer an operation gets once its segment is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refused(Refusal),
    /// Accepted in an earlier batch: the same answer again, nothing stored.
    Earlier(Earlier),
    /// Stored (or, `duplicate`, accepted earlier in this segment): its message is an index
    /// into the plan's messages, whose sequence number storage gives.
    Stored {
        message: Option<usize>,
        epoch: u64,
        duplicate: bool,
        /// Recipients whose queue did not take the message.
        skipped: u32,
    },
    /// An acknowledgement, by its index among the segment's acknowledgements.
    Acked(usize),
}

/// The segment's figures, for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Queue entries the plan adds.
    pub queued: i64,
    /// Messages stored, by kind, in the order of `DeliveryKind::ALL`.
    pub stored: [u64; 4],
    pub epochs_advanced: u64,
    /// Deliveries not queued because the recipient's queue was full.
    pub skipped: u64,
}

/// Everything a segment decided, for storage to write.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub messages: Vec<Planned>,
    pub remembered: Vec<Remembered<'a>>,
    pub changes: Vec<GroupChange>,
    /// Each acknowledged queue entry once, credited to the first acknowledgement naming it.
    pub acks: HashMap<(DeviceId, i64), usize>,
    pub ack_ops: usize,
    /// One per operation, in order.
    pub decisions: Vec<Decision>,
    pub figures: Figures,
}

/// What a segment must read before it is decided.
#[derive(Debug, Default)]
pub struct Needs<'a> {
    pub groups: Vec<&'a [u8]>,
    pub submissions: Vec<(DeviceId, &'a [u8])>,
}

/// The groups and earlier submissions `ops` need, each once.
pub fn needs<'a>(ops: &[Op<'a>]) -> Needs<'a> {
    let mut needs = Needs::default();
    for op in ops {
        match *op {
            Op::Submit {
                sender,
                message_id,
                group_id,
                ..
            }
            | Op::Commit {
                sender,
                message_id,
                group_id,
                ..
            } => {
                needs.groups.push(group_id);
                needs.submissions.push((sender, message_id));
            }
            Op::Propose { group_id, .. } => needs.groups.push(group_id),
            Op::Ack { .. } => {}
        }
    }
    needs.groups.sort_unstable();
    needs.groups.dedup();
    needs
}

/// The devices whose queue usage the decisions need and `usage` lacks: the members of
/// every group an application message goes to, and of every group after a commit (a
/// device a commit adds may get a message later in the segment).
pub fn usage_needed(
    ops: &[Op<'_>],
    groups: &HashMap<Vec<u8>, GroupView>,
    usage: &HashMap<DeviceId, QueueUsage>,
) -> Vec<DeviceId> {
    let mut devices: Vec<DeviceId> = Vec::new();
    for op in ops {
        match op {
            Op::Submit { group_id, .. } => {
                if let Some(group) = groups.get(*group_id) {
                    devices.extend(&group.members);
                }
            }
            Op::Commit { members_after, .. } => devices.extend(members_after.iter()),
            _ => {}
        }
    }
    devices.retain(|d| !usage.contains_key(d));
    devices.sort_unstable();
    devices.dedup();
    devices
}

/// A message id accepted in this segment: its message (an index into the plan's) and the
/// group's epoch after it.
type ThisSegment = (Option<usize>, u64);

/// The decisions of one segment, made one operation at a time.
pub struct Segment<'u, 'a> {
    bounds: QueueBounds,
    groups: HashMap<Vec<u8>, GroupView>,
    /// Per sending device, its message ids accepted before this segment.
    earlier: HashMap<DeviceId, HashMap<Vec<u8>, Earlier>>,
    /// Every queue a decision may read, kept current as messages are planned; on SQLite
    /// the writer keeps it from one batch to the next.
    usage: &'u mut HashMap<DeviceId, QueueUsage>,
    /// Message ids accepted in this segment: (message index, epoch).
    this: HashMap<(DeviceId, &'a [u8]), ThisSegment>,
    plan: Plan<'a>,
}

impl<'u, 'a> Segment<'u, 'a> {
    /// A segment over what storage holds: the groups and earlier submissions `needs`
    /// named, and the queue usage of at least the devices `usage_needed` named.
    pub fn new(
        bounds: QueueBounds,
        groups: HashMap<Vec<u8>, GroupView>,
        earlier: HashMap<(DeviceId, Vec<u8>), Earlier>,
        usage: &'u mut HashMap<DeviceId, QueueUsage>,
    ) -> Segment<'u, 'a> {
        let mut by_sender: HashMap<DeviceId, HashMap<Vec<u8>, Earlier>> = HashMap::new();
        for ((sender, id), found) in earlier {
            by_sender.entry(sender).or_default().insert(id, found);
        }
        Segment {
            bounds,
            groups,
            earlier: by_sender,
            usage,
            this: HashMap::new(),
            plan: Plan::default(),
        }
    }

    /// Decides the next operation.
    pub fn decide(&mut self, op: Op<'a>) {
        let index = self.plan.decisions.len();
        let decision = match op {
            Op::Submit {
                sender,
                message_id,
                group_id,
                epoch,
                bytes,
            } => self.submit(index, sender, message_id, group_id, epoch, bytes),
            Op::Commit {
                sender,
                message_id,
                group_id,
                from_epoch,
                members_after,
                bytes,
                welcome,
            } => {
                let commit = Commit {
                    sender,
                    group_id,
                    from_epoch,
                    members_after,
                    bytes,
                    welcome,
                };
                self.duplicate(sender, message_id)
                    .unwrap_or_else(|| self.commit(index, message_id, commit))
            }
            Op::Propose {
                group_id,
                epoch,
                proposals,
            } => self.propose(index, group_id, epoch, proposals),
            Op::Ack { device, seqs } => {
                let slot = self.plan.ack_ops;
                self.plan.ack_ops += 1;
                for seq in seqs {
                    self.plan.acks.entry((device, *seq)).or_insert(slot);
                }
                Decision::Acked(slot)
            }
        };
        self.plan.decisions.push(decision);
    }

    /// The plan, once every operation is decided.
    pub fn finish(self) -> Plan<'a> {
        self.plan
    }

    fn submit(
        &mut self,
        index: usize,
        sender: DeviceId,
        message_id: &'a [u8],
        group_id: &[u8],
        epoch: u64,
        bytes: usize,
    ) -> Decision {
        if let Some(answer) = self.duplicate(sender, message_id) {
            return answer;
        }
        let Some(group) = self.groups.get(group_id) else {
            return Decision::Refused(Refusal::UnknownGroup);
        };
        let current = group.epoch;
        if epoch > current || epoch + APPLICATION_EPOCH_WINDOW < current {
            return Decision::Refused(Refusal::WrongEpoch {
                message: epoch,
                current,
            });
        }
        if group.members.binary_search(&sender).is_err() {
            return Decision::Refused(Refusal::NotAMember);
        }
        let (recipients, skipped) = match self.recipients(&group.members, sender, bytes) {
            Ok(decided) => decided,
            Err(refusal) => return Decision::Refused(refusal),
        };
        self.plan.figures.skipped += u64::from(skipped);
        let message = self.plan_message(
            Planned {
                op: index,
                kind: DeliveryKind::Application,
                part: 0,
                sender: Some(sender),
                recipients,
            },
            bytes,
        );
        self.accept(index, sender, message_id, message, current, skipped)
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
        let bounds = &self.bounds;
        let share = |max: i64| {
            let percent = i128::from(bounds.share_per_sender_percent.clamp(1, 100));
            ((i128::from(max) * percent / 100) as i64).max(1)
        };
        let (share_messages, share_bytes) = (share(bounds.messages_max), share(bounds.bytes_max));
        let mut recipients = Vec::with_capacity(members.len());
        let (mut skipped, mut over_share) = (0u32, 0u32);
        for device in members.iter().copied().filter(|d| *d != sender) {
            // Storage read every member's usage (`usage_needed`); one it could not have
            // read is taken, and counted from the next segment on.
            let Some(usage) = self.usage.get(&device) else {
                recipients.push(device);
                continue;
            };
            if usage.messages >= bounds.messages_max
                || usage.bytes.saturating_add(bytes) > bounds.bytes_max
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

    fn commit(&mut self, index: usize, message_id: &'a [u8], c: Commit<'_>) -> Decision {
        let Some(group) = self.groups.get_mut(c.group_id) else {
            return Decision::Refused(Refusal::UnknownGroup);
        };
        if group.epoch != c.from_epoch {
            return Decision::Refused(Refusal::EpochConflict {
                current: group.epoch,
            });
        }
        let recipients: Vec<DeviceId> = group
            .members
            .iter()
            .copied()
            .filter(|d| *d != c.sender)
            .collect();
        let mut members = c.members_after.to_vec();
        members.sort_unstable();
        members.dedup();
        group.epoch = c.from_epoch + 1;
        group.members = members.clone();
        self.plan.changes.push(GroupChange {
            op: index,
            group_id: c.group_id.to_vec(),
            from: c.from_epoch,
            to: c.from_epoch + 1,
            members: Some(members),
        });
        self.plan.figures.epochs_advanced += 1;
        // Handshake messages are never refused for a full queue: a member that misses a
        // commit could never read the group again.
        let message = self.plan_message(
            Planned {
                op: index,
                kind: DeliveryKind::Commit,
                part: 0,
                sender: Some(c.sender),
                recipients,
            },
            c.bytes,
        );
        if let Some((bytes, welcomed)) = c.welcome {
            self.plan_message(
                Planned {
                    op: index,
                    kind: DeliveryKind::Welcome,
                    part: 0,
                    sender: Some(c.sender),
                    recipients: welcomed.to_vec(),
                },
                bytes,
            );
        }
        self.accept(index, c.sender, message_id, message, c.from_epoch + 1, 0)
    }

    fn propose(
        &mut self,
        index: usize,
        group_id: &[u8],
        epoch: u64,
        proposals: &[usize],
    ) -> Decision {
        let Some(group) = self.groups.get(group_id) else {
            return Decision::Refused(Refusal::UnknownGroup);
        };
        if group.epoch != epoch {
            return Decision::Refused(Refusal::EpochConflict {
                current: group.epoch,
            });
        }
        let recipients = group.members.clone();
        self.plan.changes.push(GroupChange {
            op: index,
            group_id: group_id.to_vec(),
            from: epoch,
            to: epoch,
            members: None,
        });
        let mut last = None;
        for (part, bytes) in proposals.iter().enumerate() {
            last = self.plan_message(
                Planned {
                    op: index,
                    kind: DeliveryKind::Proposal,
                    part,
                    sender: None,
                    recipients: recipients.clone(),
                },
                *bytes,
            );
        }
        Decision::Stored {
            message: last,
            epoch,
            duplicate: false,
            skipped: 0,
        }
    }

    /// The answer to a resubmission of an already accepted message id.
    fn duplicate(&self, sender: DeviceId, message_id: &[u8]) -> Option<Decision> {
        let earlier = self
            .earlier
            .get(&sender)
            .and_then(|ids| ids.get(message_id));
        if let Some(earlier) = earlier {
            return Some(Decision::Earlier(*earlier));
        }
        self.this
            .get(&(sender, message_id))
            .map(|(message, epoch)| Decision::Stored {
                message: *message,
                epoch: *epoch,
                duplicate: true,
                skipped: 0,
            })
    }

    /// Records an accepted message id so that a resubmission is recognised.
    fn accept(
        &mut self,
        index: usize,
        sender: DeviceId,
        message_id: &'a [u8],
        message: Option<usize>,
        epoch: u64,
        skipped: u32,
    ) -> Decision {
        self.this.insert((sender, message_id), (message, epoch));
        self.plan.remembered.push(Remembered {
            op: index,
            sender,
            message_id,
            message,
            epoch,
        });
        Decision::Stored {
            message,
            epoch,
            duplicate: false,
            skipped,
        }
    }

    /// Adds a message to the plan and counts it in its recipients' queues; `None`
    /// (nothing stored) when it has no recipient.
    fn plan_message(&mut self, message: Planned, bytes: usize) -> Option<usize> {
        if message.recipients.is_empty() {
            return None;
        }
        let figures = &mut self.plan.figures;
        figures.queued += message.recipients.len() as i64;
        let kind = DeliveryKind::ALL.iter().position(|k| *k == message.kind);
        figures.stored[kind.unwrap_or(0)] += 1;
        let sender = message.sender.unwrap_or(DeviceId(0));
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        // Only usage read from storage is kept current: a device first seen here is read
        // whole when a later segment needs it.
        for device in &message.recipients {
            if let Some(usage) = self.usage.get_mut(device) {
                usage.count(sender, bytes, 1);
            }
        }
        self.plan.messages.push(message);
        Some(self.plan.messages.len() - 1)
    }
}

/// A commit's fields, as `Segment::commit` decides them.
struct Commit<'a> {
    sender: DeviceId,
    group_id: &'a [u8],
    from_epoch: u64,
    members_after: &'a [DeviceId],
    bytes: usize,
    welcome: Option<(usize, &'a [DeviceId])>,
}

#[cfg(test)]
mod tests;
