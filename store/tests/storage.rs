//! The storage conformance suite: what every storage backend must do, checked through the
//! `Store` interface with concurrent requests so that the writer batches them.
//!
//! Results must not depend on how requests fall into batches, so every check here holds
//! whatever the batching turns out to be. Every check runs on both backends: SQLite in a
//! temporary directory, PostgreSQL in a fresh database (`relais_testkit::postgres`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use relais_core::Refusal;
use relais_store::{
    Accepted, CommitRequest, DeviceId, Durability, Location, Store, StoreOptions, SubmitError,
    SubmitRequest,
};
use relais_testkit::postgres;

const GROUP: &[u8] = b"group-one";

/// Where a test's store lives; dropping it removes the database.
struct Db {
    location: Location,
    _dir: tempfile::TempDir,
    _postgres: Option<postgres::Database>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        Db {
            location: Location::Sqlite(dir.path().join("relais.db")),
            _dir: dir,
            _postgres: None,
        }
    }

    async fn postgres() -> Option<Db> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = postgres::Database::create(dir.path()).await?;
        Some(Db {
            location: database.location(),
            _dir: dir,
            _postgres: Some(database),
        })
    }
}

async fn open(db: &Db, queue_messages_max: i64) -> Store {
    open_with(db, queue_messages_max, i64::MAX, 100).await
}

/// A store with all three queue bounds: messages, bytes, and one sender's percent share.
async fn open_with(db: &Db, queue_messages_max: i64, queue_bytes_max: i64, share: u32) -> Store {
    let options = StoreOptions {
        durability: Durability::Full,
        batch_max: 512,
        queue_messages_max,
        queue_bytes_max,
        queue_share_per_sender_percent: share,
        catch_up: std::time::Duration::from_secs(30),
    };
    Store::open(&db.location, options, Arc::new(()))
        .await
        .expect("open the store")
}

/// Runs each conformance check once per backend, as tests named `CHECK::sqlite` and
/// `CHECK::postgres`.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test]
            async fn sqlite() {
                super::$check(&super::Db::sqlite()).await;
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::Db::postgres().await {
                    super::$check(&db).await;
                }
            }
        }
    )*};
}

/// A group at epoch 1 whose members are `members` (the first one creates it and adds the
/// others, who would join from a Welcome: their queues start empty).
async fn group(store: &Store, members: &[i64]) {
    assert!(
        store
            .create_group(GROUP, 0, b"state-0", DeviceId(members[0]), 1)
            .await
            .expect("create group")
    );
    let accepted = store
        .commit(commit(members[0], b"add-everyone", 0, members))
        .await
        .expect("the first commit is accepted");
    assert_eq!(accepted.epoch, 1);
}

fn commit(sender: i64, id: &[u8], from_epoch: u64, members: &[i64]) -> CommitRequest {
    CommitRequest {
        sender: DeviceId(sender),
        sender_user: format!("user{sender}@example.gouv.fr"),
        sender_fingerprint: format!("fp{sender}"),
        message_id: id.to_vec(),
        group_id: GROUP.to_vec(),
        from_epoch,
        state: format!("state-{}", from_epoch + 1).into_bytes(),
        members_after: members.iter().map(|d| DeviceId(*d)).collect(),
        commit: Bytes::from(format!("commit {}", String::from_utf8_lossy(id))),
        welcome: None,
        now_ms: 2,
    }
}

fn message(sender: i64, id: &str, epoch: u64) -> SubmitRequest {
    SubmitRequest {
        sender: DeviceId(sender),
        sender_user: format!("user{sender}@example.gouv.fr"),
        sender_fingerprint: format!("fp{sender}"),
        message_id: id.as_bytes().to_vec(),
        group_id: GROUP.to_vec(),
        epoch,
        body: Bytes::from(format!("ciphertext {id}")),
        now_ms: 3,
    }
}

/// Sequence numbers in a device's queue, oldest first.
async fn queue(store: &Store, device: i64) -> Vec<(i64, Vec<u8>)> {
    store
        .queue_page(DeviceId(device), 0, 10_000)
        .await
        .expect("read queue")
        .into_iter()
        .map(|m| (m.seq, m.body))
        .collect()
}

async fn concurrent_submissions_are_stored_once_each_in_order_for_every_recipient(db: &Db) {
    let store = open(db, 10_000).await;
    group(&store, &[1, 2, 3]).await;
    let sends = (0..200).map(|i| store.submit(message(1 + i % 2, &format!("m{i}"), 1)));
    let results: Vec<Accepted> = join_all(sends)
        .await
        .into_iter()
        .map(|r| r.expect("accepted"))
        .collect();
    let mut seqs: Vec<i64> = results.iter().map(|a| a.seq).collect();
    assert!(results.iter().all(|a| a.epoch == 1 && !a.duplicate));
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        200,
        "every message gets its own sequence number"
    );

    // Device 3 gets all 200, device 1 the 100 from device 2, each body under its own seq.
    let third = queue(&store, 3).await;
    assert_eq!(third.len(), 200);
    for (result, i) in results.iter().zip(0..) {
        let body = format!("ciphertext m{i}").into_bytes();
        assert!(
            third.contains(&(result.seq, body)),
            "m{i} at {}",
            result.seq
        );
    }
    let first = queue(&store, 1).await;
    assert_eq!(first.len(), 100);
    assert!(
        first.windows(2).all(|w| w[0].0 < w[1].0),
        "in sequence order"
    );

    // A resubmission, alone or many at once, is recognised and stores nothing.
    let again =
        join_all((0..200).map(|i| store.submit(message(1 + i % 2, &format!("m{i}"), 1)))).await;
    for (result, original) in again.into_iter().zip(&results) {
        let result = result.expect("resubmission answered");
        assert!(result.duplicate);
        assert_eq!((result.seq, result.epoch), (original.seq, original.epoch));
    }
    assert_eq!(queue(&store, 3).await.len(), 200);
    store.close().await;
}

async fn the_same_message_id_twice_at_once_is_stored_once(db: &Db) {
    let store = open(db, 10_000).await;
    group(&store, &[1, 2]).await;
    let (a, b) = tokio::join!(
        store.submit(message(1, "same", 1)),
        store.submit(message(1, "same", 1))
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.seq, b.seq);
    assert!(a.duplicate != b.duplicate, "exactly one is the original");
    assert_eq!(queue(&store, 2).await.len(), 1);
    store.close().await;
}

async fn commits_are_ordered_by_epoch_and_messages_checked_against_it(db: &Db) {
    let store = open(db, 10_000).await;
    group(&store, &[1, 2, 3]).await;

    // Two members commit on epoch 1 at once: exactly one wins.
    let (a, b) = tokio::join!(
        store.commit(commit(1, b"c1", 1, &[1, 2, 3])),
        store.commit(commit(2, b"c2", 1, &[1, 2, 3]))
    );
    let (won, lost) = match (a, b) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("exactly one commit must win: {other:?}"),
    };
    assert_eq!(won.epoch, 2);
    assert!(
        matches!(
            lost,
            SubmitError::Refused(Refusal::EpochConflict { current: 2 })
        ),
        "{lost:?}"
    );
    assert_eq!(
        store.group(GROUP).await.expect("group").map(|g| g.0),
        Some(2)
    );

    // A commit removing device 3, and messages right behind it.
    let (removed, after, stale, far) = tokio::join!(
        store.commit(commit(1, b"c3", 2, &[1, 2])),
        store.submit(message(2, "after", 3)),
        store.submit(message(2, "stale", 9)),
        store.submit(message(3, "from-removed", 3)),
    );
    assert_eq!(removed.expect("commit").epoch, 3);
    // Whether "after" landed in the commit's batch or the next, it sees epoch 3.
    assert_eq!(after.expect("message at the new epoch").epoch, 3);
    assert!(matches!(
        stale,
        Err(SubmitError::Refused(Refusal::WrongEpoch { message: 9, .. }))
    ));
    assert!(
        matches!(far, Err(SubmitError::Refused(Refusal::NotAMember))),
        "{far:?}"
    );
    let unknown = store
        .submit(SubmitRequest {
            group_id: b"nobody".to_vec(),
            ..message(1, "lost", 1)
        })
        .await;
    assert!(matches!(
        unknown,
        Err(SubmitError::Refused(Refusal::UnknownGroup))
    ));
    store.close().await;
}

async fn acknowledgements_remove_each_entry_once_and_free_the_message(db: &Db) {
    let store = open(db, 10_000).await;
    group(&store, &[1, 2, 3]).await;
    let m = store.submit(message(1, "m", 1)).await.expect("accepted");
    let (queued_before, _) = store.queue_stats().await.expect("stats");

    // The same entry acknowledged twice at once, and a sequence that is not queued.
    let (a, b, c) = tokio::join!(
        store.acknowledge(DeviceId(2), vec![m.seq, m.seq]),
        store.acknowledge(DeviceId(2), vec![m.seq]),
        store.acknowledge(DeviceId(2), vec![m.seq + 1000]),
    );
    let removed = a.expect("ack") + b.expect("ack");
    assert_eq!(removed, 1);
    assert_eq!(c.expect("ack of nothing"), 0);
    assert!(queue(&store, 3).await.iter().any(|(seq, _)| *seq == m.seq));
    assert_eq!(
        store
            .acknowledge(DeviceId(3), vec![m.seq])
            .await
            .expect("ack"),
        1
    );
    let (queued_after, _) = store.queue_stats().await.expect("stats");
    assert_eq!(queued_after, queued_before - 2);
    // Once everyone has it, the message is gone, and its number is never given again,
    // not even after a restart.
    let oldest = store
        .metrics_figures()
        .await
        .expect("figures")
        .oldest_accepted_ms;
    assert_eq!(oldest, None, "a message outlived its queue entries");
    store.close().await;
    let store = open(db, 10_000).await;
    let next = store.submit(message(1, "next", 1)).await.expect("accepted");
    assert!(next.seq > m.seq);
    assert_eq!(
        store.submission(DeviceId(1), b"m").await.expect("lookup"),
        Some((m.seq, 1)),
        "the id is still remembered after delivery"
    );
    store.close().await;
}

async fn a_full_queue_refuses_application_messages_but_never_commits(db: &Db) {
    let store = open(db, 3).await;
    group(&store, &[1, 2]).await;
    let results = join_all((0..4).map(|i| store.submit(message(1, &format!("m{i}"), 1)))).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(SubmitError::Refused(Refusal::QueueFull))))
        .count();
    assert_eq!((accepted, full), (3, 1));
    // A commit still goes through, past the limit.
    store
        .commit(commit(1, b"c", 1, &[1, 2]))
        .await
        .expect("commits are never refused for a full queue");
    let queued = queue(&store, 2).await;
    assert_eq!(queued.len(), 4);
    // Acknowledging makes room again.
    let seqs: Vec<i64> = queued.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(store.acknowledge(DeviceId(2), seqs).await.expect("ack"), 4);
    store
        .submit(message(1, "m-after", 2))
        .await
        .expect("room again after acknowledging");
    store.close().await;
}

/// One recipient's full queue does not hold the group's other members hostage: the message
/// is stored for them, the full device misses it, and it gets the next once it has read.
async fn a_full_recipient_does_not_block_the_others(db: &Db) {
    let store = open(db, 3).await;
    group(&store, &[1, 2, 3]).await;
    for i in 0..3 {
        store
            .submit(message(1, &format!("m{i}"), 1))
            .await
            .expect("room for everyone");
    }
    // Device 2 reads and acknowledges; device 3 does not, and its queue is full.
    let read: Vec<i64> = queue(&store, 2).await.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(store.acknowledge(DeviceId(2), read).await.expect("ack"), 3);
    let past = store
        .enqueue_submit(message(1, "past-full", 1))
        .await
        .expect("queued to the writer")
        .await
        .expect("stored for the others");
    assert!(past.accepted.seq > 0);
    assert_eq!(past.recipients_skipped, 1, "the sender is told");
    let bodies = |q: Vec<(i64, Vec<u8>)>| -> Vec<String> {
        q.into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .collect()
    };
    assert_eq!(bodies(queue(&store, 2).await), ["ciphertext past-full"]);
    assert_eq!(
        queue(&store, 3).await.len(),
        3,
        "nothing added to the full queue"
    );
    let read: Vec<i64> = queue(&store, 3).await.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(store.acknowledge(DeviceId(3), read).await.expect("ack"), 3);
    store
        .submit(message(1, "after", 1))
        .await
        .expect("room again");
    assert_eq!(bodies(queue(&store, 3).await), ["ciphertext after"]);
    store.close().await;
}

/// One sender holds at most its share of a recipient's queue, by count: past it, its own
/// messages are refused, and other senders still reach the recipient.
async fn one_sender_holds_at_most_its_share_of_a_queue(db: &Db) {
    let store = open_with(db, 4, i64::MAX, 50).await;
    group(&store, &[1, 2, 3]).await;
    for i in 0..2 {
        store
            .submit(message(1, &format!("m{i}"), 1))
            .await
            .expect("within the share");
    }
    assert!(matches!(
        store.submit(message(1, "m2", 1)).await,
        Err(SubmitError::Refused(Refusal::SenderQuota))
    ));
    store
        .submit(message(2, "other", 1))
        .await
        .expect("another sender still reaches them");
    assert_eq!(queue(&store, 3).await.len(), 3);
    // Reading frees the share.
    let read: Vec<i64> = queue(&store, 2).await.iter().map(|(seq, _)| *seq).collect();
    store.acknowledge(DeviceId(2), read).await.expect("ack");
    let read: Vec<i64> = queue(&store, 3).await.iter().map(|(seq, _)| *seq).collect();
    store.acknowledge(DeviceId(3), read).await.expect("ack");
    store
        .submit(message(1, "m3", 1))
        .await
        .expect("room in the share again");
    store.close().await;
}

/// A member who never reads does not mute a sender: once the sender holds its share of
/// that member's queue, the member is skipped for it, and the group's others still get
/// its messages.
async fn a_silent_recipient_does_not_mute_a_sender(db: &Db) {
    let store = open_with(db, 4, i64::MAX, 50).await;
    group(&store, &[1, 2, 3]).await;
    for i in 0..4 {
        let accepted = store
            .enqueue_submit(message(1, &format!("m{i}"), 1))
            .await
            .expect("enqueue")
            .await
            .expect("device 2 reads, so the message is always stored");
        assert_eq!(
            accepted.recipients_skipped,
            u32::from(i >= 2),
            "device 3 is skipped once device 1 holds its share of 3's queue"
        );
        let read: Vec<i64> = queue(&store, 2).await.iter().map(|(seq, _)| *seq).collect();
        store.acknowledge(DeviceId(2), read).await.expect("ack");
    }
    assert_eq!(
        queue(&store, 3).await.len(),
        2,
        "device 3 holds its share, no more"
    );
    store.close().await;
}

/// A queue holds at most `queue_bytes_max` bytes of messages, whatever their number.
async fn a_queue_holds_at_most_its_bytes(db: &Db) {
    // Each body is 13 bytes ("ciphertext mN"): four fit in 60, a fifth does not.
    let store = open_with(db, 1_000, 60, 100).await;
    group(&store, &[1, 2]).await;
    for i in 0..4 {
        store
            .submit(message(1, &format!("m{i}"), 1))
            .await
            .expect("within the bytes");
    }
    assert!(matches!(
        store.submit(message(1, "m4", 1)).await,
        Err(SubmitError::Refused(Refusal::QueueFull))
    ));
    store.close().await;
}

async fn retention_expires_old_messages_and_forgets_old_ids(db: &Db) {
    let store = open(db, 10_000).await;
    group(&store, &[1, 2]).await;
    let old = store.submit(message(1, "old", 1)).await.expect("old"); // accepted at 3 ms
    let mut late = message(1, "late", 1);
    late.now_ms = 10;
    let late = store.submit(late).await.expect("late");
    // Messages accepted before 5 ms go, with their queue entries; ids older than 5 ms too.
    let expired = store.expire(5, 5).await.expect("expire");
    assert!(
        expired >= 1,
        "the message accepted at 3 ms expires: {expired}"
    );
    let left: Vec<i64> = queue(&store, 2).await.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        left,
        vec![late.seq],
        "only the later message is still queued"
    );
    assert!(!left.contains(&old.seq));
    assert_eq!(
        store.submission(DeviceId(1), b"old").await.expect("lookup"),
        None,
        "an id older than the id retention is forgotten"
    );
    assert!(
        store
            .submission(DeviceId(1), b"late")
            .await
            .expect("lookup")
            .is_some(),
        "a recent id is still remembered"
    );
    let (depth, _) = store.queue_stats().await.expect("stats");
    assert_eq!(depth, 1);
    store.close().await;
}

/// Two stores on one database are two relaisd nodes (or a node and `relaisd admin` work):
/// numbers are never given twice and the database, not a process, decides epoch races.
async fn two_writers_on_one_database_agree(db: &Db) {
    let a = open(db, 10_000).await;
    let b = open(db, 10_000).await;
    group(&a, &[1, 2, 3]).await;
    let sends = (0..40).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        store.submit(message(1 + i % 2, &format!("m{i}"), 1))
    });
    let accepted: Vec<Accepted> = join_all(sends)
        .await
        .into_iter()
        .map(|r| r.expect("accepted"))
        .collect();
    let mut seqs: Vec<i64> = accepted.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 40, "every message has its own number");
    // Device 3 sees all 40, in increasing order, through either store.
    let via_a: Vec<i64> = queue(&a, 3).await.iter().map(|(s, _)| *s).collect();
    let via_b: Vec<i64> = queue(&b, 3).await.iter().map(|(s, _)| *s).collect();
    assert_eq!(via_a, seqs);
    assert_eq!(via_b, seqs);
    for round in 0..5u64 {
        let epoch = 1 + round;
        let (x, y) = tokio::join!(
            a.commit(commit(1, format!("a{round}").as_bytes(), epoch, &[1, 2, 3])),
            b.commit(commit(2, format!("b{round}").as_bytes(), epoch, &[1, 2, 3]))
        );
        match (x, y) {
            (Ok(won), Err(SubmitError::Refused(Refusal::EpochConflict { current })))
            | (Err(SubmitError::Refused(Refusal::EpochConflict { current })), Ok(won)) => {
                assert_eq!((won.epoch, current), (epoch + 1, epoch + 1));
            }
            other => panic!("round {round}: exactly one commit must win: {other:?}"),
        }
    }
    // An acknowledgement through one store frees what the other queued.
    assert_eq!(
        a.acknowledge(DeviceId(3), via_b.clone())
            .await
            .expect("ack"),
        40
    );
    assert_eq!(b.acknowledge(DeviceId(3), via_b).await.expect("ack"), 0);
    a.close().await;
    b.close().await;
}

/// Enrollment codes work once, and a one-time KeyPackage is given out once, even to two
/// writers claiming at the same moment.
async fn directory_codes_and_key_packages_are_used_once(db: &Db) {
    let a = open(db, 10_000).await;
    let b = open(db, 10_000).await;
    assert!(
        a.add_user("alice@x", b"code-a", 1, i64::MAX)
            .await
            .expect("add alice")
    );
    assert!(
        !b.add_user("alice@x", b"code-2", 1, i64::MAX)
            .await
            .expect("again"),
        "names are unique"
    );
    assert!(
        a.add_user("bob@x", b"code-b", 1, i64::MAX)
            .await
            .expect("add bob")
    );
    let alice = a
        .enroll("alice@x", b"code-a", b"key-alice", "fp-alice", 2)
        .await
        .expect("enroll");
    assert!(
        b.enroll("alice@x", b"code-a", b"key-other", "fp-other", 3)
            .await
            .is_err(),
        "a code works once"
    );
    let bob = b
        .enroll("bob@x", b"code-b", b"key-bob", "fp-bob", 2)
        .await
        .expect("enroll bob");
    let packages: Vec<Vec<u8>> = (0..3).map(|i| format!("kp-{i}").into_bytes()).collect();
    assert_eq!(
        a.add_key_packages(alice.id, &packages, Some(b"last"), 100)
            .await
            .expect("publish"),
        Some(3)
    );
    assert_eq!(
        a.key_package_status(alice.id).await.expect("status"),
        (3, true)
    );
    let users = vec!["alice@x".to_owned()];
    let claims = join_all((0..6).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        store.claim_key_packages(&users, bob.id)
    }))
    .await;
    let mut given: Vec<Vec<u8>> = claims
        .into_iter()
        .map(|c| {
            c.expect("claim")
                .expect("alice has packages")
                .remove(0)
                .data
        })
        .collect();
    given.sort();
    let last_resort = given.iter().filter(|d| d.as_slice() == b"last").count();
    given.dedup();
    assert_eq!(
        last_resort, 3,
        "after the three one-time packages, the last-resort one"
    );
    assert_eq!(
        given.len(),
        4,
        "each one-time package exactly once: {given:?}"
    );
    assert_eq!(
        a.key_package_status(alice.id).await.expect("status"),
        (0, true)
    );
    a.close().await;
    b.close().await;
}

/// Revoking a device and deleting its user both revoke (a device keeps the time of its
/// first revocation) and drop the KeyPackages others would add it with; deleting a user
/// also drops its pending codes, and neither touches another user's devices.
async fn revoking_a_device_or_deleting_its_user_ends_its_devices(db: &Db) {
    let store = open(db, 10_000).await;
    let [phone, laptop, bob] = phone_laptop_and_bob(&store).await;

    let revoked_at = |found: Option<relais_store::Device>| found.expect("the device").revoked_at_ms;
    let revoked = store.revoke_device("alice@x", "fp-phone", 10).await;
    assert_eq!(revoked_at(revoked.expect("revoke")), Some(10));
    let again = store.revoke_device("alice@x", "fp-phone", 20).await;
    assert_eq!(
        revoked_at(again.expect("revoke again")),
        Some(10),
        "a revoked device keeps its first revocation time"
    );
    assert_eq!(
        store.key_package_status(phone.id).await.expect("status"),
        (0, false)
    );
    assert_eq!(
        store.key_package_status(laptop.id).await.expect("status"),
        (2, true),
        "the user's other device keeps its KeyPackages"
    );
    for (user, fingerprint) in [("alice@x", "fp-bob"), ("nobody@x", "fp-phone")] {
        assert!(
            store
                .revoke_device(user, fingerprint, 30)
                .await
                .expect("revoke")
                .is_none(),
            "{user} has no device {fingerprint}"
        );
    }

    let active = store
        .delete_user("alice@x", 40)
        .await
        .expect("delete")
        .expect("alice exists");
    let active: Vec<_> = active.iter().map(|d| d.fingerprint.as_str()).collect();
    assert_eq!(active, ["fp-laptop"], "the devices that were still active");
    let devices = store.list_devices("alice@x").await.expect("devices");
    let times: Vec<_> = devices
        .iter()
        .map(|d| (d.fingerprint.as_str(), d.revoked_at_ms))
        .collect();
    assert_eq!(
        times,
        [("fp-phone", Some(10)), ("fp-laptop", Some(40))],
        "every device revoked, the phone still at its first time"
    );
    assert_eq!(
        store.key_package_status(laptop.id).await.expect("status"),
        (0, false)
    );
    assert!(
        store
            .pending_codes(Some("alice@x"), 50)
            .await
            .expect("codes")
            .is_empty()
    );
    assert!(
        store
            .delete_user("alice@x", 60)
            .await
            .expect("delete again")
            .is_none()
    );

    let bob_now = store.list_devices("bob@x").await.expect("bob's devices");
    assert_eq!(bob_now[0].revoked_at_ms, None);
    assert_eq!(
        store.key_package_status(bob.id).await.expect("status"),
        (2, true)
    );
    store.close().await;
}

/// Alice's phone and laptop and Bob's device, each with two KeyPackages and a last-resort
/// one, and a code Alice has not used yet.
async fn phone_laptop_and_bob(store: &Store) -> [relais_store::Device; 3] {
    for (user, code) in [("alice@x", b"code-a1"), ("bob@x", b"code-b1")] {
        assert!(store.add_user(user, code, 1, i64::MAX).await.expect("add"));
    }
    for code in [b"code-a2", b"code-a3"] {
        assert!(
            store
                .issue_code("alice@x", code, 1, i64::MAX)
                .await
                .expect("code")
        );
    }
    let mut devices = Vec::new();
    for (user, code, name) in [
        ("alice@x", b"code-a1", "phone"),
        ("alice@x", b"code-a2", "laptop"),
        ("bob@x", b"code-b1", "bob"),
    ] {
        let key = format!("key-{name}");
        let device = store
            .enroll(user, code, key.as_bytes(), &format!("fp-{name}"), 2)
            .await
            .expect("enroll");
        let packages = vec![b"kp-1".to_vec(), b"kp-2".to_vec()];
        store
            .add_key_packages(device.id, &packages, Some(b"last"), 100)
            .await
            .expect("publish");
        devices.push(device);
    }
    devices.try_into().expect("three devices")
}

on_both_backends!(
    retention_expires_old_messages_and_forgets_old_ids,
    two_writers_on_one_database_agree,
    directory_codes_and_key_packages_are_used_once,
    concurrent_submissions_are_stored_once_each_in_order_for_every_recipient,
    the_same_message_id_twice_at_once_is_stored_once,
    commits_are_ordered_by_epoch_and_messages_checked_against_it,
    acknowledgements_remove_each_entry_once_and_free_the_message,
    a_full_queue_refuses_application_messages_but_never_commits,
    a_full_recipient_does_not_block_the_others,
    one_sender_holds_at_most_its_share_of_a_queue,
    a_silent_recipient_does_not_mute_a_sender,
    a_queue_holds_at_most_its_bytes,
    revoking_a_device_or_deleting_its_user_ends_its_devices,
);
