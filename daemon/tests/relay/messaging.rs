//! End to end: the real daemon, the real client library, real TLS and real MLS.

use std::time::Duration;

use relais_client::{Client, ClientError, ReceivedMessage};
use relais_protocol::pb::ErrorCode;
use relais_testkit::clients::{WAIT, enroll, new_user, receive_n, server_code};
use relais_testkit::{Daemon, secret};

fn texts(messages: &[ReceivedMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_converse_both_ways_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;

    let to_bob: Vec<String> = (0..5)
        .map(|i| secret(&format!("alice-to-bob-{i}")))
        .collect();
    for text in &to_bob {
        alice.send("bob", text).await.expect("alice sends");
    }
    let got = receive_n(&mut bob, to_bob.len()).await;
    assert_eq!(
        texts(&got),
        to_bob.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        got.iter()
            .all(|m| m.sender == "alice@localhost" && m.conversation == "alice@localhost"),
        "{got:?}"
    );
    // Bob acknowledged quietly, then confirmed before `receive` returned: his queue on the
    // relay is empty, and so is his record of deliveries awaiting confirmation.
    let shown = daemon.admin(&["--json", "device", "show", "bob", bob.device_id()]);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["queued"], 0, "{shown}");
    let state = format!("sqlite://{}", dir.path().join("bob/state.db").display());
    let state = sqlx::SqlitePool::connect(&state)
        .await
        .expect("bob's state");
    let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed")
        .fetch_one(&state)
        .await
        .expect("count");
    assert_eq!(records, 0, "every processed delivery was confirmed");
    // A record left by a connection lost before its quiet acknowledgements were confirmed
    // (made here by hand) goes once the next connection's first delivery shows that
    // nothing below it can come again.
    sqlx::query("INSERT INTO processed (sequence) VALUES (1)")
        .execute(&state)
        .await
        .expect("a stale record");
    bob.connect().await.expect("bob reconnects");
    let again = secret("alice-to-bob-again");
    alice.send("bob", &again).await.expect("alice sends");
    assert_eq!(texts(&receive_n(&mut bob, 1).await), [again.as_str()]);
    let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed")
        .fetch_one(&state)
        .await
        .expect("count");
    assert_eq!(records, 0, "the stale record is forgotten");
    state.close().await;

    let to_alice: Vec<String> = (0..5)
        .map(|i| secret(&format!("bob-to-alice-{i}")))
        .collect();
    for text in &to_alice {
        bob.send("alice", text).await.expect("bob sends");
    }
    let got = receive_n(&mut alice, to_alice.len()).await;
    assert_eq!(
        texts(&got),
        to_alice.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|m| m.sender == "bob@localhost"), "{got:?}");

    let all: Vec<String> = to_bob.into_iter().chain(to_alice).chain([again]).collect();
    daemon.assert_never_stored(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_reaches_every_other_device_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let alice_code = daemon.add_user("alice");
    let mut alice1 = enroll(&daemon, &dir.path().join("alice1"), "alice", &alice_code).await;
    let mut alice2 = enroll(
        &daemon,
        &dir.path().join("alice2"),
        "alice",
        &daemon.issue_code("alice"),
    )
    .await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;

    alice1
        .create_group("ops", &["bob", "carol"])
        .await
        .expect("create group");
    // Everyone joins through the Welcome before sending.
    for client in [&mut alice2, &mut bob, &mut carol] {
        client.sync(WAIT).await.expect("sync");
    }

    let mut sent = Vec::new();
    for (name, client) in [
        ("alice1", &mut alice1),
        ("alice2", &mut alice2),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let text = secret(&format!("from-{name}"));
        client
            .group_send("ops", &text)
            .await
            .unwrap_or_else(|e| panic!("{name} sends: {e}"));
        sent.push((name, text));
    }
    for (name, client) in [
        ("alice1", &mut alice1),
        ("alice2", &mut alice2),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let got = receive_n(client, 3).await;
        let mut expected: Vec<&str> = sent
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(_, t)| t.as_str())
            .collect();
        let mut actual = texts(&got);
        expected.sort_unstable();
        actual.sort_unstable();
        assert_eq!(
            actual, expected,
            "{name} must get each other device's message exactly once"
        );
        assert!(got.iter().all(|m| m.conversation == "ops"), "{got:?}");
    }
    daemon.assert_never_stored(&sent.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_survive_a_restart_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let bob = new_user(&daemon, dir.path(), "bob").await;
    bob.close().await;

    let sent: Vec<String> = (0..100)
        .map(|i| secret(&format!("offline-{i:03}")))
        .collect();
    for text in &sent {
        alice.send("bob", text).await.expect("alice sends");
    }
    alice.close().await;
    daemon.stop();
    daemon.launch();

    let mut bob = Client::open(&dir.path().join("bob"))
        .await
        .expect("open bob");
    bob.connect().await.expect("bob reconnects");
    let got = receive_n(&mut bob, sent.len()).await;
    assert_eq!(
        texts(&got),
        sent.iter().map(String::as_str).collect::<Vec<_>>()
    );
    daemon.assert_never_stored(&sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_codes_are_refused_and_revoked_devices_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[enrollment]\ncode_ttl_seconds = 2\n");
    let home = dir.path();
    let code = daemon.add_user("bob");

    let wrong = Client::enroll(
        &home.join("x1"),
        &daemon.server,
        &daemon.ca,
        "bob",
        "AAAA-BBBB-CCCC-DDDD",
    )
    .await;
    let error = wrong.err().expect("a wrong code is refused");
    assert_eq!(
        server_code(&error),
        Some(ErrorCode::InvalidEnrollmentCode),
        "{error}"
    );
    assert!(error.to_string().contains("enrollment code"), "{error}");

    let mut bob = enroll(&daemon, &home.join("bob"), "bob", &code).await;
    let reused = Client::enroll(&home.join("x2"), &daemon.server, &daemon.ca, "bob", &code).await;
    assert_eq!(
        server_code(&reused.err().expect("a used code is refused")),
        Some(ErrorCode::InvalidEnrollmentCode)
    );

    let expiring = daemon.issue_code("bob");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = Client::enroll(
        &home.join("x3"),
        &daemon.server,
        &daemon.ca,
        "bob",
        &expiring,
    )
    .await;
    assert_eq!(
        server_code(&expired.err().expect("an expired code is refused")),
        Some(ErrorCode::InvalidEnrollmentCode)
    );

    let mut alice = enroll(
        &daemon,
        &home.join("alice"),
        "alice",
        &daemon.add_user("alice"),
    )
    .await;
    let before = secret("before-revocation");
    alice.send("bob", &before).await.expect("alice sends");
    assert_eq!(texts(&receive_n(&mut bob, 1).await), [before.as_str()]);

    let devices = daemon.admin(&["--json", "device", "list", "bob"]);
    let list: serde_json::Value = serde_json::from_str(&devices).expect("json");
    let device = list[0]["device"].as_str().expect("device id").to_owned();
    daemon.admin(&["device", "revoke", "bob", &device]);

    // The open connection is closed at once: the next exchange fails.
    let after = secret("after-revocation");
    alice
        .send("bob", &after)
        .await
        .expect("alice can still send to the conversation");
    let cut = bob.receive(Duration::from_secs(3)).await;
    assert!(
        cut.as_ref().map_or(true, Vec::is_empty),
        "a revoked device must receive nothing: {cut:?}"
    );
    bob.close().await;

    let mut again = Client::open(&home.join("bob")).await.expect("open bob");
    let refused = again
        .connect()
        .await
        .expect_err("a revoked device cannot reconnect");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::DeviceRevoked),
        "{refused}"
    );
    let out: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "device", "list", "bob"])).expect("json");
    assert!(
        out[0]["revoked_at_ms"].is_i64(),
        "the device is listed as revoked: {out}"
    );
    daemon.assert_never_stored(&[before, after, code]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_one_wins_and_the_other_rebases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;
    let mut dave = new_user(&daemon, dir.path(), "dave").await;

    alice.create_group("ops", &["bob"]).await.expect("create");
    bob.sync(WAIT).await.expect("bob joins");
    let epoch = alice.conversation_epoch("ops").await.expect("epoch");
    assert_eq!(bob.conversation_epoch("ops").await.expect("epoch"), epoch);

    // Both build a commit on the same epoch; the first to arrive wins.
    let from_alice = alice
        .prepare_add_members("ops", &["carol"])
        .await
        .expect("alice prepares");
    let from_bob = bob
        .prepare_add_members("ops", &["dave"])
        .await
        .expect("bob prepares");
    alice
        .submit_prepared(from_alice)
        .await
        .expect("the first commit wins");
    let lost = bob
        .submit_prepared(from_bob)
        .await
        .expect_err("the second commit loses");
    match &lost {
        ClientError::Server {
            code: ErrorCode::EpochConflict,
            current_epoch,
            ..
        } => assert_eq!(*current_epoch, epoch + 1),
        other => panic!("expected EPOCH_CONFLICT, got {other}"),
    }

    // Bob rebases: he processes Alice's commit and commits again on the new epoch.
    bob.add_members("ops", &["dave"])
        .await
        .expect("bob rebases");
    alice.sync(WAIT).await.expect("alice catches up");
    for client in [&mut carol, &mut dave] {
        client.sync(WAIT).await.expect("joins");
    }
    let final_epoch = alice.conversation_epoch("ops").await.expect("epoch");
    assert_eq!(final_epoch, epoch + 2);
    let members = alice.conversation_members("ops").await.expect("members");
    for client in [&bob, &carol, &dave] {
        assert_eq!(
            client.conversation_epoch("ops").await.expect("epoch"),
            final_epoch,
            "{}",
            client.user()
        );
        assert_eq!(
            client.conversation_members("ops").await.expect("members"),
            members,
            "{}",
            client.user()
        );
    }
    let users: Vec<&str> = members.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        users,
        [
            "alice@localhost",
            "bob@localhost",
            "carol@localhost",
            "dave@localhost"
        ]
    );

    let text = secret("after-the-race");
    dave.group_send("ops", &text).await.expect("dave sends");
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(texts(&receive_n(client, 1).await), [text.as_str()]);
    }
    daemon.assert_never_stored(&[text]);
}

/// Devices enrolling at the same moment all publish their KeyPackages: storage
/// transactions that read then write take the write lock up front instead of failing
/// with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut enrollments = Vec::new();
    for i in 0..12 {
        let user = format!("user{i}");
        let code = daemon.add_user(&user);
        let (home, server, ca) = (
            dir.path().join(&user),
            daemon.server.clone(),
            daemon.ca.clone(),
        );
        enrollments.push(tokio::spawn(async move {
            Client::enroll(&home, &server, &ca, &user, &code)
                .await
                .map(|c| c.device_id().to_owned())
        }));
    }
    for (i, enrollment) in enrollments.into_iter().enumerate() {
        let result = enrollment.await.expect("join");
        assert!(
            result.is_ok(),
            "user{i}: {:?}",
            result.err().map(|e| e.to_string())
        );
    }
}
