//! Quotas against one device starving others (security review, issue 29, finding 6): a
//! junk flood cannot freeze a victim's conversations, group creation and KeyPackage
//! publication are rate-limited and capped, and a nearly full disk refuses application
//! messages while commits still go. The real relaisd over real TLS, with the real client.

use std::time::Duration;

use relais_client::{Client, ClientError, Connection, ReceivedMessage};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use relais_testkit::clients::{WAIT, new_user, receive_n, server_code};
use relais_testkit::{Daemon, secret};

fn texts(messages: &[ReceivedMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

/// Sends junk from `from` to `to` until the relay refuses it; returns the refusal and how
/// many were accepted.
async fn flood(from: &mut Client, to: &str, label: &str) -> (ClientError, usize) {
    for i in 0..20 {
        if let Err(e) = from.send(to, &format!("{label} junk {i}")).await {
            return (e, i);
        }
    }
    panic!("{label}: twenty junk messages to {to} were all accepted");
}

/// Receives until `text` arrives (or the wait is over); returns everything received.
async fn receive_until(client: &mut Client, text: &str) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !all.iter().any(|m: &ReceivedMessage| m.text == text)
        && tokio::time::Instant::now() < deadline
    {
        all.extend(
            client
                .receive(Duration::from_secs(2))
                .await
                .expect("receive"),
        );
    }
    all
}

/// Mallory floods the victim from a group she made with it: once she holds her share of
/// its queue her own sends are refused with a typed error, and Alice's group with the
/// victim keeps working. When two flooders fill the victim's queue completely, Alice's
/// messages are still accepted and reach Bob; the victim misses them and gets the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_leaves_the_victims_other_conversations_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Six messages per queue, three of them from any one sender.
    let daemon = Daemon::start(
        dir.path(),
        "[limits]\nqueue_messages_max = 6\nqueue_share_per_sender_percent = 50\n",
    );
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut victim = new_user(&daemon, dir.path(), "victim").await;
    let mut mallory = new_user(&daemon, dir.path(), "mallory").await;
    let mut trudy = new_user(&daemon, dir.path(), "trudy").await;
    alice
        .create_group("team", &["victim", "bob"])
        .await
        .expect("alice creates a group with the victim");
    victim.sync(Duration::from_secs(2)).await.expect("join");
    bob.sync(Duration::from_secs(2)).await.expect("join");

    let (refused, accepted) = flood(&mut mallory, "victim", "mallory").await;
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::SenderQuotaExceeded),
        "mallory is refused for her own share, not for the victim's queue: {refused}"
    );
    assert!(accepted >= 1, "mallory's first junk went through");
    let first = secret("alice-first");
    alice
        .group_send("team", &first)
        .await
        .expect("alice's message to the flooded victim is accepted");
    assert_eq!(texts(&receive_n(&mut bob, 1).await), [first.as_str()]);
    let got = receive_until(&mut victim, &first).await;
    assert!(
        texts(&got).contains(&first.as_str()),
        "the victim receives alice's message among the junk: {:?}",
        texts(&got)
    );

    // Two flooders fill the victim's whole queue.
    let (refused, _) = flood(&mut mallory, "victim", "mallory again").await;
    assert_eq!(server_code(&refused), Some(ErrorCode::SenderQuotaExceeded));
    // Trudy's third message fills the victim's queue: her next has no recipient with room.
    let (refused, accepted) = flood(&mut trudy, "victim", "trudy").await;
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::QueueFull),
        "{refused}"
    );
    assert_eq!(
        accepted, 1,
        "the Welcome, the info message and one junk message"
    );
    let missed = secret("alice-missed");
    alice
        .group_send("team", &missed)
        .await
        .expect("a full recipient does not block the group's others");
    assert_eq!(texts(&receive_n(&mut bob, 1).await), [missed.as_str()]);
    let junk = victim
        .receive(Duration::from_secs(3))
        .await
        .expect("the victim reads its junk");
    assert!(
        !texts(&junk).contains(&missed.as_str()),
        "the message sent while the victim's queue was full was not queued for it"
    );
    let after = secret("alice-after");
    alice.group_send("team", &after).await.expect("send");
    let got = receive_until(&mut victim, &after).await;
    assert!(
        texts(&got).contains(&after.as_str()),
        "once read, the victim gets alice's messages again (past the gap): {:?}",
        texts(&got)
    );
    assert_eq!(texts(&receive_n(&mut bob, 1).await), [after.as_str()]);
}

/// A device enrolled over a raw connection, to send requests the client never would.
async fn raw_device(daemon: &Daemon, user: &str, seed: u8) -> Connection {
    use ed25519_dalek::Signer as _;
    let code = daemon.add_user(user);
    let opened = Connection::open(&daemon.server, &daemon.ca)
        .await
        .expect("connect");
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let signature = key.sign(&relais_protocol::auth::transcript(
        &opened.exporter,
        &opened.nonce,
    ));
    let mut connection = opened.connection;
    let enrolled = connection
        .call(Req::Enroll(pb::Enroll {
            user: user.into(),
            code,
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        }))
        .await
        .expect("enroll");
    assert!(matches!(enrolled, Resp::Enrolled(_)), "{enrolled:?}");
    connection
}

fn refusal(result: Result<Resp, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Group creation and KeyPackage publication are counted per device per hour, refused
/// with RATE_LIMITED past `limits.groups_created_per_hour` and
/// `limits.key_package_publications_per_hour`; a KeyPackage larger than a real one could
/// be is refused before it is parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_creation_and_key_package_publication_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[limits]\ngroups_created_per_hour = 3\nkey_package_publications_per_hour = 3\n",
    );
    let mut raw = raw_device(&daemon, "mallory", 7).await;
    for _ in 0..3 {
        let (code, _) = refusal(
            raw.call(Req::CreateGroup(pb::CreateGroup {
                group_info: b"junk".to_vec(),
                ratchet_tree: b"junk".to_vec(),
            }))
            .await,
        );
        assert_eq!(
            code,
            ErrorCode::InvalidMessage,
            "junk is checked and refused"
        );
    }
    let (code, message) = refusal(
        raw.call(Req::CreateGroup(pb::CreateGroup {
            group_info: b"junk".to_vec(),
            ratchet_tree: b"junk".to_vec(),
        }))
        .await,
    );
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    assert!(message.contains("groups"), "{message}");

    // An oversized KeyPackage: refused for its size, and it counts as a publication.
    let (code, message) = refusal(
        raw.call(Req::PublishKeyPackages(pb::PublishKeyPackages {
            key_packages: vec![vec![0; 64 * 1024]],
        }))
        .await,
    );
    assert_eq!(code, ErrorCode::LimitExceeded, "{message}");
    assert!(
        message.contains("bytes"),
        "the message names the size: {message}"
    );
    for _ in 0..2 {
        let published = raw
            .call(Req::PublishKeyPackages(pb::PublishKeyPackages {
                key_packages: Vec::new(),
            }))
            .await
            .expect("publications within the rate");
        assert!(matches!(published, Resp::KeyPackagesPublished(_)));
    }
    let (code, message) = refusal(
        raw.call(Req::PublishKeyPackages(pb::PublishKeyPackages {
            key_packages: Vec::new(),
        }))
        .await,
    );
    assert_eq!(code, ErrorCode::RateLimited, "{message}");

    // Another device is not affected; a real client's KeyPackages fit the size cap.
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let _bob = new_user(&daemon, dir.path(), "bob").await;
    alice
        .create_group("ops", &["bob"])
        .await
        .expect("another device creates a group");
    let database = format!(
        "sqlite://{}?mode=ro",
        daemon.data.join("relais.db").display()
    );
    let database = sqlx::SqlitePool::connect(&database)
        .await
        .expect("the relay's database");
    let (smallest, largest): (i64, i64) =
        sqlx::query_as("SELECT MIN(LENGTH(data)), MAX(LENGTH(data)) FROM key_packages")
            .fetch_one(&database)
            .await
            .expect("sizes");
    database.close().await;
    assert!(
        smallest > 200 && (largest as usize) * 4 < relais_core::mls::KEY_PACKAGE_BYTES_MAX,
        "real KeyPackages ({smallest} to {largest} bytes) sit far below the cap"
    );
}

/// A device may have created at most `limits.groups_created_max` groups it is still in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_past_the_per_device_cap_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[limits]\ngroups_created_max = 2\n");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    alice.create_group("one", &[]).await.expect("first group");
    alice.create_group("two", &[]).await.expect("second group");
    let refused = alice
        .create_group("three", &[])
        .await
        .expect_err("past the cap");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::LimitExceeded),
        "{refused}"
    );
    assert!(refused.to_string().contains("2 groups"), "{refused}");
    bob.create_group("bobs", &["alice"])
        .await
        .expect("the cap is per device");
}

/// With less free space than `limits.disk_free_bytes_min` (here: more than any disk has),
/// application messages are refused with STORAGE_FULL while commits still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_messages_but_not_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[limits]\ndisk_free_bytes_min = 4611686018427387904\n",
    );
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let _bob = new_user(&daemon, dir.path(), "bob").await;
    let _carol = new_user(&daemon, dir.path(), "carol").await;
    // Creating the group commits (accepted); the conversation's name, an application
    // message, is refused.
    let refused = alice
        .create_group("ops", &["bob"])
        .await
        .expect_err("the conversation's info message is refused");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::StorageFull),
        "{refused}"
    );
    assert_eq!(alice.conversation_epoch("ops").await.expect("epoch"), 1);
    let refused = alice
        .group_send("ops", "hello")
        .await
        .expect_err("application messages are refused");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::StorageFull),
        "{refused}"
    );
    assert!(
        matches!(
            &refused,
            ClientError::Server {
                retryable: true,
                ..
            }
        ),
        "{refused:?}"
    );
    let refused = alice
        .add_members("ops", &["carol"])
        .await
        .expect_err("the commit goes; only the new member's welcome text is refused");
    assert_eq!(server_code(&refused), Some(ErrorCode::StorageFull));
    assert_eq!(
        alice.conversation_epoch("ops").await.expect("epoch"),
        2,
        "the commit adding carol was accepted"
    );
}

/// Finding 7 of the red-team review: one device could drain a user's one-time
/// KeyPackages (30 claims an hour against the 20 the client kept), leaving only the
/// last-resort one. Now the relay allows 10 claims an hour per (device, user), the client
/// keeps 40, and the draining device meets RATE_LIMITED while the user still has most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_cannot_drain_a_users_key_packages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut mallory = new_user(&daemon, dir.path(), "mallory").await;
    let bob = new_user(&daemon, dir.path(), "bob").await;
    let bob_device = bob.device_id().to_owned();
    mallory
        .create_group("drain", &["bob"])
        .await
        .expect("a group with bob");
    let mut claims = 1;
    let refused = loop {
        match mallory.prepare_add_members("drain", &["bob"]).await {
            Ok(_) => claims += 1,
            Err(e) => break e,
        }
        assert!(claims <= 100, "the claims were never limited");
    };
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::RateLimited),
        "{refused}"
    );
    assert_eq!(
        claims, 10,
        "ten claims of bob's KeyPackages within the hour"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "device", "show", "bob", &bob_device]))
            .expect("json");
    assert_eq!(
        shown["key_packages"], 30,
        "bob keeps three quarters of his forty: {shown}"
    );
}
