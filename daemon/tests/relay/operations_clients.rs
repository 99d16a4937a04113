//! The operator's job with real clients on the line: deleting a user mid-conversation,
//! retention and device details, and a backup taken while clients send.

use std::time::Duration;

use relais_client::{Client, ClientError, ErrorCode};
use relais_testkit::clients::enroll;
use relais_testkit::{Daemon, secret};

async fn texts(client: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(
            client
                .receive(Duration::from_secs(1))
                .await
                .expect("receive")
                .into_iter()
                .map(|m| m.text),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_cuts_it_off_and_the_group_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = enroll(
        &daemon,
        &dir.path().join("alice"),
        "alice",
        &daemon.add_user("alice"),
    )
    .await;
    let mut bob = enroll(
        &daemon,
        &dir.path().join("bob"),
        "bob",
        &daemon.add_user("bob"),
    )
    .await;
    let mut carol = enroll(
        &daemon,
        &dir.path().join("carol"),
        "carol",
        &daemon.add_user("carol"),
    )
    .await;
    alice
        .create_group("cell", &["bob", "carol"])
        .await
        .expect("create");
    bob.sync(Duration::from_secs(5)).await.expect("bob joins");
    carol
        .sync(Duration::from_secs(5))
        .await
        .expect("carol joins");
    let epoch = alice.conversation_epoch("cell").await.expect("epoch");

    daemon.admin(&["user", "delete", "carol"]);

    // Carol's connection is closed at once and she cannot come back.
    let cut = carol.receive(Duration::from_secs(2)).await;
    assert!(cut.as_ref().map_or(true, Vec::is_empty), "{cut:?}");
    carol.close().await;
    let mut again = Client::open(&dir.path().join("carol")).await.expect("open");
    let refused = again
        .connect()
        .await
        .expect_err("a deleted user's device cannot reconnect");
    assert!(
        matches!(
            refused,
            ClientError::Server {
                code: ErrorCode::DeviceRevoked,
                ..
            }
        ),
        "{refused}"
    );

    // The service proposed her removal; a member committed it; the others go on.
    alice
        .sync(Duration::from_secs(3))
        .await
        .expect("alice processes the proposal");
    bob.sync(Duration::from_secs(3))
        .await
        .expect("bob processes the commit");
    let members = alice.conversation_members("cell").await.expect("members");
    let users: Vec<&str> = members.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        users,
        ["alice@localhost", "bob@localhost"],
        "carol was removed from the group"
    );
    assert!(alice.conversation_epoch("cell").await.expect("epoch") > epoch);
    assert_eq!(
        bob.conversation_members("cell").await.expect("members"),
        members
    );

    let text = secret("after-deletion");
    bob.group_send("cell", &text).await.expect("bob sends");
    assert_eq!(texts(&mut alice, 1).await, std::slice::from_ref(&text));
    daemon.assert_never_stored(&[text]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purge_expires_old_messages_and_device_show_reports_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[retention]\ndays = 7\n");
    let mut alice = enroll(
        &daemon,
        &dir.path().join("alice"),
        "alice",
        &daemon.add_user("alice"),
    )
    .await;
    let bob = enroll(
        &daemon,
        &dir.path().join("bob"),
        "bob",
        &daemon.add_user("bob"),
    )
    .await;
    let bob_device = bob.device_id().to_owned();
    bob.close().await;
    alice.send("bob", &secret("old")).await.expect("send");
    alice.close().await;

    let shown: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "device", "show", "bob", &bob_device]))
            .expect("json");
    assert_eq!(
        shown["queued"], 3,
        "the Welcome, the info message and the text wait for bob: {shown}"
    );
    assert_eq!(shown["groups"], 1);
    assert_eq!(
        shown["key_packages"], 39,
        "one of forty was claimed: {shown}"
    );
    assert_eq!(shown["last_resort_key_package"], true);
    assert_eq!(shown["online"], false);

    // Nothing is old enough yet; then age the messages past the retention period.
    let purge: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "retention", "purge"])).expect("json");
    assert_eq!(purge["expired_messages"], 0);
    let url = format!("sqlite://{}", daemon.data.join("relais.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the database");
    let eight_days_ago = relais_testkit::now_ms() - 8 * 86_400_000;
    sqlx::query("UPDATE messages SET accepted_at = ?")
        .bind(eight_days_ago)
        .execute(&pool)
        .await
        .expect("age");
    pool.close().await;
    let purge: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "retention", "purge"])).expect("json");
    assert_eq!(purge["expired_messages"], 3);
    let status: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "status"])).expect("json");
    assert_eq!(status["queued_deliveries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_clients_send_restores_every_acknowledged_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    let mut alice = enroll(
        &daemon,
        &dir.path().join("alice"),
        "alice",
        &daemon.add_user("alice"),
    )
    .await;
    let bob = enroll(
        &daemon,
        &dir.path().join("bob"),
        "bob",
        &daemon.add_user("bob"),
    )
    .await;
    bob.close().await;

    let backup = daemon.backups.join("backup.db");
    let (acknowledged_before, sent) = send_while_a_backup_runs(&daemon, &mut alice, &backup).await;
    alice.close().await;
    daemon.stop();
    let restored = restore_on_a_new_appliance(daemon, &backup, &dir.path().join("restored"));

    let mut bob = Client::open(&dir.path().join("bob"))
        .await
        .expect("open bob");
    bob.connect()
        .await
        .expect("bob connects to the restored daemon");
    let got = texts(&mut bob, acknowledged_before.len()).await;
    for text in &acknowledged_before {
        assert!(
            got.contains(text),
            "{text} was acknowledged before the backup but is missing"
        );
    }
    restored.assert_never_stored(&sent);
}

/// Alice keeps sending while the backup to `backup` runs; what was acknowledged before the
/// backup started must be in it. Returns those texts, and every text sent.
async fn send_while_a_backup_runs(
    daemon: &Daemon,
    alice: &mut Client,
    backup: &std::path::Path,
) -> (Vec<String>, Vec<String>) {
    let socket = daemon.admin_socket.clone();
    let backup_arg = backup.to_owned();
    let mut acknowledged_before = Vec::new();
    let mut sent = Vec::new();
    for i in 0..10 {
        let text = secret(&format!("before-{i}"));
        alice.send("bob", &text).await.expect("send");
        acknowledged_before.push(text.clone());
        sent.push(text);
    }
    let backup_task = tokio::task::spawn_blocking(move || {
        std::process::Command::new(relais_testkit::relaisd())
            .arg("admin")
            .arg("--socket")
            .arg(&socket)
            .arg("backup")
            .arg("--to")
            .arg(&backup_arg)
            .output()
            .expect("run backup")
    });
    for i in 0..10 {
        let text = secret(&format!("during-{i}"));
        alice.send("bob", &text).await.expect("send");
        sent.push(text);
    }
    let out = backup_task.await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (acknowledged_before, sent)
}

/// A new appliance in `restored_dir` from the stopped `daemon`'s backup: same certificates
/// and keys, restored database, serving on the old appliance's address.
fn restore_on_a_new_appliance(
    daemon: Daemon,
    backup: &std::path::Path,
    restored_dir: &std::path::Path,
) -> Daemon {
    let restored_data = restored_dir.join("data");
    let status = std::process::Command::new(relais_testkit::relaisd())
        .args(["restore", "--from"])
        .arg(backup)
        .arg("--data")
        .arg(&restored_data)
        .status()
        .expect("restore");
    assert!(status.success());
    for file in ["ca.pem", "server.pem", "server.key", "keys"] {
        copy_recursively(&daemon.data.join(file), &restored_data.join(file));
    }
    let old_addr = daemon.addr.clone();
    drop(daemon);
    let mut restored = Daemon::start(restored_dir, "");
    // Bob's client knows the old address: move it to the restored daemon's.
    restored.stop();
    let config = std::fs::read_to_string(&restored.config).expect("config");
    std::fs::write(
        &restored.config,
        config.replace(
            "client = \"127.0.0.1:0\"",
            &format!("client = \"{old_addr}\""),
        ),
    )
    .expect("config");
    restored.launch();
    restored
}

fn copy_recursively(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).expect("copy");
    }
}
