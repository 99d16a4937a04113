//! The operator's job against a live daemon: every admin command, the refusals by role,
//! the audit chain, and backup and restore.

use std::path::Path;
use std::process::Command;

use relais_testkit::{Daemon, relaisd};
use serde_json::Value;

fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    serde_json::from_str(&daemon.admin(&full)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn refusal(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.admin_raw(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_admin_command_works_and_refuses_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[users]\nexpiry_warning_days = 30\n");
    let code = users_are_added_listed_expired_and_suspended(&daemon);
    codes_are_issued_and_cancelled_and_devices_looked_up(&daemon);
    status_and_retention_are_reported(&daemon);
    a_deleted_user_is_never_reused(&daemon);
    a_backup_restores_but_not_damaged_or_over_a_database(&daemon, dir.path());
    the_audit_log_saw_every_change_and_no_secret(&daemon, &code);
}

/// Adds alice and bob, with refusals of duplicates and bad names, and takes bob through
/// expiry and suspension; returns alice's enrollment code as the command printed it.
fn users_are_added_listed_expired_and_suspended(daemon: &Daemon) -> String {
    let code = daemon.admin(&["user", "add", "alice", "--expires", "2099-01-01"]);
    assert_eq!(code.trim().len(), 19);
    daemon.add_user("bob");
    assert!(refusal(daemon, &["user", "add", "bob"]).contains("already exists"));
    assert!(refusal(daemon, &["user", "add", "Bad Name"]).contains("not a valid user name"));
    assert!(refusal(daemon, &["user", "add", "eve@elsewhere.org"]).contains("not in a domain"));

    let users = json(daemon, &["user", "list"]);
    assert_eq!(users.as_array().map(Vec::len), Some(2), "{users}");
    assert_eq!(
        json(daemon, &["user", "list", "--filter", "ali"])[0]["user"],
        "alice@localhost"
    );

    daemon.admin(&["user", "expire", "bob", "--at", "2000-01-01"]);
    assert_eq!(json(daemon, &["user", "show", "bob"])["status"], "expired");
    let soon = relais_testkit::now_ms() + 5 * 86_400_000;
    daemon.admin(&["user", "expire", "bob", "--at", &soon.to_string()]);
    assert_eq!(
        json(daemon, &["user", "list", "--state", "expiring"])[0]["user"],
        "bob@localhost"
    );
    daemon.admin(&["user", "expire", "bob", "--at", "never"]);
    assert_eq!(json(daemon, &["user", "show", "bob"])["status"], "active");

    daemon.admin(&["user", "suspend", "bob"]);
    assert_eq!(
        json(daemon, &["user", "show", "bob"])["status"],
        "suspended"
    );
    daemon.admin(&["user", "resume", "bob"]);
    assert_eq!(json(daemon, &["user", "show", "bob"])["status"], "active");

    code
}

fn codes_are_issued_and_cancelled_and_devices_looked_up(daemon: &Daemon) {
    daemon.issue_code("bob");
    let codes = json(daemon, &["code", "list", "bob"]);
    assert_eq!(codes.as_array().map(Vec::len), Some(2), "{codes}");
    let id = codes[0]["id"].as_i64().expect("id").to_string();
    daemon.admin(&["code", "cancel", "bob", &id]);
    assert_eq!(
        json(daemon, &["code", "list", "bob"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(refusal(daemon, &["code", "cancel", "bob", &id]).contains("no pending code"));
    assert!(refusal(daemon, &["code", "issue", "nobody"]).contains("no user"));

    assert_eq!(
        json(daemon, &["device", "list", "alice"]),
        Value::Array(Vec::new())
    );
    assert!(
        refusal(daemon, &["device", "show", "alice", "0011223344556677"]).contains("no device")
    );
    assert!(
        refusal(daemon, &["device", "revoke", "alice", "0011223344556677"]).contains("no device")
    );
}

fn status_and_retention_are_reported(daemon: &Daemon) {
    let status = json(daemon, &["status"]);
    assert_eq!(status["storage_backend"], "sqlite");
    assert_eq!(status["queued_deliveries"], 0);
    assert_eq!(json(daemon, &["retention", "show"])["retention_days"], 30);
    assert_eq!(json(daemon, &["retention", "purge"])["expired_messages"], 0);
}

fn a_deleted_user_is_never_reused(daemon: &Daemon) {
    daemon.admin(&["user", "delete", "bob"]);
    assert_eq!(json(daemon, &["user", "show", "bob"])["status"], "deleted");
    assert!(refusal(daemon, &["user", "add", "bob"]).contains("never reused"));
    assert_eq!(
        json(daemon, &["user", "list"]).as_array().map(Vec::len),
        Some(1)
    );
}

/// Backup, then restore: a bad checksum and an occupied data directory are refused.
fn a_backup_restores_but_not_damaged_or_over_a_database(daemon: &Daemon, dir: &Path) {
    let backup = daemon.backups.join("backup.db");
    let result = json(daemon, &["backup", "--to", backup.to_str().expect("utf-8")]);
    assert!(
        backup.exists() && result["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "{result}"
    );
    assert!(
        refusal(daemon, &["backup", "--to", backup.to_str().expect("utf-8")])
            .contains("never overwrite")
    );
    // Not a terminal: the size the backup reached, once, on standard error.
    let second = daemon.backups.join("second.db");
    let out = daemon.admin_raw(&["backup", "--to", second.to_str().expect("utf-8")]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("backup: ").count(), 1, "{log}");
    assert!(
        log.contains(" KiB, ") && !log.contains("backup: 0 B"),
        "{log}"
    );
    let restored = dir.join("restored");
    let out = restore(&backup, &restored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = restore(&backup, &restored);
    assert_eq!(again.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a database"));
    let mut damaged = std::fs::read(&backup).expect("read");
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let bad = dir.join("damaged.db");
    std::fs::write(&bad, damaged).expect("write");
    std::fs::copy(
        daemon.backups.join("backup.db.sha256"),
        dir.join("damaged.db.sha256"),
    )
    .expect("copy");
    let out = restore(&bad, &dir.join("other"));
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its checksum"));
    let left: Vec<_> = std::fs::read_dir(dir.join("other"))
        .expect("the data directory was made")
        .collect();
    assert!(left.is_empty(), "a refused restore left {left:?}");
}

/// The audit log saw every change and no secret (`code` is alice's enrollment code).
fn the_audit_log_saw_every_change_and_no_secret(daemon: &Daemon, code: &str) {
    let export = daemon.admin(&["audit", "export"]);
    for action in [
        "user_add",
        "user_expire",
        "user_suspend",
        "user_resume",
        "code_issue",
        "code_cancel",
        "user_delete",
        "backup",
    ] {
        assert!(
            export.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing from the audit log"
        );
    }
    assert!(
        !export.contains(code.trim()),
        "an enrollment code reached the audit log"
    );
    daemon.assert_never_stored(&[code.trim().to_owned()]);
}

fn restore(from: &Path, data: &Path) -> std::process::Output {
    Command::new(relaisd())
        .args(["restore", "--from"])
        .arg(from)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run relaisd restore")
}

/// Restoring shows progress as a redrawn line on a terminal, as plain lines otherwise, and
/// none with `--quiet`; the restored file is the backup, byte for byte.
#[test]
fn restore_reports_progress_to_a_terminal_a_log_or_nobody() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("big.db");
    let bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&backup, &bytes).expect("write the backup");
    std::fs::write(
        dir.path().join("big.db.sha256"),
        format!("{}  big.db\n", hex::encode(sha2::Sha256::digest(&bytes))),
    )
    .expect("write its checksum");

    let plain = restore(&backup, &dir.path().join("plain"));
    let log = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success(), "{log}");
    assert!(log.contains("restore: 3.0 MiB / 3.0 MiB (100%)"), "{log}");
    assert!(!log.contains('\r'), "no terminal control in a log: {log:?}");
    assert_eq!(
        std::fs::read(dir.path().join("plain/relais.db")).expect("restored"),
        bytes
    );

    let quiet = Command::new(relaisd())
        .args(["restore", "--quiet", "--from"])
        .arg(&backup)
        .arg("--data")
        .arg(dir.path().join("quiet"))
        .output()
        .expect("run relaisd restore --quiet");
    let log = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{log}");
    assert!(!log.contains("restore: "), "{log}");
    assert!(String::from_utf8_lossy(&quiet.stdout).contains("restored "));

    // `script` (util-linux) gives the command a terminal.
    let command = format!(
        "{} restore --from {} --data {}",
        relaisd().display(),
        backup.display(),
        dir.path().join("terminal").display()
    );
    let terminal = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("run script(1), from util-linux");
    let screen = String::from_utf8_lossy(&terminal.stdout);
    assert!(terminal.status.success(), "{screen}");
    assert!(
        screen.contains("\r\x1b[2Krestore: 3.0 MiB / 3.0 MiB (100%)"),
        "{screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_points_at_a_tampered_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    for user in ["alice", "bob", "carol"] {
        daemon.add_user(user);
    }
    let verified = json(&daemon, &["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["entries"], 3);

    let url = format!("sqlite://{}", daemon.data.join("relais.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the database");
    sqlx::query("UPDATE audit_log SET subject = 'mallory' WHERE id = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;

    let out = daemon.admin_raw(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a broken chain fails the command"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at entry 2"), "{text}");
}

/// Finding 2 of the red-team review: with a plain hash chain, deleting the last entries
/// left `audit verify` reporting "intact". The head, MAC'd under the server's key, now shows
/// it; a head put back from an older copy shows against the head exported earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reports_deleted_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let url = format!("sqlite://{}", daemon.data.join("relais.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the database");
    let head_row = || {
        sqlx::query_as::<_, (i64, i64, i64, Vec<u8>, Vec<u8>)>(
            "SELECT legacy_last_id, last_id, entries, last_hash, mac FROM audit_head",
        )
        .fetch_one(&pool)
    };
    for user in ["alice", "bob", "carol"] {
        daemon.add_user(user);
    }
    let saved_head = head_row().await.expect("the head after three entries");
    for user in ["ghost", "dave", "erin"] {
        daemon.add_user(user);
    }
    let verified = json(&daemon, &["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["entries"], 6);
    let exported = verified["head"]
        .as_str()
        .expect("a head to keep")
        .to_owned();

    // The red team's attack: the last three rows deleted with SQLite.
    sqlx::query("DELETE FROM audit_log WHERE id > 3")
        .execute(&pool)
        .await
        .expect("delete");
    let out = daemon.admin_raw(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "truncation fails the command");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TRUNCATED: its head records 6 entries, 3 remain"),
        "{text}"
    );

    // Moving the head back by hand does not verify without the key.
    sqlx::query(
        "UPDATE audit_head SET last_id = 3, entries = 3,
         last_hash = (SELECT hash FROM audit_log WHERE id = 3)",
    )
    .execute(&pool)
    .await
    .expect("rewrite the head");
    let out = daemon.admin_raw(&["--json", "audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let verified: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(verified["problem"], "head", "{verified}");

    // An older copy of the head, put back, matches what remains: only the head exported
    // off the box shows that entries are missing.
    let (legacy, last_id, entries, last_hash, mac) = saved_head;
    sqlx::query(
        "UPDATE audit_head SET legacy_last_id = ?, last_id = ?, entries = ?, last_hash = ?,
         mac = ?",
    )
    .bind(legacy)
    .bind(last_id)
    .bind(entries)
    .bind(last_hash)
    .bind(mac)
    .execute(&pool)
    .await
    .expect("put an old head back");
    pool.close().await;
    let verified = json(&daemon, &["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    let out = daemon.admin_raw(&["audit", "verify", "--expect", &exported]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BEHIND"), "{text}");
}

/// Finding 7 of the red-team review: `relaisd admin … | head` panicked on the broken pipe.
/// The reader here is gone before the command writes, as `head` is once it has its lines.
#[test]
fn admin_output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    daemon.add_user("alice");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(relais_testkit::relaisd())
        .args(["admin", "--socket"])
        .arg(&daemon.admin_socket)
        .args(["user", "list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run relaisd admin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Runs `relaisd admin` as uid 65534 with the given groups.
fn admin_as(
    daemon: &Daemon,
    primary_gid: u32,
    groups: &[u32],
    args: &[&str],
) -> std::process::Output {
    let groups = groups
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", &format!("--regid={primary_gid}")]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={groups}"));
    }
    command
        .arg(relaisd())
        .arg("admin")
        .arg("--socket")
        .arg(&daemon.admin_socket)
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn roles_come_from_unix_groups_and_refusals_are_audited() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to other users with setpriv and must run as root (as CI does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // Let the unprivileged user reach the socket and the binary.
    let daemon = Daemon::start(
        dir.path(),
        "[admin]\nmode = 0o660\nowner = \"65533\"\ngroup = \"64999\"\nadmin_groups = [\"64997\"]\nreader_groups = [\"64998\"]\n",
    );
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&daemon.admin_socket).expect("socket");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
            (65533, 64999, 0o660)
        );
    }
    make_traversable(dir.path());
    daemon.add_user("alice");

    let stranger = admin_as(&daemon, 64999, &[], &["user", "list"]);
    assert_eq!(stranger.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("may not administer"),
        "{stranger:?}"
    );

    let reader_list = admin_as(&daemon, 64999, &[64998], &["user", "list"]);
    assert!(reader_list.status.success(), "{reader_list:?}");
    assert!(String::from_utf8_lossy(&reader_list.stdout).contains("alice@localhost"));
    let reader_add = admin_as(&daemon, 64999, &[64998], &["user", "add", "mallory"]);
    assert_eq!(reader_add.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&reader_add.stderr).contains("read-only operator"),
        "{reader_add:?}"
    );

    let admin_add = admin_as(&daemon, 64999, &[64997], &["user", "add", "bob"]);
    assert!(admin_add.status.success(), "{admin_add:?}");

    let export = daemon.admin(&["audit", "export"]);
    let refused: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|e| e["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{export}");
    assert!(refused.iter().all(|e| e["actor"] == "uid:65534"));
    assert!(
        !json(&daemon, &["user", "list"])
            .to_string()
            .contains("mallory")
    );
}

/// Opens the directories up to `dir` for traversal by other users (tempdir is 0700).
fn make_traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.to_owned(), dir.join("data")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}
