//! A user's devices and their history, with the real relaisd over real TLS: a second device
//! of alice's, enrolled after she joined three conversations, is in all three and holds
//! their last messages within 10 s of both running a session (the history travels end to
//! end in her own group of devices, `client/src/transfer.rs`); alice revokes it from the
//! first device, the relay audits it and the groups drop it. Bad input is refused with a
//! warning and nothing stored is lost: a history chunk that does not parse, names a
//! conversation the device is not in or a sender who is not a member of it, answers no
//! request of the device's, or comes from another user; and the relay's proposal to remove
//! a device the group does not hold. The checks themselves are unit-tested in `transfer.rs`.

use std::time::{Duration, Instant};

use prost::Message as _;
use relais_client::{
    Client, ConnectionState, ErrorCode, Event, ReceivedMessage, Session, SessionHandle,
};
use relais_protocol::pb::{self, DeliveryKind};
use relais_testkit::clients::{new_user, receive_n};
use relais_testkit::{Daemon, secret};

/// The stated requirement (issue 20): a new device is in its user's conversations, with
/// their history, within 10 s of both devices being online.
const TRANSFER_BOUND: Duration = Duration::from_secs(10);
/// How long a test waits for an event.
const WAIT: Duration = Duration::from_secs(20);

/// alice's three conversations: her direct one with bob, her group `ops` with bob and
/// carol, and carol's `logistique`, each with texts from its members.
const CONVERSATIONS: [&str; 3] = ["bob@localhost", "ops", "logistique"];

/// A conversation's entries as compared across devices: sender, time and text.
fn said(entries: &[ReceivedMessage]) -> Vec<(String, i64, String)> {
    entries
        .iter()
        .filter(|m| !m.event)
        .map(|m| (m.sender.clone(), m.sent_at_ms, m.text.clone()))
        .collect()
}

/// Processes deliveries on each client for a moment, twice round.
async fn settle(clients: &mut [&mut Client]) {
    for _ in 0..2 {
        for client in clients.iter_mut() {
            client
                .sync(Duration::from_millis(500))
                .await
                .unwrap_or_else(|e| panic!("{} syncs: {e}", client.user()));
        }
    }
}

/// alice writes to bob, makes `ops` with bob and carol, joins carol's `logistique`, and
/// everyone writes in each; returns each conversation's entries as alice holds them.
async fn alice_in_three_conversations(
    alice: &mut Client,
    bob: &mut Client,
    carol: &mut Client,
) -> Vec<Vec<(String, i64, String)>> {
    alice.send("bob", "bonjour Bob").await.expect("direct");
    alice
        .create_group("ops", &["bob", "carol"])
        .await
        .expect("ops");
    carol
        .create_group("logistique", &["alice"])
        .await
        .expect("logistique");
    settle(&mut [alice, bob, carol]).await;
    for n in 1..=3 {
        bob.send("alice", &format!("direct {n} de Bob"))
            .await
            .expect("bob writes");
        alice
            .group_send("ops", &format!("ops {n} d'Alice"))
            .await
            .expect("alice writes");
        bob.group_send("ops", &format!("ops {n} de Bob"))
            .await
            .expect("bob writes");
        carol
            .group_send("logistique", &format!("logistique {n} de Carol"))
            .await
            .expect("carol writes");
    }
    settle(&mut [alice, bob, carol]).await;
    let mut held = Vec::new();
    for conversation in CONVERSATIONS {
        let entries = said(&alice.history(conversation, 100).await.expect("history"));
        assert!(entries.len() >= 3, "{conversation}: {entries:?}");
        held.push(entries);
    }
    held
}

/// Reads `session`'s events until one satisfies `wanted`, keeping the others in `seen`.
async fn until(
    session: &mut Session,
    seen: &mut Vec<Event>,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, session.next_event()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the session ended before {what}; it said {seen:#?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; the session said {seen:#?}"),
        }
    }
}

/// Whether the device behind `handle` holds `expected` in each conversation.
async fn holds_history(handle: &SessionHandle, expected: &[Vec<(String, i64, String)>]) -> bool {
    for (conversation, expected) in CONVERSATIONS.iter().zip(expected) {
        match handle.history(conversation, 100).await {
            Ok(entries) if said(&entries) == *expected => {}
            _ => return false,
        }
    }
    true
}

/// The second device, enrolled while alice's first runs a session, is in her three
/// conversations with their history within 10 s, without announcing old texts as new;
/// new texts reach both; revoked from the first device, it is audited, cut off and
/// dropped from every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_has_every_conversation_and_its_history_within_ten_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;
    let expected = alice_in_three_conversations(&mut alice, &mut bob, &mut carol).await;

    let alice_key = alice.public_key().to_vec();
    let mut first = Session::start(alice).expect("alice's session");
    let mut first_events = Vec::new();
    until(&mut first, &mut first_events, "the connection", |e| {
        matches!(
            e,
            Event::Connection {
                state: ConnectionState::Connected,
                ..
            }
        )
    })
    .await;

    // Both online from here: the laptop enrolls (and asks) and starts its session.
    let started = Instant::now();
    let laptop = Client::enroll(
        &dir.path().join("laptop"),
        &daemon.server,
        &daemon.ca,
        "alice",
        &daemon.issue_code("alice"),
    )
    .await
    .expect("the laptop enrolls, and asks alice's other devices for history");
    let (laptop_id, laptop_key) = (laptop.device_id().to_owned(), laptop.public_key().to_vec());
    let mut second = Session::start(laptop).expect("the laptop's session");
    let handle = second.handle();
    while !holds_history(&handle, &expected).await {
        assert!(
            started.elapsed() < TRANSFER_BOUND,
            "the laptop does not hold the three conversations' history after {TRANSFER_BOUND:?}: {:?}",
            handle.history("ops", 100).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!("history transfer: the laptop held all three conversations' history after {took:?}");
    assert!(took < TRANSFER_BOUND, "{took:?}");

    let mut laptop_events = old_texts_are_not_news(&mut second, &expected).await;

    // New texts reach both devices.
    let fresh = secret("pour les deux appareils d'alice");
    bob.group_send("ops", &fresh).await.expect("bob writes");
    let is_fresh = |e: &Event| matches!(e, Event::Message { text, .. } if *text == fresh);
    until(
        &mut first,
        &mut first_events,
        "bob's text on the first device",
        is_fresh,
    )
    .await;
    until(
        &mut second,
        &mut laptop_events,
        "bob's text on the laptop",
        is_fresh,
    )
    .await;

    the_first_device_revokes_the_laptop(&daemon, &mut first, &mut second, &laptop_id).await;
    the_groups_drop_the_laptop(&dir, &mut bob, &laptop_key, &alice_key).await;
    first.shutdown().await.expect("alice's session ends");
}

/// Old texts are history, not news: the laptop's session announced none of them, nor any
/// device of alice's own as new, and one notice per conversation says they were copied.
/// Returns the events it read.
async fn old_texts_are_not_news(
    second: &mut Session,
    expected: &[Vec<(String, i64, String)>],
) -> Vec<Event> {
    let mut laptop_events = Vec::new();
    while let Some(event) = second.try_next_event() {
        laptop_events.push(event);
    }
    let old: Vec<&str> = expected
        .iter()
        .flatten()
        .map(|(_, _, t)| t.as_str())
        .collect();
    assert!(
        !laptop_events
            .iter()
            .any(|e| matches!(e, Event::Message { text, .. } if old.contains(&text.as_str()))),
        "no old text announced as new: {laptop_events:#?}"
    );
    let copied = |e: &Event| matches!(e, Event::Notice { text, .. } if text.contains("copied from your other device"));
    let mut notices = laptop_events.iter().filter(|e| copied(e)).count();
    while notices < 3 {
        until(
            second,
            &mut laptop_events,
            "a copied-history notice",
            copied,
        )
        .await;
        notices += 1;
    }
    // Nor are alice's own devices: joining her conversations, the laptop announces no
    // device of hers as new (her first device is in each of them, and it is no stranger).
    assert!(
        !laptop_events.iter().any(|e| matches!(
            e,
            Event::Notice { text, .. } if text.starts_with("alice@localhost has a new device")
        )),
        "the laptop announced one of alice's own devices as new: {laptop_events:#?}"
    );
    laptop_events
}

/// alice's first device revokes the laptop: the relay audits it with that device as the
/// actor, and the laptop's session ends saying it was revoked.
async fn the_first_device_revokes_the_laptop(
    daemon: &Daemon,
    first: &mut Session,
    second: &mut Session,
    laptop_id: &str,
) {
    first
        .handle()
        .revoke_device(laptop_id)
        .await
        .expect("the first device revokes the laptop");
    let audit = daemon.admin(&["audit", "export"]);
    assert!(
        audit.lines().any(|l| l.contains("\"device_revoke\"")
            && l.contains(laptop_id)
            && l.contains("\"ok\"")
            && l.contains("device:alice@localhost/")),
        "the revocation is audited: {audit}"
    );
    let mut seen = Vec::new();
    let ended = until(second, &mut seen, "the end of the laptop's session", |e| {
        matches!(
            e,
            Event::Connection {
                state: ConnectionState::Ended,
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(&ended, Event::Connection { code: Some(code), .. } if code == ErrorCode::DeviceRevoked.as_str_name()),
        "{ended:?}"
    );
}

/// Once alice's first device committed the relay's removals, no group holds the laptop,
/// bob's history says so, and bob's next text never reaches it.
async fn the_groups_drop_the_laptop(
    dir: &tempfile::TempDir,
    bob: &mut Client,
    laptop_key: &[u8],
    alice_key: &[u8],
) {
    let laptop_hex = hex::encode(laptop_key);
    let deadline = Instant::now() + WAIT;
    loop {
        bob.sync(Duration::from_millis(500))
            .await
            .expect("bob follows");
        let members = bob.conversation_members("ops").await.expect("members");
        if !members.iter().any(|(_, key)| *key == laptop_hex) {
            assert!(
                members
                    .iter()
                    .any(|(_, key)| *key == hex::encode(alice_key))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ops still holds the laptop: {members:?}"
        );
    }
    // Whoever committed the relay's proposal (alice's first device or bob), bob's
    // history names the device removed, and says the relay asked for it: neither member
    // chose to.
    let removed = format!(
        "alice@localhost's device {}… was removed at the relay's request (a revoked device)",
        hex::encode(&laptop_key[..4])
    );
    let lines = bob.history("ops", 200).await.expect("history");
    assert!(
        lines.iter().any(|m| m.event && m.text == removed),
        "bob's history says so: {lines:#?}"
    );
    let after = secret("après la révocation");
    bob.group_send("ops", &after).await.expect("bob writes");
    let mut laptop = Client::open(&dir.path().join("laptop"))
        .await
        .expect("the laptop's home opens");
    let refused = laptop.connect().await.expect_err("revoked");
    assert!(refused.is_server(ErrorCode::DeviceRevoked), "{refused}");
    let held = laptop.history("ops", 200).await.expect("history");
    assert!(!held.iter().any(|m| m.text == after), "{held:#?}");
    laptop.close().await;
}

/// A chunk for `laptop` answering `request_id`, with the given conversations.
fn chunk(
    laptop: &Client,
    request_id: &[u8],
    conversations: Vec<pb::HistoryConversation>,
) -> pb::Content {
    pb::Content {
        message_id: relais_client::new_message_id().to_vec(),
        sent_at_ms: relais_protocol::time::now_ms(),
        body: Some(pb::content::Body::HistoryChunk(pb::HistoryChunk {
            request_id: request_id.to_vec(),
            requester_key: laptop.public_key().to_vec(),
            transfer_id: vec![0x5a; 16],
            index: 0,
            total: 1,
            conversations,
        })),
    }
}

fn entries(group_id: &[u8], list: &[(&str, &str)]) -> Vec<pb::HistoryConversation> {
    vec![pb::HistoryConversation {
        group_id: group_id.to_vec(),
        entries: list
            .iter()
            .map(|(sender, text)| pb::HistoryEntry {
                sender: (*sender).to_owned(),
                message_id: relais_client::new_message_id().to_vec(),
                sent_at_ms: 1_700_000_000_000,
                text: (*text).to_owned(),
            })
            .collect(),
    }]
}

/// What a device holds that bad input must not change: every conversation's entries
/// (texts and lines) and their order.
async fn holdings(client: &Client) -> Vec<Vec<ReceivedMessage>> {
    let mut all = Vec::new();
    for conversation in ["bob@localhost", "ops"] {
        all.push(client.history(conversation, 500).await.expect("history"));
    }
    all
}

/// Has `laptop` process what came, and checks that it refused one delivery with a warning
/// saying `why`, and changed nothing it holds.
async fn refused_whole(laptop: &mut Client, before: &[Vec<ReceivedMessage>], why: &str) {
    let failed = laptop.failed_deliveries().await.expect("count");
    laptop.sync(Duration::from_secs(2)).await.expect("sync");
    let warnings = laptop.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(why) && w.contains("nothing of it was imported")),
        "a warning saying {why:?}: {warnings:#?}"
    );
    assert_eq!(laptop.failed_deliveries().await.expect("count"), failed + 1);
    let after = holdings(laptop).await;
    assert_eq!(
        format!("{after:?}"),
        format!("{before:?}"),
        "nothing stored changed"
    );
}

/// A second device gets its history from the first (plain clients, as `relais recv` runs),
/// then refuses every bad chunk whole, with a warning, keeping all it held; an honest
/// chunk sent twice is imported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_history_is_refused_whole_and_nothing_stored_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;
    alice_in_three_conversations(&mut alice, &mut bob, &mut carol).await;
    let mut laptop = relais_testkit::clients::enroll(
        &daemon,
        &dir.path().join("laptop"),
        "alice",
        &daemon.issue_code("alice"),
    )
    .await;
    settle(&mut [&mut alice, &mut laptop]).await;
    assert_eq!(
        said(&laptop.history("ops", 100).await.expect("the laptop's ops")),
        said(&alice.history("ops", 100).await.expect("alice's ops")),
        "the honest transfer"
    );
    assert!(laptop.take_warnings().is_empty());
    let before = holdings(&laptop).await;
    let request = laptop
        .history_request_id_for_tests()
        .await
        .expect("state")
        .expect("the laptop asked");
    let own = alice.own_devices_groups_for_tests().await.expect("state");
    assert_eq!(own.len(), 1, "alice's devices share one group of their own");
    let ops = alice.conversation_group_id("ops").await.expect("ops");

    for (content, why) in bad_chunks(&laptop, &request, &ops) {
        alice
            .send_raw_content_for_tests(&own[0], &content)
            .await
            .expect("alice's device sends it");
        refused_whole(&mut laptop, &before, why).await;
    }

    // Another user's chunk, in a conversation: never history.
    bob.sync(Duration::from_secs(1)).await.expect("bob follows");
    let forged = chunk(
        &laptop,
        &request,
        entries(&ops, &[("alice@localhost", "x")]),
    );
    bob.send_raw_content_for_tests(&ops, &forged.encode_to_vec())
        .await
        .expect("bob sends it");
    refused_whole(
        &mut laptop,
        &before,
        "history travels only between your own devices",
    )
    .await;

    an_honest_chunk_twice_is_imported_once(&mut alice, &mut laptop, &own[0], &request, &before)
        .await;
}

/// Chunks from alice's own device that the laptop must refuse, each with what its warning
/// says: one that does not parse, one naming a conversation the laptop is not in, one
/// giving a sender who is not a member, one answering no request of the laptop's.
fn bad_chunks(laptop: &Client, request: &[u8], ops: &[u8]) -> Vec<(Vec<u8>, &'static str)> {
    let mut tampered =
        chunk(laptop, request, entries(ops, &[("bob@localhost", "vrai")])).encode_to_vec();
    let at = tampered.len() - 6;
    tampered[at] = 0xff;
    tampered.truncate(at + 1);
    let elsewhere = entries(&[0x42; 16], &[("bob@localhost", "x")]);
    let stranger = entries(ops, &[("mallory@localhost", "x")]);
    let unasked = entries(ops, &[("bob@localhost", "x")]);
    vec![
        (tampered, "it is not a readable history message"),
        (
            chunk(laptop, request, elsewhere).encode_to_vec(),
            "it names a conversation this device is not in",
        ),
        (
            chunk(laptop, request, stranger).encode_to_vec(),
            "it gives \"mallory@localhost\" as the sender of a message in \"ops\"",
        ),
        (
            chunk(laptop, &[0; 16], unasked).encode_to_vec(),
            "this device did not ask for it",
        ),
    ]
}

/// An honest chunk from alice's own device, sent twice: its entry is imported once,
/// before everything the laptop held, with one line saying so.
async fn an_honest_chunk_twice_is_imported_once(
    alice: &mut Client,
    laptop: &mut Client,
    own: &[u8],
    request: &[u8],
    before: &[Vec<ReceivedMessage>],
) {
    let ops = alice.conversation_group_id("ops").await.expect("ops");
    let honest = chunk(
        laptop,
        request,
        entries(&ops, &[("carol@localhost", "une de plus")]),
    );
    for _ in 0..2 {
        alice
            .send_raw_content_for_tests(own, &honest.encode_to_vec())
            .await
            .expect("alice's device sends it");
        laptop.sync(Duration::from_secs(2)).await.expect("sync");
    }
    assert!(laptop.take_warnings().is_empty());
    let ops_now = laptop.history("ops", 500).await.expect("history");
    assert_eq!(ops_now.len(), before[1].len() + 2, "the entry and its line");
    assert_eq!(
        (ops_now[0].sender.as_str(), ops_now[0].text.as_str()),
        ("carol@localhost", "une de plus"),
        "older than everything held"
    );
    let line = format!(
        "1 earlier message copied from your other device {}…",
        hex::encode(&alice.public_key()[..4])
    );
    assert_eq!(ops_now.last().map(|m| &m.text), Some(&line));
    assert_eq!(ops_now.iter().filter(|m| m.text == line).count(), 1);
}

/// The relay's proposal to remove a device the group does not hold (here a leaf beyond
/// the tree), handed to alice as a hostile relay would: refused before it is stored, with a
/// warning; alice keeps her history and goes on writing in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_of_a_device_not_in_the_group_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    alice.create_group("ops", &["bob"]).await.expect("ops");
    bob.sync(Duration::from_secs(1)).await.expect("bob joins");
    let first = secret("avant");
    bob.group_send("ops", &first).await.expect("bob writes");
    assert_eq!(receive_n(&mut alice, 1).await[0].text, first);
    let before = alice.history("ops", 100).await.expect("history");
    let epoch = alice.conversation_epoch("ops").await.expect("epoch");

    let seed: [u8; 32] = std::fs::read(daemon.data.join("keys/server-signing.key"))
        .expect("the development key source's signing key")
        .try_into()
        .expect("32 bytes");
    let proposal = alice
        .relay_removal_for_tests("ops", &seed, 57)
        .await
        .expect("a removal of leaf 57");
    alice
        .process_unrelayed(DeliveryKind::Proposal, proposal)
        .await
        .expect("processed, and refused");
    let warnings = alice.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains(
            "refused a proposal from the relay to remove the device at leaf 57, which the group \
             does not hold; nothing was changed"
        )),
        "{warnings:#?}"
    );
    assert_eq!(alice.failed_deliveries().await.expect("count"), 1);
    assert_eq!(alice.conversation_epoch("ops").await.expect("epoch"), epoch);
    assert_eq!(
        format!("{:?}", alice.history("ops", 100).await.expect("history")),
        format!("{before:?}")
    );
    let after = secret("après");
    alice
        .group_send("ops", &after)
        .await
        .expect("alice still writes");
    assert_eq!(receive_n(&mut bob, 1).await[0].text, after);
}
