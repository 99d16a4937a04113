//! Finding 1 of the red-team review: a member must not be able to speak under another
//! user's name, nor take the relay out of a group. The attacker is an enrolled device that
//! builds its commits with openmls directly, as the red team did; the relay refuses them
//! with CREDENTIAL_MISMATCH, and the victims' unmodified clients keep seeing who is who.
//! The members' own checks of such commits are unit tests in `client/src/trust.rs`.

use std::time::Duration;

use openmls::prelude::{
    BasicCredential, CredentialWithKey, Extensions, LeafNodeParameters, SignaturePublicKey,
};
use relais_client::{Client, ClientError, PreparedCommit};
use relais_protocol::pb::ErrorCode;
use relais_testkit::clients::{new_user, receive_n, server_code};
use relais_testkit::{Daemon, secret};

/// mallory's commit in her direct conversation with dave that keeps her key and carries
/// alice's credential.
async fn impersonating_commit(mallory: &mut Client, conversation: &str) -> PreparedCommit {
    mallory
        .prepare_commit_with(conversation, |group, provider, signer| {
            let as_alice = LeafNodeParameters::builder()
                .with_credential_with_key(CredentialWithKey {
                    credential: BasicCredential::new(b"alice@localhost".to_vec()).into(),
                    signature_key: SignaturePublicKey::from(signer.public().to_vec()),
                })
                .build();
            let bundle = group
                .self_update(provider, signer, as_alice)
                .map_err(|e| e.to_string())?;
            Ok(bundle.into_contents().0)
        })
        .await
        .expect("openmls builds the commit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_take_another_users_name_or_intercept_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut dave = new_user(&daemon, dir.path(), "dave").await;
    let mut mallory = new_user(&daemon, dir.path(), "mallory").await;

    mallory
        .send("dave", "bonjour dave")
        .await
        .expect("mallory writes");
    let got = receive_n(&mut dave, 1).await;
    assert_eq!(got[0].sender, "mallory@localhost");

    let commit = impersonating_commit(&mut mallory, "dave@localhost").await;
    let refused = mallory
        .submit_prepared(commit)
        .await
        .expect_err("the relay refuses the impersonation");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::CredentialMismatch),
        "{refused}"
    );
    assert!(refused.to_string().contains("alice"), "{refused}");

    // The same attack from the other side: a commit that drops the relay from the group's
    // external senders, after which revoked devices could no longer be proposed for removal.
    let commit = mallory
        .prepare_commit_with("dave@localhost", |group, provider, signer| {
            if group.pending_commit().is_some() {
                group
                    .clear_pending_commit(openmls::prelude::OpenMlsProvider::storage(provider))
                    .map_err(|e| e.to_string())?;
            }
            let (commit, _, _) = group
                .update_group_context_extensions(provider, Extensions::empty(), signer)
                .map_err(|e| e.to_string())?;
            Ok(commit)
        })
        .await
        .expect("openmls builds the commit");
    let refused = mallory
        .submit_prepared(commit)
        .await
        .expect_err("the relay refuses to be dropped");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::CredentialMismatch),
        "{refused}"
    );

    // Nothing changed: dave's reply to alice reaches alice, not mallory, and mallory's
    // conversation with dave is still hers alone.
    let reply = secret("le code du coffre est 4711");
    dave.send("alice", &reply)
        .await
        .expect("dave writes to alice");
    let got = receive_n(&mut alice, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].sender.as_str(), got[0].text.as_str()),
        ("dave@localhost", reply.as_str())
    );
    assert!(
        receive_n(&mut mallory, 0).await.is_empty(),
        "mallory receives nothing"
    );
    let members = dave
        .conversation_members("mallory@localhost")
        .await
        .expect("members");
    let users: Vec<&str> = members.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["dave@localhost", "mallory@localhost"]);
    assert_eq!(dave.failed_deliveries().await.expect("count"), 0);
}

/// The operator is a threat too (D4, D14): an enrollment code issued for bob lets whoever
/// holds it enroll a device in bob's name. The device enters conversations only through
/// commits every member verifies, and the clients say so: alice, who had verified bob, sees
/// bob's new device and her safety number for him change; carol sees it in the group she
/// joins; with require-verified alice's next send to bob is refused until she checks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_device_enrolled_by_the_operator_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;

    bob.send("alice", "salut alice").await.expect("bob writes");
    bob.send("carol", "salut carol").await.expect("bob writes");
    assert_eq!(receive_n(&mut alice, 1).await.len(), 1);
    assert_eq!(receive_n(&mut carol, 1).await.len(), 1);

    let verified_number = alice_verifies_bob_and_requires_it(&mut alice, &bob).await;

    // The operator's ghost.
    let code = daemon.issue_code("bob");
    let ghost =
        relais_testkit::clients::enroll(&daemon, &dir.path().join("ghost"), "bob", &code).await;
    let ghost_key = hex::encode(&ghost.public_key()[..4]);
    let announced = format!("bob@localhost has a new device {ghost_key}");
    alice_sees_the_new_device_and_holds_her_message_back(&mut alice, &announced, &verified_number)
        .await;
    carol_sees_the_new_device_in_the_group(&mut carol, &announced).await;

    // Once alice checked again (here: bob vouches for the ghost), sending goes on.
    let again = alice.safety_number("bob").await.expect("number");
    alice
        .confirm_safety_number("bob", &again.number)
        .await
        .expect("confirm again");
    alice
        .send("bob", "le rendez-vous est à 15h")
        .await
        .expect("verified again");
}

/// alice and bob compare their numbers; both sides compute the same one, a wrong one
/// verifies nothing, and alice confirms the right one and requires verified contacts.
/// Returns the number she verified.
async fn alice_verifies_bob_and_requires_it(alice: &mut Client, bob: &Client) -> String {
    let seen_by_alice = alice.safety_number("bob").await.expect("number");
    let seen_by_bob = bob.safety_number("alice").await.expect("number");
    assert_eq!(seen_by_alice.number, seen_by_bob.number);
    assert!(!seen_by_alice.verified);
    // One digit changed, whatever it was.
    let first = if seen_by_bob.number.starts_with('1') {
        '2'
    } else {
        '1'
    };
    let wrong = format!("{first}{}", &seen_by_bob.number[1..]);
    let refused = alice
        .confirm_safety_number("bob", &wrong)
        .await
        .expect_err("a wrong number verifies nothing");
    assert!(
        refused.to_string().contains("not the safety number"),
        "{refused}"
    );
    let verified = alice
        .confirm_safety_number(
            "bob",
            &relais_client::grouped_safety_number(&seen_by_bob.number),
        )
        .await
        .expect("confirm");
    assert!(verified.verified);
    alice.set_require_verified(true).await.expect("setting");
    seen_by_alice.number
}

/// alice makes a group with bob's devices, the ghost among them: her history `announced`
/// the new device, her number for bob is no longer the one she verified, and her next
/// message to bob is held back.
async fn alice_sees_the_new_device_and_holds_her_message_back(
    alice: &mut Client,
    announced: &str,
    verified_number: &str,
) {
    alice
        .create_group("cellule-de-crise", &["bob", "carol"])
        .await
        .expect("alice creates a group with bob's devices, the ghost among them");
    let events = alice
        .receive_with_events(Duration::from_millis(200))
        .await
        .expect("alice's history");
    assert!(
        events.iter().any(|m| m.event
            && m.text.starts_with(announced)
            && m.text.contains("bob@localhost is no longer verified")),
        "{events:?}"
    );
    let now = alice.safety_number("bob").await.expect("number");
    assert_ne!(now.number, verified_number, "the number changed");
    assert!(!now.verified && now.changed_since_verified);
    assert_eq!(
        alice.unverified_contacts("bob").await.expect("contacts"),
        ["bob@localhost"]
    );
    let refused = alice
        .send("bob", "le rendez-vous est à 15h")
        .await
        .expect_err("require-verified holds the message back");
    assert!(matches!(refused, ClientError::Unverified(_)), "{refused}");
    // Shown that another contact changed, the user's choice does not cover bob; shown bob,
    // she may send anyway (the app's "send anyway" after naming him).
    let still = alice
        .send_acknowledging(
            "bob",
            "le rendez-vous est à 15h",
            &["carol@localhost".into()],
        )
        .await
        .expect_err("acknowledging someone else does not cover bob");
    assert!(matches!(still, ClientError::Unverified(_)), "{still}");
    alice
        .send_acknowledging("bob", "le rendez-vous est à 15h", &["bob@localhost".into()])
        .await
        .expect("sent once the user chose to, knowing bob's devices changed");
}

/// carol, who knew bob's one device, sees the new one in the group she joined.
async fn carol_sees_the_new_device_in_the_group(carol: &mut Client, announced: &str) {
    let mut carol_events = Vec::new();
    let deadline = tokio::time::Instant::now() + relais_testkit::clients::WAIT;
    while !carol_events
        .iter()
        .any(|m: &relais_client::ReceivedMessage| m.event && m.text.starts_with(announced))
        && tokio::time::Instant::now() < deadline
    {
        carol_events.extend(
            carol
                .receive_with_events(Duration::from_secs(1))
                .await
                .expect("carol receives"),
        );
    }
    assert!(
        carol_events
            .iter()
            .any(|m| m.event && m.text.starts_with(announced) && m.text.contains("not verified")),
        "{carol_events:?}"
    );
}

/// A user's devices add each other (D14): a second device of alice, enrolled after she
/// joined three conversations, is in all three once her first device connects, every
/// member's history says so, and the first device can revoke it, audited, after which the
/// conversations drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_devices_add_each_other_and_revoke_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;
    alice_joins_three_conversations(&mut alice, &mut carol).await;

    let mut laptop = relais_testkit::clients::enroll(
        &daemon,
        &dir.path().join("laptop"),
        "alice",
        &daemon.issue_code("alice"),
    )
    .await;
    alices_first_device_adds_the_laptop_everywhere(&mut alice, &mut laptop).await;
    every_member_sees_the_laptop(&mut alice, &mut bob, &mut laptop).await;

    // The first device revokes the laptop; the relay audits it and the groups drop it.
    only_alices_first_device_revokes_the_laptop(&daemon, &mut alice, &mut bob, &laptop).await;
    for _ in 0..3 {
        alice
            .sync(Duration::from_secs(1))
            .await
            .expect("alice commits the removals");
        bob.sync(Duration::from_secs(1)).await.expect("bob follows");
    }
    let members = bob.conversation_members("ops").await.expect("members");
    assert!(
        !members
            .iter()
            .any(|(_, key)| *key == hex::encode(laptop.public_key())),
        "ops dropped the laptop: {members:?}"
    );
    assert_eq!(alice.devices().await.expect("devices").len(), 1);
}

/// alice writes to bob directly, makes the group `ops` with bob and carol, and joins
/// carol's `logistique`.
async fn alice_joins_three_conversations(alice: &mut Client, carol: &mut Client) {
    alice.send("bob", "bonjour").await.expect("direct");
    alice
        .create_group("ops", &["bob", "carol"])
        .await
        .expect("ops");
    carol
        .create_group("logistique", &["alice"])
        .await
        .expect("logistique");
    alice
        .sync(Duration::from_secs(2))
        .await
        .expect("alice joins");
    assert_eq!(alice.conversations().await.expect("list").len(), 3);
}

/// alice's first device lists the laptop and adds it to each of her conversations.
async fn alices_first_device_adds_the_laptop_everywhere(alice: &mut Client, laptop: &mut Client) {
    let listed = alice.devices().await.expect("devices");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|d| d.this_device && d.device_id == alice.device_id())
    );
    assert_eq!(
        alice.add_own_devices().await.expect("add"),
        3,
        "one commit per conversation"
    );
    assert!(alice.take_warnings().is_empty());
    laptop
        .sync(Duration::from_secs(3))
        .await
        .expect("the laptop joins");
    let mut joined = laptop.conversations().await.expect("list");
    joined.sort();
    assert_eq!(joined, ["bob@localhost", "logistique", "ops"]);
}

/// Every member sees the new device, alice's other device included, and the laptop gets
/// what bob writes to `ops`.
async fn every_member_sees_the_laptop(alice: &mut Client, bob: &mut Client, laptop: &mut Client) {
    let announced = format!(
        "alice@localhost has a new device {}",
        hex::encode(&laptop.public_key()[..4])
    );
    let seen_by = |events: Vec<relais_client::ReceivedMessage>| {
        events
            .iter()
            .filter(|m| m.event && m.text.starts_with(&announced))
            .count()
    };
    assert!(
        seen_by(
            alice
                .receive_with_events(Duration::from_millis(300))
                .await
                .expect("h")
        ) >= 1
    );
    assert!(
        seen_by(
            bob.receive_with_events(Duration::from_secs(2))
                .await
                .expect("h")
        ) >= 1
    );
    let text = secret("pour les deux appareils d'alice");
    bob.group_send("ops", &text).await.expect("bob writes");
    let got = receive_n(laptop, 1).await;
    assert_eq!(
        (got[0].conversation.as_str(), got[0].text.as_str()),
        ("ops", text.as_str())
    );
}

/// A device cannot revoke itself and bob cannot revoke alice's laptop; alice's first
/// device does, and the relay audits it with that device as the actor.
async fn only_alices_first_device_revokes_the_laptop(
    daemon: &Daemon,
    alice: &mut Client,
    bob: &mut Client,
    laptop: &Client,
) {
    let own_id = alice.device_id().to_owned();
    let refused = alice.revoke_device(&own_id).await.expect_err("not itself");
    assert!(
        refused.to_string().contains("cannot revoke itself"),
        "{refused}"
    );
    let refused = bob
        .revoke_device(laptop.device_id())
        .await
        .expect_err("not bob's");
    assert_eq!(server_code(&refused), Some(ErrorCode::UnknownDevice));
    alice
        .revoke_device(laptop.device_id())
        .await
        .expect("revoke");
    let audit = daemon.admin(&["audit", "export"]);
    let revocation = audit
        .lines()
        .find(|l| {
            l.contains("\"device_revoke\"")
                && l.contains(laptop.device_id())
                && l.contains("\"ok\"")
        })
        .unwrap_or_else(|| panic!("the revocation is audited: {audit}"));
    assert!(
        revocation.contains(&format!("device:alice@localhost/{}", alice.device_id())),
        "{revocation}"
    );
}
