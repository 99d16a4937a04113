//! The storage conformance suite: what every storage backend must do, checked through the
//! `Store` interface with concurrent requests so that the writer batches them.
//!
//! Results must not depend on how requests fall into batches, so every check here holds
//! whatever the batching turns out to be.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use relaisd::config::Durability;
use relaisd::hub::Hub;
use relaisd::store::{
    Accepted, CommitRequest, DeviceId, Store, StoreOptions, SubmitError, SubmitRequest,
};

const GROUP: &[u8] = b"group-one";

async fn open(dir: &std::path::Path, queue_messages_max: i64) -> Store {
    let options = StoreOptions {
        durability: Durability::Full,
        batch_max: 512,
        queue_messages_max,
    };
    Store::open(&dir.join("relais.db"), options, Arc::new(Hub::default()))
        .await
        .expect("open the store")
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

#[tokio::test]
async fn concurrent_submissions_are_stored_once_each_in_order_for_every_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 10_000).await;
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

#[tokio::test]
async fn the_same_message_id_twice_at_once_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 10_000).await;
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

#[tokio::test]
async fn commits_are_ordered_by_epoch_and_messages_checked_against_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 10_000).await;
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
        matches!(lost, SubmitError::EpochConflict { current: 2 }),
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
        Err(SubmitError::WrongEpoch { message: 9, .. })
    ));
    assert!(matches!(far, Err(SubmitError::NotAMember)), "{far:?}");
    let unknown = store
        .submit(SubmitRequest {
            group_id: b"nobody".to_vec(),
            ..message(1, "lost", 1)
        })
        .await;
    assert!(matches!(unknown, Err(SubmitError::UnknownGroup)));
    store.close().await;
}

#[tokio::test]
async fn acknowledgements_remove_each_entry_once_and_free_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 10_000).await;
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
    store.close().await;
    let store = open(dir.path(), 10_000).await;
    let next = store.submit(message(1, "next", 1)).await.expect("accepted");
    assert!(next.seq > m.seq);
    assert_eq!(
        store.submission(DeviceId(1), b"m").await.expect("lookup"),
        Some((m.seq, 1)),
        "the id is still remembered after delivery"
    );
    store.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_application_messages_but_never_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 3).await;
    group(&store, &[1, 2]).await;
    let results = join_all((0..4).map(|i| store.submit(message(1, &format!("m{i}"), 1)))).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(SubmitError::QueueFull)))
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
