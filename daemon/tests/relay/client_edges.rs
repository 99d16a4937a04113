//! Client behaviour at the edges: unreachable users, a revoked device replaced, revocation
//! with several devices per user, a commit resent after the relay came back, and claims
//! of one user's KeyPackages limited per device.

use std::time::Duration;

use relais_client::{Client, ClientError};
use relais_testkit::Daemon;
use relais_testkit::clients::{WAIT, enroll, new_user, receive_n};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_users_are_refused_and_a_replaced_device_is_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let _ = daemon.add_user("carol");
    let e = alice
        .send("carol", "x")
        .await
        .expect_err("carol has no device");
    assert!(matches!(e, ClientError::Unreachable(_)), "{e}");
    eprintln!("unreachable: {e}");
    assert!(alice.conversations().await.expect("list").is_empty());
    let e = alice.send("nobody", "x").await.expect_err("unknown");
    eprintln!("unknown: {e}");
    let e = alice.group_send("nosuch", "x").await.expect_err("no group");
    assert!(e.is_usage(), "{e}");

    let mut bob1 = enroll(
        &daemon,
        &dir.path().join("bob1"),
        "bob",
        &daemon.add_user("bob"),
    )
    .await;
    alice.send("bob", "one").await.expect("send one");
    let got = receive_n(&mut bob1, 1).await;
    assert_eq!(got[0].text, "one");
    assert_eq!(got[0].conversation, "alice@localhost");

    let list: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "device", "list", "bob"])).expect("json");
    let device = list[0]["device"].as_str().expect("id").to_owned();
    daemon.admin(&["device", "revoke", "bob", &device]);
    alice
        .sync(Duration::from_secs(3))
        .await
        .expect("alice sync");
    let members = alice.conversation_members("bob").await.expect("members");
    eprintln!("members after revocation: {members:?}");
    alice
        .send("bob", "to nobody")
        .await
        .expect("send to nobody");

    let mut bob2 = enroll(
        &daemon,
        &dir.path().join("bob2"),
        "bob",
        &daemon.issue_code("bob"),
    )
    .await;
    alice.send("bob", "two").await.expect("send two");
    let got = receive_n(&mut bob2, 1).await;
    let texts: Vec<_> = got
        .iter()
        .map(|m| (m.conversation.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(texts, [("alice@localhost", "two")]);
    bob2.send("alice", "back").await.expect("bob2 answers");
    let got = receive_n(&mut alice, 1).await;
    assert_eq!(got[0].text, "back");
    assert_eq!(got[0].conversation, "bob@localhost");
    assert_eq!(alice.failed_deliveries().await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_with_two_devices_each_leaves_members_agreeing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob1 = enroll(
        &daemon,
        &dir.path().join("bob1"),
        "bob",
        &daemon.add_user("bob"),
    )
    .await;
    let mut bob2 = enroll(
        &daemon,
        &dir.path().join("bob2"),
        "bob",
        &daemon.issue_code("bob"),
    )
    .await;
    alice.create_group("ops", &["bob"]).await.expect("create");
    bob1.sync(WAIT).await.expect("bob1 joins");
    bob2.sync(WAIT).await.expect("bob2 joins");
    assert_eq!(bob1.conversation_members("ops").await.expect("m").len(), 3);
    bob1.group_send("ops", "from bob1")
        .await
        .expect("bob1 sends");
    let got = receive_n(&mut bob2, 1).await;
    assert_eq!(
        (got[0].sender.as_str(), got[0].text.as_str()),
        ("bob@localhost", "from bob1")
    );
    let got = receive_n(&mut alice, 1).await;
    assert_eq!(got[0].text, "from bob1");

    let list: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "device", "list", "bob"])).expect("json");
    let device = list[1]["device"].as_str().expect("id").to_owned();
    daemon.admin(&["device", "revoke", "bob", &device]);
    alice
        .sync(Duration::from_secs(3))
        .await
        .expect("alice sync");
    bob1.sync(Duration::from_secs(3)).await.expect("bob1 sync");
    alice
        .sync(Duration::from_secs(1))
        .await
        .expect("alice sync");
    let a = alice.conversation_members("ops").await.expect("members");
    let b = bob1.conversation_members("ops").await.expect("members");
    eprintln!("alice sees {a:?}\nbob1 sees {b:?}");
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_eq!(
        alice.conversation_epoch("ops").await.expect("e"),
        bob1.conversation_epoch("ops").await.expect("e")
    );
    alice.group_send("ops", "after").await.expect("send after");
    let got = receive_n(&mut bob1, 1).await;
    assert_eq!(got[0].text, "after");

    // Restart from disk: the state persisted.
    alice.close().await;
    let mut again = Client::open(&dir.path().join("alice")).await.expect("open");
    again.connect().await.expect("connect");
    again.group_send("ops", "reopened").await.expect("send");
    let got = receive_n(&mut bob1, 1).await;
    assert_eq!(got[0].text, "reopened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_resent_after_the_relay_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;
    alice.create_group("ops", &["bob"]).await.expect("create");
    bob.sync(WAIT).await.expect("bob joins");
    let prepared = alice
        .prepare_add_members("ops", &["carol"])
        .await
        .expect("prepare");
    let epoch = alice.conversation_epoch("ops").await.expect("epoch");
    daemon.stop();
    let e = alice.submit_prepared(prepared).await.expect_err("no relay");
    eprintln!("while down: {e}");
    daemon.launch();
    alice.close().await;
    let mut alice = Client::open(&dir.path().join("alice")).await.expect("open");
    alice.connect().await.expect("reconnect resends");
    assert_eq!(
        alice.conversation_epoch("ops").await.expect("epoch"),
        epoch + 1
    );
    bob.connect().await.expect("bob reconnects");
    carol.connect().await.expect("carol reconnects");
    bob.sync(WAIT).await.expect("bob");
    carol.sync(WAIT).await.expect("carol");
    assert_eq!(carol.conversation_members("ops").await.expect("m").len(), 3);
    assert_eq!(bob.conversation_epoch("ops").await.expect("e"), epoch + 1);
    carol.group_send("ops", "hello").await.expect("carol sends");
    assert_eq!(receive_n(&mut alice, 1).await[0].text, "hello");
    assert_eq!(receive_n(&mut bob, 1).await[0].text, "hello");
}

/// A device may use up another user's one-time KeyPackages only so fast: past
/// `limits.claims_per_user_hour` claims of that user, adding them is refused (retryable)
/// while adding anyone else, or the same user from another device, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_one_users_key_packages_are_limited_per_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[limits]\nclaims_per_user_hour = 2\n");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let _bob = new_user(&daemon, dir.path(), "bob").await;
    let _carol = new_user(&daemon, dir.path(), "carol").await;
    alice
        .create_group("one", &["bob"])
        .await
        .expect("first claim of bob");
    alice
        .create_group("two", &["bob"])
        .await
        .expect("second claim of bob");
    let e = alice
        .create_group("three", &["carol", "bob"])
        .await
        .expect_err("a third claim of bob within the hour");
    let ClientError::Server {
        code,
        message,
        retryable,
        ..
    } = &e
    else {
        panic!("not a refusal: {e}");
    };
    assert_eq!(*code, relais_protocol::pb::ErrorCode::RateLimited, "{e}");
    assert!(*retryable && message.contains("bob@localhost"), "{e}");
    alice
        .create_group("four", &["carol"])
        .await
        .expect("carol was not counted");

    let mut dave = new_user(&daemon, dir.path(), "dave").await;
    dave.create_group("five", &["bob"])
        .await
        .expect("another device claims bob");
}
