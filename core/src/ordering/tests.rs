//! The ordering decisions, table by table, and the property that batching does not change
//! what is committed.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

const D1: DeviceId = DeviceId(1);
const D2: DeviceId = DeviceId(2);
const D3: DeviceId = DeviceId(3);
const D4: DeviceId = DeviceId(4);
const G: &[u8] = b"g";
const ROOMY: QueueBounds = QueueBounds {
    messages_max: 1_000_000,
    bytes_max: i64::MAX,
    share_per_sender_percent: 100,
};

fn group(epoch: u64, members: &[DeviceId]) -> HashMap<Vec<u8>, GroupView> {
    HashMap::from([(
        G.to_vec(),
        GroupView {
            epoch,
            members: members.to_vec(),
        },
    )])
}

fn submit<'a>(sender: DeviceId, id: &'a [u8], epoch: u64) -> Op<'a> {
    Op::Submit {
        sender,
        message_id: id,
        group_id: G,
        epoch,
        bytes: 100,
    }
}

/// Decides `ops` over group G (epoch 5, members 1 to 3) with every queue known and empty.
fn decide<'a>(bounds: QueueBounds, usage: &[(DeviceId, QueueUsage)], ops: &[Op<'a>]) -> Plan<'a> {
    let mut known: HashMap<DeviceId, QueueUsage> =
        [D1, D2, D3, D4].map(|d| (d, QueueUsage::default())).into();
    known.extend(usage.iter().cloned());
    let earlier = HashMap::from([((D1, b"old".to_vec()), Earlier { seq: 7, epoch: 4 })]);
    let mut segment = Segment::new(bounds, group(5, &[D1, D2, D3]), earlier, &mut known);
    for op in ops {
        segment.decide(*op);
    }
    segment.finish()
}

fn full(sender: DeviceId, messages: i64, bytes: i64) -> QueueUsage {
    QueueUsage {
        messages,
        bytes,
        by_sender: HashMap::from([(sender, (messages, bytes))]),
    }
}

#[test]
fn every_refusal_of_an_application_message() {
    let tight = QueueBounds {
        messages_max: 10,
        bytes_max: 10_000,
        share_per_sender_percent: 50,
    };
    let other = DeviceId(9);
    /// A name, the operation, the queues that are not empty, and the refusal.
    type Case<'a> = (&'a str, Op<'a>, Vec<(DeviceId, QueueUsage)>, Refusal);
    let cases: Vec<Case<'_>> = vec![
        (
            "unknown group",
            Op::Submit {
                sender: D1,
                message_id: b"m",
                group_id: b"nope",
                epoch: 5,
                bytes: 10,
            },
            vec![],
            Refusal::UnknownGroup,
        ),
        (
            "an epoch ahead of the group",
            submit(D1, b"m", 6),
            vec![],
            Refusal::WrongEpoch {
                message: 6,
                current: 5,
            },
        ),
        (
            "an epoch older than the window",
            submit(D1, b"m", 0),
            vec![],
            Refusal::WrongEpoch {
                message: 0,
                current: 5,
            },
        ),
        (
            "not a member",
            submit(D4, b"m", 5),
            vec![],
            Refusal::NotAMember,
        ),
        (
            "every recipient's queue full",
            submit(D1, b"m", 5),
            vec![(D2, full(other, 10, 100)), (D3, full(other, 1, 9_990))],
            Refusal::QueueFull,
        ),
        (
            "the sender's share of every recipient taken",
            submit(D1, b"m", 5),
            vec![(D2, full(D1, 5, 500)), (D3, full(D1, 1, 4_950))],
            Refusal::SenderQuota,
        ),
    ];
    for (name, op, usage, refusal) in cases {
        let plan = decide(tight, &usage, &[op]);
        assert_eq!(plan.decisions, vec![Decision::Refused(refusal)], "{name}");
        assert!(plan.messages.is_empty(), "{name}: nothing stored");
        assert!(
            plan.remembered.is_empty(),
            "{name}: a refused id is not remembered"
        );
    }
}

#[test]
fn application_messages_within_the_window_go_to_the_other_members() {
    for epoch in 1..=5 {
        let plan = decide(ROOMY, &[], &[submit(D1, b"m", epoch)]);
        assert_eq!(
            plan.decisions,
            vec![Decision::Stored {
                message: Some(0),
                epoch: 5,
                duplicate: false,
                skipped: 0
            }],
            "epoch {epoch}"
        );
        assert_eq!(plan.messages[0].recipients, vec![D2, D3]);
        assert_eq!(plan.messages[0].kind, DeliveryKind::Application);
    }
}

#[test]
fn a_full_recipient_is_skipped_not_a_reason_to_refuse() {
    let tight = QueueBounds {
        messages_max: 10,
        bytes_max: 10_000,
        share_per_sender_percent: 50,
    };
    let cases = [
        ("full queue", full(DeviceId(9), 10, 100)),
        ("full of bytes", full(DeviceId(9), 1, 9_950)),
        ("the sender's share", full(D1, 5, 500)),
    ];
    for (name, usage) in cases {
        let plan = decide(tight, &[(D2, usage)], &[submit(D1, b"m", 5)]);
        assert_eq!(plan.messages[0].recipients, vec![D3], "{name}");
        assert_eq!(plan.figures.skipped, 1, "{name}");
        assert!(
            matches!(plan.decisions[0], Decision::Stored { skipped: 1, .. }),
            "{name}"
        );
    }
}

#[test]
fn resubmitted_ids_get_their_first_answer() {
    let plan = decide(
        ROOMY,
        &[],
        &[
            submit(D1, b"old", 5),
            submit(D1, b"m", 5),
            submit(D1, b"m", 5),
            submit(D2, b"m", 5),
        ],
    );
    assert_eq!(
        plan.decisions,
        vec![
            Decision::Earlier(Earlier { seq: 7, epoch: 4 }),
            Decision::Stored {
                message: Some(0),
                epoch: 5,
                duplicate: false,
                skipped: 0
            },
            Decision::Stored {
                message: Some(0),
                epoch: 5,
                duplicate: true,
                skipped: 0
            },
            Decision::Stored {
                message: Some(1),
                epoch: 5,
                duplicate: false,
                skipped: 0
            },
        ],
        "ids are per sending device"
    );
    assert_eq!(plan.messages.len(), 2);
    assert_eq!(plan.remembered.len(), 2);
}

#[test]
fn a_commit_moves_the_epoch_for_what_follows_it() {
    let after = [D1, D2, D4];
    let welcomed = [D4];
    let commit = Op::Commit {
        sender: D1,
        message_id: b"c",
        group_id: G,
        from_epoch: 5,
        members_after: &after,
        bytes: 50,
        welcome: Some((70, &welcomed)),
    };
    let stale = Op::Commit {
        sender: D2,
        message_id: b"c2",
        group_id: G,
        from_epoch: 5,
        members_after: &after,
        bytes: 50,
        welcome: None,
    };
    let plan = decide(
        ROOMY,
        &[],
        &[commit, stale, submit(D4, b"m", 6), submit(D3, b"m", 6)],
    );
    assert_eq!(
        plan.decisions,
        vec![
            Decision::Stored {
                message: Some(0),
                epoch: 6,
                duplicate: false,
                skipped: 0
            },
            Decision::Refused(Refusal::EpochConflict { current: 6 }),
            Decision::Stored {
                message: Some(2),
                epoch: 6,
                duplicate: false,
                skipped: 0
            },
            Decision::Refused(Refusal::NotAMember),
        ]
    );
    let kinds: Vec<_> = plan.messages.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            DeliveryKind::Commit,
            DeliveryKind::Welcome,
            DeliveryKind::Application
        ]
    );
    assert_eq!(
        plan.messages[0].recipients,
        vec![D2, D3],
        "the members before"
    );
    assert_eq!(plan.messages[1].recipients, vec![D4], "the welcomed");
    assert_eq!(
        plan.messages[2].recipients,
        vec![D1, D2],
        "the members after"
    );
    assert_eq!(
        plan.changes,
        vec![GroupChange {
            op: 0,
            group_id: G.to_vec(),
            from: 5,
            to: 6,
            members: Some(vec![D1, D2, D4]),
        }]
    );
    assert_eq!(plan.figures.epochs_advanced, 1);
}

#[test]
fn commits_and_proposals_for_another_epoch_or_group_are_refused() {
    let members = [D1];
    let cases: Vec<(&str, Op<'_>, Refusal)> = vec![
        (
            "a commit from an older epoch",
            Op::Commit {
                sender: D1,
                message_id: b"c",
                group_id: G,
                from_epoch: 4,
                members_after: &members,
                bytes: 1,
                welcome: None,
            },
            Refusal::EpochConflict { current: 5 },
        ),
        (
            "a commit to an unknown group",
            Op::Commit {
                sender: D1,
                message_id: b"c",
                group_id: b"nope",
                from_epoch: 5,
                members_after: &members,
                bytes: 1,
                welcome: None,
            },
            Refusal::UnknownGroup,
        ),
        (
            "proposals for another epoch",
            Op::Propose {
                group_id: G,
                epoch: 4,
                proposals: &[10],
            },
            Refusal::EpochConflict { current: 5 },
        ),
        (
            "proposals for an unknown group",
            Op::Propose {
                group_id: b"nope",
                epoch: 5,
                proposals: &[10],
            },
            Refusal::UnknownGroup,
        ),
    ];
    for (name, op, refusal) in cases {
        let plan = decide(ROOMY, &[], &[op]);
        assert_eq!(plan.decisions, vec![Decision::Refused(refusal)], "{name}");
        assert!(
            plan.changes.is_empty() && plan.messages.is_empty(),
            "{name}"
        );
    }
}

#[test]
fn the_service_proposals_go_to_every_member_and_keep_the_epoch() {
    let plan = decide(
        ROOMY,
        &[],
        &[Op::Propose {
            group_id: G,
            epoch: 5,
            proposals: &[10, 20],
        }],
    );
    assert_eq!(plan.messages.len(), 2);
    assert!(plan.messages.iter().all(|m| m.recipients == [D1, D2, D3]
        && m.sender.is_none()
        && m.kind == DeliveryKind::Proposal));
    assert_eq!(plan.messages[1].part, 1);
    assert_eq!(plan.changes[0].to, 5, "proposals do not move the epoch");
    assert_eq!(
        plan.decisions,
        vec![Decision::Stored {
            message: Some(1),
            epoch: 5,
            duplicate: false,
            skipped: 0
        }]
    );
}

#[test]
fn each_acknowledged_entry_is_credited_to_the_first_acknowledgement_naming_it() {
    let plan = decide(
        ROOMY,
        &[],
        &[
            Op::Ack {
                device: D2,
                seqs: &[1, 2],
            },
            Op::Ack {
                device: D2,
                seqs: &[2, 3],
            },
            Op::Ack {
                device: D3,
                seqs: &[2],
            },
        ],
    );
    assert_eq!(
        plan.decisions,
        vec![Decision::Acked(0), Decision::Acked(1), Decision::Acked(2)]
    );
    assert_eq!(plan.ack_ops, 3);
    assert_eq!(
        plan.acks,
        HashMap::from([((D2, 1), 0), ((D2, 2), 0), ((D2, 3), 1), ((D3, 2), 2)])
    );
}

#[test]
fn planned_messages_count_in_the_queues_they_join() {
    let mut usage: HashMap<DeviceId, QueueUsage> = [(D2, QueueUsage::default())].into();
    let mut segment = Segment::new(ROOMY, group(5, &[D1, D2, D3]), HashMap::new(), &mut usage);
    segment.decide(submit(D1, b"m", 5));
    segment.finish();
    assert_eq!(usage[&D2], full(D1, 1, 100));
    assert!(
        !usage.contains_key(&D3),
        "a queue storage did not read is read whole when needed, not guessed"
    );
}

#[test]
fn a_segment_reads_its_groups_ids_and_every_queue_its_messages_may_join() {
    let after = [D3, D4];
    let ops = [
        submit(D1, b"a", 5),
        Op::Commit {
            sender: D3,
            message_id: b"c",
            group_id: b"h",
            from_epoch: 0,
            members_after: &after,
            bytes: 1,
            welcome: None,
        },
        Op::Ack {
            device: D2,
            seqs: &[1],
        },
    ];
    let needs = needs(&ops);
    assert_eq!(needs.groups, vec![G, b"h".as_slice()]);
    assert_eq!(
        needs.submissions,
        vec![(D1, b"a".as_slice()), (D3, b"c".as_slice())]
    );
    let known = HashMap::from([(D2, QueueUsage::default())]);
    assert_eq!(
        usage_needed(&ops, &group(5, &[D1, D2, D3]), &known),
        vec![D1, D3, D4]
    );
}

// --- Batching does not change what is committed --------------------------------------------

/// An operation as the property test generates it.
#[derive(Debug, Clone)]
enum Step {
    Submit {
        sender: DeviceId,
        id: u8,
        group: u8,
        epoch: u64,
        bytes: usize,
    },
    Commit {
        sender: DeviceId,
        id: u8,
        group: u8,
        from_epoch: u64,
        members: Vec<DeviceId>,
    },
    Propose {
        group: u8,
        epoch: u64,
    },
    Ack {
        device: DeviceId,
        seqs: Vec<i64>,
    },
}

/// What one operation was answered once its batch was written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Refused(Refusal),
    Accepted {
        seq: i64,
        epoch: u64,
        duplicate: bool,
        skipped: u32,
    },
    Acked(u32),
}

/// Storage as the writer leaves it, kept by the test: what a segment reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Storage {
    groups: std::collections::BTreeMap<Vec<u8>, (u64, Vec<DeviceId>)>,
    submissions: std::collections::BTreeMap<(DeviceId, Vec<u8>), (i64, u64)>,
    /// (device, seq)
    queue: BTreeSet<(DeviceId, i64)>,
    /// seq → (sender, bytes)
    messages: std::collections::BTreeMap<i64, (DeviceId, i64)>,
    next_seq: i64,
}

impl Storage {
    fn new() -> Storage {
        let mut storage = Storage {
            next_seq: 1,
            ..Storage::default()
        };
        storage.groups.insert(b"g0".to_vec(), (0, vec![D1, D2, D3]));
        storage.groups.insert(b"g1".to_vec(), (0, vec![D2, D3, D4]));
        storage
    }

    fn usage(&self, device: DeviceId) -> QueueUsage {
        let mut usage = QueueUsage::default();
        for (_, seq) in self.queue.range((device, i64::MIN)..=(device, i64::MAX)) {
            let (sender, bytes) = self.messages[seq];
            usage.count(sender, bytes, 1);
        }
        usage
    }

    /// Decides one batch and writes it, as the writer does; `kept` is the SQLite writer's
    /// usage kept between batches, `None` for PostgreSQL's, read again for each.
    fn apply(
        &mut self,
        steps: &[Step],
        kept: Option<&mut HashMap<DeviceId, QueueUsage>>,
    ) -> Vec<Answer> {
        let ids: Vec<[u8; 1]> = steps.iter().map(|s| [id_of(s)]).collect();
        let groups: Vec<[u8; 2]> = steps.iter().map(|s| [b'g', b'0' + group_of(s)]).collect();
        let bytes: Vec<usize> = vec![40, 60];
        let ops: Vec<Op<'_>> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| op(step, &ids[i], &groups[i], &bytes))
            .collect();
        let needs = needs(&ops);
        let views: HashMap<Vec<u8>, GroupView> = needs
            .groups
            .iter()
            .filter_map(|g| {
                self.groups.get(*g).map(|(epoch, members)| {
                    (
                        g.to_vec(),
                        GroupView {
                            epoch: *epoch,
                            members: members.clone(),
                        },
                    )
                })
            })
            .collect();
        let earlier: HashMap<(DeviceId, Vec<u8>), Earlier> = needs
            .submissions
            .iter()
            .filter_map(|(d, id)| {
                self.submissions
                    .get(&(*d, id.to_vec()))
                    .map(|(seq, epoch)| {
                        (
                            (*d, id.to_vec()),
                            Earlier {
                                seq: *seq,
                                epoch: *epoch,
                            },
                        )
                    })
            })
            .collect();
        let mut fresh = HashMap::new();
        let usage = match kept {
            Some(kept) => kept,
            None => &mut fresh,
        };
        for device in usage_needed(&ops, &views, usage) {
            usage.insert(device, self.usage(device));
        }
        let mut segment = Segment::new(ROOMY, views, earlier, usage);
        for op in &ops {
            segment.decide(*op);
        }
        let plan = segment.finish();
        let sizes: Vec<i64> = plan
            .messages
            .iter()
            .map(|m| match ops[m.op] {
                Op::Submit { bytes, .. } | Op::Commit { bytes, .. } => bytes as i64,
                Op::Propose { proposals, .. } => proposals[m.part] as i64,
                Op::Ack { .. } => unreachable!("acknowledgements store no message"),
            })
            .collect();
        self.write(plan, &sizes, usage)
    }

    fn write(
        &mut self,
        plan: Plan,
        sizes: &[i64],
        usage: &mut HashMap<DeviceId, QueueUsage>,
    ) -> Vec<Answer> {
        for change in &plan.changes {
            let (epoch, members) = self.groups.get_mut(&change.group_id).expect("group");
            assert_eq!(*epoch, change.from, "the compare-and-set agrees");
            *epoch = change.to;
            if let Some(after) = &change.members {
                *members = after.clone();
            }
        }
        let mut seqs = Vec::new();
        for (message, bytes) in plan.messages.iter().zip(sizes) {
            let seq = self.next_seq;
            self.next_seq += 1;
            seqs.push(seq);
            let sender = message.sender.unwrap_or(DeviceId(0));
            self.messages.insert(seq, (sender, *bytes));
            for device in &message.recipients {
                self.queue.insert((*device, seq));
            }
        }
        for r in &plan.remembered {
            let seq = r.message.map_or(0, |m| seqs[m]);
            self.submissions
                .insert((r.sender, r.message_id.to_vec()), (seq, r.epoch));
        }
        let mut acked = vec![0u32; plan.ack_ops];
        for (entry, slot) in &plan.acks {
            if self.queue.remove(entry) {
                acked[*slot] += 1;
                let (sender, bytes) = self.messages[&entry.1];
                if let Some(u) = usage.get_mut(&entry.0) {
                    u.count(sender, bytes, -1);
                }
            }
        }
        plan.decisions
            .into_iter()
            .map(|d| match d {
                Decision::Refused(r) => Answer::Refused(r),
                Decision::Earlier(e) => Answer::Accepted {
                    seq: e.seq,
                    epoch: e.epoch,
                    duplicate: true,
                    skipped: 0,
                },
                Decision::Stored {
                    message,
                    epoch,
                    duplicate,
                    skipped,
                } => Answer::Accepted {
                    seq: message.map_or(0, |m| seqs[m]),
                    epoch,
                    duplicate,
                    skipped,
                },
                Decision::Acked(slot) => Answer::Acked(acked[slot]),
            })
            .collect()
    }
}

fn id_of(step: &Step) -> u8 {
    match step {
        Step::Submit { id, .. } | Step::Commit { id, .. } => *id,
        _ => 0,
    }
}

fn group_of(step: &Step) -> u8 {
    match step {
        Step::Submit { group, .. } | Step::Commit { group, .. } | Step::Propose { group, .. } => {
            *group
        }
        Step::Ack { .. } => 0,
    }
}

fn op<'a>(step: &'a Step, id: &'a [u8], group: &'a [u8], bytes: &'a [usize]) -> Op<'a> {
    match step {
        Step::Submit {
            sender,
            epoch,
            bytes,
            ..
        } => Op::Submit {
            sender: *sender,
            message_id: id,
            group_id: group,
            epoch: *epoch,
            bytes: *bytes,
        },
        Step::Commit {
            sender,
            from_epoch,
            members,
            ..
        } => Op::Commit {
            sender: *sender,
            message_id: id,
            group_id: group,
            from_epoch: *from_epoch,
            members_after: members,
            bytes: 30,
            welcome: None,
        },
        Step::Propose { epoch, .. } => Op::Propose {
            group_id: group,
            epoch: *epoch,
            proposals: bytes,
        },
        Step::Ack { device, seqs } => Op::Ack {
            device: *device,
            seqs,
        },
    }
}

fn device() -> impl Strategy<Value = DeviceId> {
    (1i64..=4).prop_map(DeviceId)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (device(), 0u8..6, 0u8..2, 0u64..4, 1usize..200).prop_map(
            |(sender, id, group, epoch, bytes)| Step::Submit { sender, id, group, epoch, bytes }
        ),
        1 => (device(), 0u8..6, 0u8..2, 0u64..4, proptest::sample::subsequence(vec![D1, D2, D3, D4], 1..=4))
            .prop_map(|(sender, id, group, from_epoch, mut members)| {
                if !members.contains(&sender) {
                    members.push(sender);
                }
                Step::Commit { sender, id, group, from_epoch, members }
            }),
        1 => (0u8..2, 0u64..4).prop_map(|(group, epoch)| Step::Propose { group, epoch }),
        3 => (device(), proptest::collection::vec(1i64..40, 0..6))
            .prop_map(|(device, seqs)| Step::Ack { device, seqs }),
    ]
}

/// Keeps the acknowledgements a device could send: of messages committed before them.
/// (A batch writes its messages before it removes acknowledged entries, so an
/// acknowledgement of a later message in the same batch would count, where no client can
/// have received it.)
fn plausible(steps: Vec<Step>) -> Vec<Step> {
    let mut storage = Storage::new();
    let mut out = Vec::new();
    for step in steps {
        let step = match step {
            Step::Ack { device, seqs } => Step::Ack {
                device,
                seqs: seqs.into_iter().filter(|s| *s < storage.next_seq).collect(),
            },
            other => other,
        };
        storage.apply(std::slice::from_ref(&step), None);
        out.push(step);
    }
    out
}

/// Runs `steps` in the batches `cuts` makes; returns every answer and the storage left.
fn run(steps: &[Step], cuts: &[usize], keep_usage: bool) -> (Vec<Answer>, Storage) {
    let mut storage = Storage::new();
    let mut kept = HashMap::new();
    let mut answers = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([steps.len()]) {
        let end = end.clamp(start, steps.len());
        let batch = &steps[start..end];
        let usage = keep_usage.then_some(&mut kept);
        answers.extend(storage.apply(batch, usage));
        start = end;
    }
    (answers, storage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `store/tests/storage.rs` checks the same against the real writer with concurrent
    /// requests; here every split of a stream is tried against one decided whole.
    #[test]
    fn any_split_into_batches_commits_the_same(
        steps in proptest::collection::vec(step(), 1..40),
        mut cuts in proptest::collection::vec(0usize..40, 0..8),
        keep_usage in any::<bool>(),
    ) {
        let steps = plausible(steps);
        cuts.sort_unstable();
        let whole = run(&steps, &[], keep_usage);
        let split = run(&steps, &cuts, keep_usage);
        prop_assert_eq!(&split.0, &whole.0);
        prop_assert_eq!(&split.1, &whole.1);
    }
}
