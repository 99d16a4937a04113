//! Crash safety: a sender keeps sending while the daemon is killed with SIGKILL at random
//! moments and restarted; afterwards every message acknowledged to the sender has reached
//! the recipient's application exactly once, and nothing reached it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use relais_client::Client;
use relais_testkit::nodes::reconnect;
use relais_testkit::{Daemon, secret};

/// Kill-and-restart cycles; the bench's `crash` scenario runs many more.
const CYCLES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    let mut alice = Client::enroll(
        &dir.path().join("alice"),
        &daemon.server,
        &daemon.ca,
        "alice",
        &daemon.add_user("alice"),
    )
    .await
    .expect("alice enrolls");
    let bob = Client::enroll(
        &dir.path().join("bob"),
        &daemon.server,
        &daemon.ca,
        "bob",
        &daemon.add_user("bob"),
    )
    .await
    .expect("bob enrolls");
    bob.close().await;
    alice.connect().await.expect("connect");

    let mut acknowledged = BTreeSet::new();
    let mut attempted = 0usize;
    for cycle in 0..CYCLES {
        // Send for a random while, then kill the daemon mid-stream.
        let sends = rand::thread_rng().gen_range(20..40);
        let killer = {
            let delay = Duration::from_millis(rand::thread_rng().gen_range(200..1500));
            tokio::spawn(async move { tokio::time::sleep(delay).await })
        };
        let mut killed = false;
        for i in 0..sends {
            if killer.is_finished() && !killed {
                daemon.kill();
                killed = true;
            }
            let text = secret(&format!("crash-{cycle}-{i}"));
            attempted += 1;
            if alice.send("bob", &text).await.is_ok() {
                acknowledged.insert(text);
            } else if !killed {
                // A failure only happens after the kill; reconnect if it was something else.
                reconnect(&mut alice).await;
            }
        }
        if !killed {
            daemon.kill();
        }
        daemon.launch();
        reconnect(&mut alice).await;
    }
    alice.close().await;
    assert!(
        acknowledged.len() >= CYCLES,
        "too few messages got through to test anything: {acknowledged:?}"
    );

    let mut bob = Client::open(&dir.path().join("bob"))
        .await
        .expect("open bob");
    reconnect(&mut bob).await;
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let batch = bob.receive(Duration::from_secs(1)).await.expect("receive");
        if batch.is_empty() && acknowledged.iter().all(|t| received.contains_key(t)) {
            break;
        }
        for message in batch {
            *received.entry(message.text).or_default() += 1;
        }
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|t| !received.contains_key(*t))
        .collect();
    let duplicated: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "acknowledged but never received: {lost:?}");
    assert!(duplicated.is_empty(), "received twice: {duplicated:?}");
    assert!(received.len() <= attempted);
    eprintln!(
        "crash test: {attempted} attempted, {} acknowledged, {} received",
        acknowledged.len(),
        received.len()
    );
}
