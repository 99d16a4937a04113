//! Groups their members govern, with the real relaisd over real TLS: a non-admin's removal
//! and a forged role change are refused by the relay (NOT_GROUP_ADMIN) and, built by hand
//! and handed to a member as a hostile relay would, by the member too, with nothing stored
//! lost; an admin's removal takes effect for everyone; a rename and a departure are seen by
//! all, a departure holds after the leaving device is gone, takes the user's other devices
//! with it, and the last admin leaving makes the longest-standing member admin.
//! The rule itself is unit-tested in `core/src/mls/governance/tests.rs`, the members' check
//! in `client/src/trust.rs`.

use std::time::Duration;

use openmls::prelude::{
    BasicCredential, LeafNodeIndex, MlsGroup, MlsMessageOut, tls_codec::Serialize as _,
};
use relais_client::{Client, ClientError};
use relais_core::mls::governance::{self, Entry, Governance};
use relais_protocol::pb::{DeliveryKind, ErrorCode};
use relais_testkit::clients::{enroll, new_user, receive_n, server_code};
use relais_testkit::{Daemon, secret};

/// Processes deliveries for a moment.
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

/// The events (membership and governance lines) of a conversation's history.
async fn events(client: &Client, conversation: &str) -> Vec<String> {
    client
        .history(conversation, 200)
        .await
        .unwrap_or_else(|e| panic!("{}'s history of {conversation}: {e}", client.user()))
        .into_iter()
        .filter(|m| m.event)
        .map(|m| m.text)
        .collect()
}

/// The texts (not events) of a conversation's history.
async fn texts(client: &Client, conversation: &str) -> Vec<String> {
    client
        .history(conversation, 200)
        .await
        .expect("history")
        .into_iter()
        .filter(|m| !m.event)
        .map(|m| m.text)
        .collect()
}

/// The users of a group and whether each is an admin, as `relais group members` says.
async fn roles(client: &mut Client, conversation: &str) -> Vec<(String, bool)> {
    let mut users: Vec<(String, bool)> = client
        .group_members(conversation)
        .await
        .expect("members")
        .into_iter()
        .map(|m| (m.user, m.admin))
        .collect();
    users.dedup();
    users
}

/// A hand-built commit's bytes, as a member would receive them.
fn wire(commit: &MlsMessageOut) -> Result<Vec<u8>, String> {
    commit.tls_serialize_detached().map_err(|e| e.to_string())
}

/// The leaf of `user`'s device in `group` (each user has one in these tests).
fn leaf(group: &MlsGroup, user: &str) -> LeafNodeIndex {
    group
        .members()
        .find(|m| {
            BasicCredential::try_from(m.credential.clone())
                .is_ok_and(|c| c.identity() == user.as_bytes())
        })
        .unwrap_or_else(|| panic!("{user} is in the group"))
        .index
}

/// alice's group "crise" with bob and carol, everyone joined, and a first message read.
async fn crise(daemon: &Daemon, dir: &std::path::Path) -> (Client, Client, Client) {
    let mut alice = new_user(daemon, dir, "alice").await;
    let mut bob = new_user(daemon, dir, "bob").await;
    let mut carol = new_user(daemon, dir, "carol").await;
    alice
        .create_group("crise", &["bob", "carol"])
        .await
        .expect("alice creates the group");
    settle(&mut [&mut bob, &mut carol]).await;
    alice
        .group_send("crise", "point de situation à 9h")
        .await
        .expect("alice writes");
    for client in [&mut bob, &mut carol] {
        assert_eq!(receive_n(client, 1).await.len(), 1, "{}", client.user());
    }
    assert_eq!(
        roles(&mut carol, "crise").await,
        [
            ("alice@localhost".to_owned(), true),
            ("bob@localhost".to_owned(), false),
            ("carol@localhost".to_owned(), false)
        ]
    );
    (alice, bob, carol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admins_removal_is_refused_by_the_relay_and_by_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let (mut alice, mut bob, mut carol) = crise(&daemon, dir.path()).await;
    let epoch = carol.conversation_epoch("crise").await.expect("epoch");

    // The client says no before anything leaves.
    let refused = bob
        .remove_member("crise", "carol")
        .await
        .expect_err("bob is not an admin");
    assert!(refused.is_usage(), "{refused}");
    assert!(
        refused.to_string().contains("ask alice@localhost"),
        "{refused}"
    );

    // Built by hand with openmls, as a hostile member would, it reaches the relay, which
    // refuses it with the stable code.
    let mut bytes = Vec::new();
    let commit = bob
        .prepare_commit_with("crise", |group, provider, signer| {
            let carol = leaf(group, "carol@localhost");
            let (commit, _, _) = group
                .remove_members(provider, signer, &[carol])
                .map_err(|e| e.to_string())?;
            bytes = wire(&commit)?;
            Ok(commit)
        })
        .await
        .expect("openmls lets bob build it");
    let refused = bob
        .submit_prepared(commit)
        .await
        .expect_err("the relay refuses");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::NotGroupAdmin),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("removing carol@localhost"),
        "{refused}"
    );

    // Handed to carol as if a relay had let it through, her device refuses it too.
    carol_refuses(&mut carol, bytes, "removing carol@localhost", epoch).await;

    // Nothing changed for anyone: alice's next message reaches both.
    let text = secret("la réunion est maintenue");
    alice
        .group_send("crise", &text)
        .await
        .expect("alice writes");
    for client in [&mut bob, &mut carol] {
        let got = receive_n(client, 1).await;
        assert_eq!(got.len(), 1, "{}: {got:?}", client.user());
        assert_eq!(got[0].text, text);
    }
    daemon.assert_never_stored(&[text]);
}

/// carol processes a commit a relay should not have delivered: it is refused with a
/// warning that says why, counted, and nothing she stored is lost.
async fn carol_refuses(carol: &mut Client, commit: Vec<u8>, why: &str, epoch: u64) {
    let before = carol.history("crise", 200).await.expect("history");
    carol
        .process_unrelayed(DeliveryKind::Commit, commit)
        .await
        .expect("a refused commit is not an error of carol's");
    let warnings = carol.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("refused a commit from bob@localhost")
                && w.contains("bob@localhost is not an admin")
                && w.contains(why)),
        "{warnings:?}"
    );
    assert_eq!(carol.failed_deliveries().await.expect("count"), 1);
    assert_eq!(
        carol.conversation_epoch("crise").await.expect("epoch"),
        epoch
    );
    assert_eq!(carol.history("crise", 200).await.expect("history"), before);
    assert_eq!(
        roles(carol, "crise").await,
        [
            ("alice@localhost".to_owned(), true),
            ("bob@localhost".to_owned(), false),
            ("carol@localhost".to_owned(), false)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_role_change_is_refused_and_nothing_stored_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let (mut alice, mut bob, mut carol) = crise(&daemon, dir.path()).await;
    let epoch = carol.conversation_epoch("crise").await.expect("epoch");

    // bob writes himself in as an admin.
    let mut bytes = Vec::new();
    let commit = bob
        .prepare_commit_with("crise", |group, provider, signer| {
            let roles = Governance::of(group.extensions())?.ok_or("no roles")?;
            let forged = governance::with_governance(
                group.extensions(),
                &roles.with_admin("bob@localhost"),
            )?;
            let (commit, _, _) = group
                .update_group_context_extensions(provider, forged, signer)
                .map_err(|e| e.to_string())?;
            bytes = wire(&commit)?;
            Ok(commit)
        })
        .await
        .expect("openmls lets bob build it");
    let refused = bob
        .submit_prepared(commit)
        .await
        .expect_err("the relay refuses");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::NotGroupAdmin),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("changing the group's roles"),
        "{refused}"
    );
    carol_refuses(&mut carol, bytes, "changing the group's roles", epoch).await;
    roles_that_do_not_read_are_refused(&mut alice).await;

    // The group goes on as it was.
    alice
        .group_send("crise", "toujours là")
        .await
        .expect("alice writes");
    for client in [&mut bob, &mut carol] {
        assert_eq!(
            texts_after(client, 1).await,
            ["toujours là"],
            "{}",
            client.user()
        );
    }
}

/// Roles that do not read are refused even from the admin, with a reason.
async fn roles_that_do_not_read_are_refused(alice: &mut Client) {
    let commit = alice
        .prepare_commit_with("crise", |group, provider, signer| {
            let bad = Governance {
                name: "crise".into(),
                users: vec![Entry {
                    user: "Not A User".into(),
                    admin: true,
                }],
            };
            let extensions = governance::with_governance(group.extensions(), &bad)?;
            let (commit, _, _) = group
                .update_group_context_extensions(provider, extensions, signer)
                .map_err(|e| e.to_string())?;
            Ok(commit)
        })
        .await
        .expect("openmls lets alice build it");
    let refused = alice
        .submit_prepared(commit)
        .await
        .expect_err("the relay refuses");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::InvalidCommit),
        "{refused}"
    );
    assert!(refused.to_string().contains("not a user"), "{refused}");
}

async fn texts_after(client: &mut Client, n: usize) -> Vec<String> {
    receive_n(client, n)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_removal_takes_effect_for_everyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let (mut alice, mut bob, mut carol) = crise(&daemon, dir.path()).await;

    alice
        .remove_member("crise", "carol")
        .await
        .expect("an admin removes carol");
    settle(&mut [&mut bob, &mut carol]).await;
    for client in [&mut alice, &mut bob] {
        let users: Vec<String> = roles(client, "crise")
            .await
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(
            users,
            ["alice@localhost", "bob@localhost"],
            "{}",
            client.user()
        );
    }
    for client in [&bob, &carol] {
        let seen = events(client, "crise").await;
        assert!(
            seen.iter()
                .any(|e| e == "alice@localhost removed carol@localhost"),
            "{}: {seen:?}",
            client.user()
        );
    }
    // carol keeps her history, and can no longer write; nothing more reaches her.
    assert_eq!(texts(&carol, "crise").await, ["point de situation à 9h"]);
    let refused = carol
        .group_send("crise", "encore moi")
        .await
        .expect_err("carol is out");
    assert!(
        refused.to_string().contains("no longer a member"),
        "{refused}"
    );
    let text = secret("sans carol");
    alice
        .group_send("crise", &text)
        .await
        .expect("alice writes");
    assert_eq!(texts_after(&mut bob, 1).await, [text.as_str()]);
    assert!(receive_n(&mut carol, 0).await.is_empty());
    assert_eq!(carol.failed_deliveries().await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_departure_are_seen_by_all_and_the_last_admin_leaving_promotes_someone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let (mut alice, mut bob, mut carol) = crise(&daemon, dir.path()).await;

    an_admin_renames_and_everyone_sees_it(&mut alice, &mut bob, &mut carol).await;

    // alice, the only admin, leaves and is gone at once: bob, who joined before carol (the
    // group records its users in order), becomes admin when the others take her out.
    alice.leave("cellule").await.expect("alice leaves");
    alice.close().await;
    settle(&mut [&mut bob, &mut carol]).await;
    for client in [&mut bob, &mut carol] {
        assert_eq!(
            roles(client, "cellule").await,
            [
                ("bob@localhost".to_owned(), true),
                ("carol@localhost".to_owned(), false)
            ],
            "{}",
            client.user()
        );
        let seen = events(client, "cellule").await;
        for line in [
            "alice@localhost left",
            "bob@localhost is now an admin: no admin was left in the group",
        ] {
            assert!(
                seen.iter().any(|e| e == line),
                "{}: {line} in {seen:?}",
                client.user()
            );
        }
    }
    the_new_admins_rights_hold(&mut bob, &mut carol).await;
}

/// A rename only an admin may make, that every member sees.
async fn an_admin_renames_and_everyone_sees_it(
    alice: &mut Client,
    bob: &mut Client,
    carol: &mut Client,
) {
    let refused = carol
        .rename_group("crise", "cellule")
        .await
        .expect_err("carol is not an admin");
    assert!(refused.is_usage(), "{refused}");
    alice
        .rename_group("crise", "cellule")
        .await
        .expect("alice renames");
    settle(&mut [bob, carol]).await;
    for client in [&*alice, &*bob, &*carol] {
        let names = client.conversations().await.expect("list");
        assert_eq!(names, ["cellule"], "{}", client.user());
        let seen = events(client, "cellule").await;
        assert!(
            seen.iter()
                .any(|e| e == "alice@localhost renamed the group to cellule"),
            "{}: {seen:?}",
            client.user()
        );
    }
}

/// bob's rights, by succession, hold at the relay: he makes carol an admin (and stays
/// one), and removes her.
async fn the_new_admins_rights_hold(bob: &mut Client, carol: &mut Client) {
    bob.promote("cellule", "carol")
        .await
        .expect("bob, now admin, promotes carol");
    settle(&mut [carol]).await;
    assert_eq!(
        roles(carol, "cellule").await,
        [
            ("bob@localhost".to_owned(), true),
            ("carol@localhost".to_owned(), true)
        ]
    );
    assert!(
        events(carol, "cellule")
            .await
            .iter()
            .any(|e| e == "bob@localhost made carol@localhost an admin")
    );
    bob.remove_member("cellule", "carol")
        .await
        .expect("bob removes carol");
    settle(&mut [carol]).await;
    assert!(
        events(carol, "cellule")
            .await
            .iter()
            .any(|e| e == "bob@localhost removed carol@localhost")
    );
    for client in [&*bob, &*carol] {
        assert_eq!(client.failed_deliveries().await.expect("count"), 0);
    }
}

/// A departure is the user's: alice leaves from her phone, which never connects again, and
/// her laptop is taken out too (the relay proposes it), without adding the phone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_takes_the_users_other_devices_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut phone = new_user(&daemon, dir.path(), "alice").await;
    let mut laptop = enroll(
        &daemon,
        &dir.path().join("laptop"),
        "alice",
        &daemon.issue_code("alice"),
    )
    .await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    bob.create_group("ops", &["alice"])
        .await
        .expect("bob's group with both of alice's devices");
    settle(&mut [&mut phone, &mut laptop]).await;
    assert_eq!(bob.group_members("ops").await.expect("members").len(), 3);

    phone.leave("ops").await.expect("alice leaves");
    // The relay hands the phone its own departure back: nothing to do, nothing refused.
    phone
        .sync(Duration::from_millis(500))
        .await
        .expect("the phone syncs");
    assert!(phone.take_warnings().is_empty());
    assert_eq!(phone.failed_deliveries().await.expect("count"), 0);
    phone.close().await;
    // bob takes the phone out, the relay proposes the laptop's removal, bob takes it out.
    for _ in 0..3 {
        settle(&mut [&mut bob, &mut laptop]).await;
    }
    let members = bob.group_members("ops").await.expect("members");
    assert_eq!(
        members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["bob@localhost"],
        "{members:?}"
    );
    let seen = events(&bob, "ops").await;
    assert!(
        seen.iter().any(|e| e.starts_with("alice@localhost left")),
        "{seen:?}"
    );
    // The laptop, out of the group, does not bring alice back when it connects again.
    laptop.connect().await.expect("the laptop reconnects");
    assert!(laptop.take_warnings().is_empty());
    settle(&mut [&mut bob]).await;
    assert_eq!(bob.group_members("ops").await.expect("members").len(), 1);
    let refused = laptop
        .group_send("ops", "encore là ?")
        .await
        .expect_err("the laptop is out");
    assert!(refused.is_usage(), "{refused}");
    assert!(matches!(refused, ClientError::Usage(_)));
    assert_eq!(laptop.failed_deliveries().await.expect("count"), 0);
    assert_eq!(bob.failed_deliveries().await.expect("count"), 0);
}

/// The commands as the README gives them, with the real `relais` binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_work_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let (alice, bob, carol) = crise(&daemon, dir.path()).await;
    for client in [alice, bob, carol] {
        client.close().await;
    }
    let relais = |home: &str, args: &[&str]| {
        let relais = relais_testkit::relaisd().with_file_name("relais");
        let out = std::process::Command::new(&relais)
            .arg("--home")
            .arg(dir.path().join(home))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}; build the workspace first", relais.display()));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, _, stderr) = relais("bob", &["group", "remove", "crise", "carol"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("only an admin of crise"), "{stderr}");
    let (code, stdout, stderr) = relais("alice", &["group", "promote", "crise", "bob"]);
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "bob is an admin of crise\n"),
        "{stderr}"
    );
    let (_, members, _) = relais("bob", &["group", "members", "crise"]);
    let roles: Vec<(&str, &str)> = members
        .lines()
        .map(|l| {
            let mut fields = l.split('\t');
            (fields.next().unwrap_or(""), fields.next().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("alice@localhost", "admin"),
            ("bob@localhost", "admin"),
            ("carol@localhost", "member")
        ],
        "{members}"
    );
    let (code, _, stderr) = relais("bob", &["group", "rename", "crise", "cellule"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = relais("carol", &["group", "leave", "cellule"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, seen, _) = relais("alice", &["recv"]);
    for line in [
        "cellule\t*\t",
        "alice@localhost made bob@localhost an admin",
        "bob@localhost renamed the group to cellule",
        "carol@localhost left",
    ] {
        assert!(seen.contains(line), "{line} in {seen}");
    }
}
