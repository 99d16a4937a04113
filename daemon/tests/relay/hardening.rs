//! The running daemon's confinement, read from outside as an operator would: no
//! capabilities, no new privileges, not dumpable, a system-call filter, a filesystem view
//! that refuses a backup outside `backup.directory` although file permissions allow it,
//! and what each `danger_` switch changes. Started as root, it runs as its service user.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use relais_testkit::{Daemon, relaisd, require_root};

/// One field of `/proc/PID/status`, without its name.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
}

const NO_CAPABILITIES: &str = "0000000000000000";

#[test]
fn the_running_daemon_has_no_capabilities_and_a_system_call_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let pid = daemon.pid();
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(pid, set), NO_CAPABILITIES, "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // 2 is filter mode: the allow-list and the filter that ends the process on execve.
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "Seccomp_filters"), "2");
    // A process that is not dumpable has its /proc entries owned by root, whoever it runs as.
    let uid = status_field(pid, "Uid");
    assert!(!uid.starts_with("0\t"), "the daemon runs as root: {uid}");
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat")
        .uid();
    assert_eq!(
        owner, 0,
        "/proc/{pid} is not root's: the daemon is dumpable"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("filesystem sandbox (Landlock) enforced"),
        "{log}"
    );
    assert!(
        log.contains("system-call filter (seccomp) installed"),
        "{log}"
    );
}

#[test]
fn started_as_root_it_runs_as_its_service_user_with_an_empty_bounding_set() {
    if !require_root("only root can start a daemon that switches user") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[process]\nuser = \"64992\"\ngroup = \"64993\"\n",
    );
    let pid = daemon.pid();
    assert_eq!(status_field(pid, "Uid"), "64992\t64992\t64992\t64992");
    assert_eq!(status_field(pid, "Gid"), "64993\t64993\t64993\t64993");
    assert_eq!(
        status_field(pid, "Groups"),
        "",
        "supplementary groups are cleared"
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, set), NO_CAPABILITIES, "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // The data directory root created is the service user's now, and so is the socket.
    for path in [
        daemon.data.clone(),
        daemon.data.join("relais.db"),
        daemon.data.join("keys"),
        daemon.data.join("server.key"),
        daemon.admin_socket.clone(),
    ] {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (64992, 64993),
            "{}",
            path.display()
        );
    }
    assert!(
        daemon.add_user("alice").contains('-'),
        "root administers it"
    );
}

#[test]
fn started_as_root_it_refuses_to_keep_root_or_to_become_a_missing_user() {
    if !require_root("only root can be refused for staying root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("create");
    relaisd::tls::ensure_dev_certificates(&data, &["localhost".into()]).expect("certificates");
    for (process, expected) in [
        ("user = \"root\"", "would keep running as root"),
        (
            "user = \"64990\"\ngroup = \"0\"",
            "would keep running as root",
        ),
        (
            "user = \"no-such-relais-user\"",
            "\"no-such-relais-user\" does not exist",
        ),
    ] {
        let config = dir.path().join("relaisd.toml");
        std::fs::write(
            &config,
            format!(
                "domain = \"localhost\"\ndata_dir = \"{data}\"\n[listen]\nclient = \"127.0.0.1:0\"\n[tls]\ncertificate = \"{data}/server.pem\"\nprivate_key = \"{data}/server.key\"\n[keys]\nsource = \"file\"\n[metrics]\nenabled = false\n[process]\n{process}\n",
                data = data.display()
            ),
        )
        .expect("write");
        let out = Command::new(relaisd())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .expect("run relaisd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{process}: {stderr}");
        assert!(stderr.contains(expected), "{process}: {stderr}");
        assert!(
            !data.join("admin.sock").exists(),
            "nothing is bound before the user is known"
        );
    }
}

/// Backs up to `path` through the admin socket; returns whether it worked and stderr.
fn backup(daemon: &Daemon, path: &Path) -> (bool, String) {
    let out = daemon.admin_raw(&["backup", "--to", path.to_str().expect("utf-8")]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Restarts `daemon` with `setting` added to its `[hardening]` section.
fn restart_with(daemon: &mut Daemon, setting: &str) {
    daemon.stop();
    let mut config = std::fs::read_to_string(&daemon.config).expect("read config");
    config.push_str(&format!("\n[hardening]\n{setting}\n"));
    std::fs::write(&daemon.config, config).expect("write config");
    daemon.launch();
}

#[test]
fn landlock_refuses_a_backup_outside_backup_directory_and_each_danger_switch_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    daemon.add_user("alice");
    // A directory anyone may write to: only the sandbox stands in the way.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("create");
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let (ok, stderr) = backup(&daemon, &elsewhere.join("refused.db"));
    assert!(!ok, "a backup outside backup.directory was written");
    assert!(
        stderr.contains("must be inside backup.directory"),
        "{stderr}"
    );
    assert!(!elsewhere.join("refused.db").exists());
    let (ok, stderr) = backup(&daemon, &daemon.backups.join("allowed.db"));
    assert!(ok, "{stderr}");

    let sandboxed = status_field(daemon.pid(), "Seccomp");
    restart_with(&mut daemon, "danger_disable_landlock = true");
    let (ok, stderr) = backup(&daemon, &elsewhere.join("unconfined.db"));
    assert!(ok, "without Landlock the same backup works: {stderr}");
    assert_eq!(status_field(daemon.pid(), "Seccomp"), sandboxed);
    let log = daemon.log_text();
    assert!(
        log.contains("WARN") && log.contains("hardening.danger_disable_landlock is set"),
        "{log}"
    );

    daemon.stop();
    let config = std::fs::read_to_string(&daemon.config).expect("read config");
    std::fs::write(
        &daemon.config,
        config.replace(
            "danger_disable_landlock = true",
            "danger_disable_seccomp = true",
        ),
    )
    .expect("write config");
    daemon.launch();
    assert_eq!(status_field(daemon.pid(), "Seccomp"), "0");
    assert_eq!(status_field(daemon.pid(), "NoNewPrivs"), "1");
    assert!(
        daemon
            .log_text()
            .contains("hardening.danger_disable_seccomp is set"),
        "{}",
        daemon.log_text()
    );
    let (ok, _) = backup(&daemon, &elsewhere.join("refused-again.db"));
    assert!(!ok, "Landlock is back on once its switch is off");
}
