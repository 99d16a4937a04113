//! relaisd on PostgreSQL, end to end, with real clients.
//!
//! Active-active: two nodes on one database behind a TCP load balancer (a small
//! forwarding proxy here, as HAProxy would be in a data centre). Devices on different
//! nodes converse both ways in one group; then the node two of them are connected to is
//! killed with SIGKILL, they reconnect through the balancer to the other node, and every
//! message that was acknowledged to its sender reaches every other member exactly once.
//!
//! Moving an appliance: `relaisd storage copy` takes a stopped SQLite appliance with
//! queued messages into PostgreSQL, and a node on PostgreSQL delivers all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relais_client::Client;
use relais_testkit::clients::{WAIT, enroll, enroll_through, receive_n};
use relais_testkit::nodes::{Balancer, count, queue_for_offline_bob, reconnect, share_identity};
use relais_testkit::postgres::Database;
use relais_testkit::{Daemon, secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_group_and_survive_the_loss_of_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = Database::create(dir.path()).await else {
        return;
    };
    let (mut node_a, node_b) = two_nodes(dir.path(), &database);
    let balancer = Balancer::start(&node_a.addr).await;

    // Alice and Carol reach node A through the balancer; Bob is on node B. Accounts made
    // through either node's admin socket are the same accounts.
    let mut alice = enroll_through(
        &balancer.server(),
        &node_a,
        &dir.path().join("alice"),
        "alice",
        &node_a.add_user("alice"),
    )
    .await;
    let mut carol = enroll_through(
        &balancer.server(),
        &node_a,
        &dir.path().join("carol"),
        "carol",
        &node_b.add_user("carol"),
    )
    .await;
    let mut bob = enroll(
        &node_b,
        &dir.path().join("bob"),
        "bob",
        &node_a.add_user("bob"),
    )
    .await;

    the_group_talks_across_the_nodes(&mut alice, &mut bob, &mut carol).await;
    a_device_revoked_through_one_node_is_cut_off_on_the_other(&node_a, &node_b, dir.path()).await;
    a_device_that_moves_to_the_other_node_replaces_its_connection(
        &node_a,
        &node_b,
        &balancer,
        dir.path(),
    )
    .await;
    let (acknowledged, from_alice) = alice_and_bob_write_while_node_a_dies(
        &mut node_a,
        &node_b,
        &balancer,
        &mut alice,
        &mut bob,
    )
    .await;
    reconnect(&mut carol).await;
    each_acknowledged_message_arrives_once(
        &acknowledged,
        &from_alice,
        &mut alice,
        &mut bob,
        &mut carol,
    )
    .await;
    // Nothing is left waiting: the queues of all three devices are empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(database.scalar("SELECT COUNT(*) FROM queue").await, 0);
}

/// Node A and node B on `database`, serving with one identity.
fn two_nodes(dir: &Path, database: &Database) -> (Daemon, Daemon) {
    // No periodic catch-up during the test: what crosses nodes does so by notification.
    let config = format!("{}catch_up_seconds = 3600\n", database.config());
    let node_a = Daemon::start(&dir.join("a"), &config);
    share_identity(&node_a.data, &dir.join("b").join("data"));
    // Node B names the database by host name: resolving it works inside the sandbox.
    let config_b = config.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(config_b, config);
    let node_b = Daemon::start(&dir.join("b"), &config_b);
    (node_a, node_b)
}

/// Alice makes a group with Bob and Carol; messages go both ways across the nodes.
async fn the_group_talks_across_the_nodes(
    alice: &mut Client,
    bob: &mut Client,
    carol: &mut Client,
) {
    alice
        .create_group("ops", &["bob", "carol"])
        .await
        .expect("create the group");
    for client in [&mut *bob, &mut *carol] {
        client.sync(WAIT).await.expect("join from the Welcome");
    }
    let hello = secret("hello-from-a");
    alice.group_send("ops", &hello).await.expect("alice sends");
    let reply = secret("reply-from-b");
    bob.group_send("ops", &reply).await.expect("bob sends");
    let got = receive_n(bob, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(hello.clone(), 1)]), "A to B");
    let got = receive_n(alice, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(reply.clone(), 1)]), "B to A");
    let got = receive_n(carol, 2).await;
    assert_eq!(
        count(&got),
        BTreeMap::from([(hello, 1), (reply, 1)]),
        "the third member, on A, gets both"
    );
}

/// A device on node B revoked through node A's admin socket is cut off on node B at
/// once, not at its next reconnection.
async fn a_device_revoked_through_one_node_is_cut_off_on_the_other(
    node_a: &Daemon,
    node_b: &Daemon,
    dir: &Path,
) {
    let mut dave = enroll(node_b, &dir.join("dave"), "dave", &node_b.add_user("dave")).await;
    let list: serde_json::Value =
        serde_json::from_str(&node_a.admin(&["--json", "device", "list", "dave"])).expect("json");
    let device = list[0]["device"].as_str().expect("device id").to_owned();
    node_a.admin(&["device", "revoke", "dave", &device]);
    let cut = dave.receive(Duration::from_secs(5)).await;
    assert!(
        matches!(&cut, Err(relais_client::ClientError::Server { code, .. }) if *code == relais_protocol::pb::ErrorCode::DeviceRevoked),
        "node B closes the revoked device's connection: {cut:?}"
    );
}

/// Erin's device connects through node A, then again through node B, as a phone that
/// changed networks: node A closes the older connection at once.
async fn a_device_that_moves_to_the_other_node_replaces_its_connection(
    node_a: &Daemon,
    node_b: &Daemon,
    balancer: &Balancer,
    dir: &Path,
) {
    let code = node_a.add_user("erin");
    let mut erin =
        enroll_through(&balancer.server(), node_a, &dir.join("erin"), "erin", &code).await;
    balancer.send_to(&node_b.addr);
    let mut erin_again = relais_client::Client::open(&dir.join("erin"))
        .await
        .expect("erin's device");
    erin_again.connect().await.expect("erin connects to node B");
    balancer.send_to(&node_a.addr);
    let cut = erin.receive(Duration::from_secs(5)).await;
    assert!(
        matches!(&cut, Err(relais_client::ClientError::Server { code, .. }) if *code == relais_protocol::pb::ErrorCode::Replaced),
        "node A closes the connection node B replaced: {cut:?}"
    );
}

/// Carol stops reading; Alice and Bob keep writing; node A dies in the middle and the
/// balancer moves to node B. Returns every message acknowledged to its sender, and those
/// of them that Alice sent.
async fn alice_and_bob_write_while_node_a_dies(
    node_a: &mut Daemon,
    node_b: &Daemon,
    balancer: &Balancer,
    alice: &mut Client,
    bob: &mut Client,
) -> (Vec<String>, Vec<String>) {
    let mut acknowledged: Vec<String> = Vec::new();
    let mut from_alice: Vec<String> = Vec::new();
    for i in 0..30 {
        let text = secret(&format!("bob-{i}"));
        bob.group_send("ops", &text)
            .await
            .expect("bob's node is up");
        acknowledged.push(text);
        let text = secret(&format!("alice-{i}"));
        if i == 15 {
            node_a.kill();
            balancer.send_to(&node_b.addr);
        }
        if alice.group_send("ops", &text).await.is_ok() {
            acknowledged.push(text.clone());
            from_alice.push(text);
        } else {
            reconnect(alice).await;
        }
    }
    assert!(
        from_alice.len() >= 15,
        "alice's messages before the kill: {from_alice:?}"
    );
    (acknowledged, from_alice)
}

/// Each member, all on node B now, gets every acknowledged message of the others exactly
/// once: Carol all of them, Bob Alice's, Alice Bob's.
async fn each_acknowledged_message_arrives_once(
    acknowledged: &[String],
    from_alice: &[String],
    alice: &mut Client,
    bob: &mut Client,
    carol: &mut Client,
) {
    let expected_by_carol: BTreeMap<String, usize> =
        acknowledged.iter().map(|t| (t.clone(), 1)).collect();
    let got = receive_n(carol, expected_by_carol.len()).await;
    assert_eq!(
        count(&got),
        expected_by_carol,
        "carol, moved to B, gets each message once"
    );
    let got = receive_n(bob, from_alice.len()).await;
    let expected_by_bob: BTreeMap<String, usize> =
        from_alice.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(
        count(&got),
        expected_by_bob,
        "bob gets each of alice's once"
    );
    let bobs: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !from_alice.contains(t))
        .collect();
    let got = receive_n(alice, bobs.len()).await;
    let counts = count(&got);
    for text in bobs {
        assert_eq!(
            counts.get(text),
            Some(&1),
            "alice gets {text} once: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_copy_moves_an_appliance_with_queued_messages_to_postgresql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = Database::create(dir.path()).await else {
        return;
    };
    let mut appliance = Daemon::start(&dir.path().join("sqlite"), "");
    // Bob is offline: everything Alice sends waits in his queue.
    let (balancer, sent) = queue_for_offline_bob(&mut appliance, dir.path(), 5, "queued").await;

    let copy = std::process::Command::new(relais_testkit::relaisd())
        .args(["storage", "copy", "--from"])
        .arg(format!(
            "sqlite:{}",
            appliance.data.join("relais.db").display()
        ))
        .arg("--to")
        .arg(format!("postgres:{}", database.url))
        .arg("--to-password-file")
        .arg(&database.password_file)
        .output()
        .expect("run relaisd storage copy");
    let report = String::from_utf8_lossy(&copy.stdout);
    assert!(
        copy.status.success(),
        "storage copy failed: {report}{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    // Five messages and the conversation's Welcome wait for Bob, all copied.
    let queued: usize = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("queue: "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no queue count in {report}"));
    assert!(queued >= 6, "{report}");
    // Not a terminal: one plain progress line per table at its end, on standard error.
    let progress = String::from_utf8_lossy(&copy.stderr);
    assert!(
        progress.contains(&format!("copy queue: {queued} rows / {queued} rows (100%)")),
        "{progress}"
    );
    assert!(
        !report.contains("relais-test"),
        "the password is never printed: {report}"
    );
    // A second copy into the same database is refused: it is no longer empty.
    let again = std::process::Command::new(relais_testkit::relaisd())
        .args(["storage", "copy", "--from"])
        .arg(format!(
            "sqlite:{}",
            appliance.data.join("relais.db").display()
        ))
        .arg("--to")
        .arg(&database.url)
        .arg("--to-password-file")
        .arg(&database.password_file)
        .output()
        .expect("run relaisd storage copy");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The same appliance, now on PostgreSQL: the balancer sends the devices there.
    share_identity(&appliance.data, &dir.path().join("postgres").join("data"));
    let node = Daemon::start(&dir.path().join("postgres"), &database.config());
    balancer.send_to(&node.addr);
    let mut bob = Client::open(&dir.path().join("bob"))
        .await
        .expect("open bob");
    reconnect(&mut bob).await;
    let got = receive_n(&mut bob, sent.len()).await;
    assert_eq!(
        count(&got),
        sent,
        "every queued message arrives once from PostgreSQL"
    );
    // Numbers continue after the copied ones: the conversation goes on both ways.
    let mut alice = Client::open(&dir.path().join("alice"))
        .await
        .expect("open alice");
    reconnect(&mut alice).await;
    let after = secret("after-the-move");
    alice
        .send("bob", &after)
        .await
        .expect("alice sends after the move");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(after, 1)]));
    let reply = secret("reply-after-the-move");
    bob.send("alice", &reply).await.expect("bob answers");
    let got = receive_n(&mut alice, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(reply, 1)]));
    let audit = node.admin(&["audit", "verify"]);
    assert!(
        audit.starts_with("audit log intact") && !audit.contains(" 0 entries"),
        "the copied audit chain verifies: {audit}"
    );
}

/// Runs `relaisd migrate` with a configuration naming `database` as `user`.
fn migrate(dir: &Path, url: &str, password_file: &Path) -> String {
    let config = dir.join("migrate.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\n[keys]\nsource = \"file\"\n[tls]\ncertificate = \"/nonexistent.pem\"\nprivate_key = \"/nonexistent.key\"\n[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_file = \"{}\"\n",
            dir.display(),
            password_file.display()
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(relais_testkit::relaisd())
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .expect("run relaisd migrate");
    assert!(
        out.status.success(),
        "relaisd migrate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The operator's path in docs/cookbook/postgresql.md and backups.md: the owner applies
/// the schema with `relaisd migrate`; the node runs as a role that can change rows but
/// not the schema; `pg_dump` and `pg_restore` make a backup that a node serves from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_without_schema_rights_and_serves_from_a_pg_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = Database::create(dir.path()).await else {
        return;
    };
    let out = migrate(dir.path(), &database.url, &database.password_file);
    assert!(out.contains("applied migrations 1"), "{out}");
    let out = migrate(dir.path(), &database.url, &database.password_file);
    assert!(out.contains("up to date"), "{out}");

    let (role, app_password) = a_role_without_schema_rights(dir.path(), &database).await;

    let mut node = Daemon::start(
        &dir.path().join("node"),
        &storage_as(&role, &app_password, &database),
    );
    let (balancer, sent) = queue_for_offline_bob(&mut node, dir.path(), 3, "before-backup").await;

    let restored = dump_and_restore(dir.path(), &database).await;
    share_identity(&node.data, &dir.path().join("restored").join("data"));
    let restored_node = Daemon::start(
        &dir.path().join("restored"),
        &storage_as(&role, &app_password, &restored),
    );
    balancer.send_to(&restored_node.addr);
    let mut bob = Client::open(&dir.path().join("bob"))
        .await
        .expect("open bob");
    reconnect(&mut bob).await;
    let got = receive_n(&mut bob, sent.len()).await;
    assert_eq!(
        count(&got),
        sent,
        "the restored database delivers what was queued"
    );
    drop(restored_node);
    drop(node);
    drop(restored);
    drop(database);
    relais_testkit::postgres::execute_on_server(&format!("DROP ROLE {role}")).await;
}

/// A role that can change the rows of `database` but not its schema, and its password's
/// file in `dir`; the role cannot create a table, which shows the rights really withheld.
async fn a_role_without_schema_rights(dir: &Path, database: &Database) -> (String, PathBuf) {
    let role = format!("relais_app_{:x}", rand::random::<u32>());
    relais_testkit::postgres::execute_on_server(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'app-password'"
    ))
    .await;
    database
        .execute(&format!(
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await;
    let app_password = dir.join("app-password");
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&app_password)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"app-password\n"))
            .expect("password file");
    }
    // The role cannot create a table: the schema's rights are really withheld.
    let denied = std::process::Command::new("psql")
        .envs(relais_testkit::postgres::client_env())
        .env("PGUSER", &role)
        .env("PGPASSWORD", "app-password")
        .args(["-d", &database.name, "-c", "CREATE TABLE intruder (x int)"])
        .output()
        .expect("psql");
    assert!(
        !denied.status.success(),
        "the node's role must not change the schema"
    );
    (role, app_password)
}

/// The `[storage]` section of a node reaching `database` as `role`.
fn storage_as(role: &str, password_file: &Path, database: &Database) -> String {
    let url = database
        .url
        .replacen("relais_test@", &format!("{role}@"), 1);
    format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_file = \"{}\"\n",
        password_file.display()
    )
}

/// The backup, and its restore into another database, with PostgreSQL's own tools.
async fn dump_and_restore(dir: &Path, database: &Database) -> Database {
    let dump = dir.join("relais.dump");
    let out = std::process::Command::new("pg_dump")
        .envs(relais_testkit::postgres::client_env())
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&database.name)
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.join("restored-db")).expect("dir");
    let restored = Database::create(&dir.join("restored-db"))
        .await
        .expect("second database");
    let out = std::process::Command::new("pg_restore")
        .envs(relais_testkit::postgres::client_env())
        .args(["--exit-on-error", "--dbname", &restored.name])
        .arg(&dump)
        .output()
        .expect("pg_restore");
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored
}

/// PostgreSQL restarting, or a network cut, ends every connection a node has to it: the
/// writer, the listener and the readers must come back by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_recovers_when_its_database_connections_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = Database::create(dir.path()).await else {
        return;
    };
    let node = Daemon::start(&dir.path().join("node"), &database.config());
    let mut alice = enroll(
        &node,
        &dir.path().join("alice"),
        "alice",
        &node.add_user("alice"),
    )
    .await;
    let mut bob = enroll(&node, &dir.path().join("bob"), "bob", &node.add_user("bob")).await;
    let first = secret("before-the-cut");
    alice.send("bob", &first).await.expect("alice sends");
    assert_eq!(
        count(&receive_n(&mut bob, 1).await),
        BTreeMap::from([(first, 1)])
    );

    relais_testkit::postgres::execute_on_server(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        database.name
    ))
    .await;

    let mut acknowledged = BTreeMap::new();
    for i in 0..6 {
        let text = secret(&format!("after-the-cut-{i}"));
        if alice.send("bob", &text).await.is_ok() {
            acknowledged.insert(text, 1);
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reconnect(&mut alice).await;
        }
    }
    assert!(
        acknowledged.len() >= 4,
        "the node serves again: {acknowledged:?}"
    );
    let got = count(&receive_n(&mut bob, acknowledged.len()).await);
    for (text, n) in &got {
        assert_eq!(*n, 1, "{text} arrived {n} times");
    }
    for text in acknowledged.keys() {
        assert!(
            got.contains_key(text),
            "acknowledged but not delivered: {text}"
        );
    }
}
