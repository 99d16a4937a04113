//! The hardening, each piece applied in a child process that re-runs one test of this
//! binary: applied to the test runner itself it would be irreversible, would leak into the
//! other tests, and would make the runner undebuggable.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use landlock::ABI;

use super::filesystem::{Enforcement, View};
use super::privileges::Target;
use crate::config::{Config, Process};

/// Set in the child: what it runs.
const CHILD: &str = "RELAIS_HARDENING_CHILD";
/// Set in the child: a directory the parent made, and removes afterwards.
const CHILD_DIR: &str = "RELAIS_HARDENING_DIR";

/// What this process runs as a child, or `None` in the parent.
fn child_mode() -> Option<String> {
    std::env::var(CHILD).ok()
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(CHILD_DIR).expect("the parent sets the directory"))
}

/// Re-runs `test` in a child process in `mode`, and kills it if it hangs.
fn run_child(test: &str, mode: &str, dir: &Path) -> Output {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the child test");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the child test {test} ({mode}) hung: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("child output")
}

fn assert_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_denied<T: std::fmt::Debug>(what: &str, result: std::io::Result<T>) {
    let error = result.expect_err(what);
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{what}: {error}"
    );
}

#[test]
fn a_hardened_process_is_not_dumpable_and_dumps_no_core() {
    if child_mode().is_some() {
        super::apply().expect("hardening");
        assert!(!nix::sys::prctl::get_dumpable().expect("get dumpable"));
        let limits = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)
            .expect("rlimit");
        assert_eq!(limits, (0, 0));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_passed(&run_child(
        "hardening::tests::a_hardened_process_is_not_dumpable_and_dumps_no_core",
        "dump",
        dir.path(),
    ));
}

/// The rule set `serve` applies, on this kernel's ABI and on the appliance kernel's (2):
/// what the daemon uses stays reachable, everything else is refused although file
/// permissions allow it.
#[test]
fn the_filesystem_view_allows_only_what_the_daemon_uses() {
    match child_mode().as_deref() {
        Some("landlock-tested") => return filesystem_child(super::filesystem::ABI_TESTED),
        Some("landlock-appliance") => return filesystem_child(ABI::V2),
        _ => {}
    }
    for mode in ["landlock-tested", "landlock-appliance"] {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_passed(&run_child(
            "hardening::tests::the_filesystem_view_allows_only_what_the_daemon_uses",
            mode,
            dir.path(),
        ));
    }
}

fn filesystem_child(abi: ABI) {
    let dir = child_dir();
    let (data, backups, outside) = (dir.join("data"), dir.join("backups"), dir.join("outside"));
    for d in [&data, &backups, &outside] {
        std::fs::create_dir_all(d).expect("create");
    }
    std::fs::write(outside.join("secret"), "secret").expect("write");
    let config_file = dir.join("relaisd.toml");
    std::fs::write(&config_file, "domain = \"localhost\"\n").expect("write");
    let mut config = Config::dev(data.clone(), "127.0.0.1:0".parse().expect("address"));
    config.backup.directory = Some(backups.clone());
    let view = View::for_config(&config, Some(&config_file));
    assert_eq!(view.enforce_as(abi).expect("enforce"), Enforcement::Full);

    // What the daemon uses.
    std::fs::create_dir(data.join("keys")).expect("create a directory in the data");
    std::fs::write(data.join("keys/key"), "k").expect("write in the data");
    std::fs::write(data.join("keys/key"), "key").expect("truncate in the data");
    assert_eq!(
        std::fs::read_to_string(data.join("keys/key")).expect("read"),
        "key"
    );
    std::fs::remove_file(data.join("keys/key")).expect("remove in the data");
    std::fs::write(backups.join("backup.db"), "b").expect("write a backup");
    assert_eq!(
        std::fs::read(backups.join("backup.db")).expect("read back"),
        b"b"
    );
    std::fs::read_to_string(&config_file).expect("read the configuration");
    std::fs::read_to_string("/proc/self/status").expect("read /proc/self");

    // Everything else.
    assert_denied("read outside", std::fs::read(outside.join("secret")));
    assert_denied("create outside", std::fs::write(outside.join("new"), "x"));
    assert_denied("write the configuration", std::fs::write(&config_file, "x"));
    assert_denied("read /etc/passwd", std::fs::read("/etc/passwd"));
    assert_denied("list /", std::fs::read_dir("/"));
    assert_denied("read another process", std::fs::read("/proc/1/status"));
    assert_denied("run a program", Command::new("/bin/true").status());
}

/// The filter refuses calls it does not list with EPERM, and the process goes on.
#[test]
fn the_system_call_filter_refuses_what_it_does_not_list() {
    if child_mode().is_some() {
        super::syscalls::install(super::syscalls::Outbound::None).expect("install the filter");
        // What the daemon does keeps working.
        std::fs::read_to_string("/proc/self/status").expect("read a file");
        assert_eq!(std::thread::spawn(|| 7).join().expect("a thread"), 7);
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        std::os::unix::net::UnixStream::pair().expect("a socket pair");
        // What it never does after start-up is refused.
        let eperm = |what: &str, error: std::io::Error| {
            assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{what}: {error}");
        };
        eperm(
            "bind",
            std::net::TcpListener::bind("127.0.0.1:0").expect_err("bind after start-up"),
        );
        let link = child_dir().join("link");
        eperm(
            "symlink",
            std::os::unix::fs::symlink("/etc/passwd", link).expect_err("a symbolic link"),
        );
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
        let netlink = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::empty(),
            None,
        );
        eperm("netlink", netlink.expect_err("a netlink socket").into());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_passed(&run_child(
        "hardening::tests::the_system_call_filter_refuses_what_it_does_not_list",
        "seccomp",
        dir.path(),
    ));
}

/// Running a program ends the whole process, not just the calling thread: another
/// thread that would wait forever does not keep it alive.
#[test]
fn running_a_program_under_the_filter_kills_the_whole_process() {
    if child_mode().is_some() {
        super::syscalls::install(super::syscalls::Outbound::None).expect("install the filter");
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600)));
        eprintln!("filter installed; running /bin/true");
        let _ = nix::unistd::execv(c"/bin/true", &[c"true"]);
        panic!("execv returned");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_child(
        "hardening::tests::running_a_program_under_the_filter_kills_the_whole_process",
        "seccomp-exec",
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("filter installed"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
}

/// Whoever starts it, the process ends with no capability and no-new-privileges; as
/// root, it also switches user and group and empties its bounding set.
#[test]
fn giving_up_privileges_leaves_no_capability() {
    let root = nix::unistd::geteuid().is_root();
    if child_mode().is_some() {
        let target = root.then_some(Target {
            uid: nix::unistd::Uid::from_raw(64990),
            gid: nix::unistd::Gid::from_raw(64991),
        });
        super::drop_privileges(target.as_ref()).expect("drop privileges");
        // Capabilities and no-new-privileges belong to each thread, and the test runs on
        // one of its own; the daemon gives them up before it has a second thread.
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name} missing"))
                .to_owned()
        };
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(field(set), "0000000000000000", "{set}");
        }
        assert_eq!(field("NoNewPrivs:"), "1");
        assert!(!nix::sys::prctl::get_dumpable().expect("dumpable"));
        if root {
            assert_eq!(field("CapBnd:"), "0000000000000000");
            assert_eq!(field("Uid:"), "64990\t64990\t64990\t64990");
            assert_eq!(field("Gid:"), "64991\t64991\t64991\t64991");
            assert_eq!(field("Groups:"), "");
            assert!(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err());
        }
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_passed(&run_child(
        "hardening::tests::giving_up_privileges_leaves_no_capability",
        "privileges",
        dir.path(),
    ));
}

#[test]
fn root_is_never_a_target() {
    let process = |user: &str, group: Option<&str>| Process {
        user: user.into(),
        group: group.map(Into::into),
    };
    let cases = [
        (process("root", None), "StaysRoot"),
        (process("0", Some("64990")), "StaysRoot"),
        (process("64990", Some("0")), "StaysRoot"),
        (process("no-such-user-relais", None), "UnknownUser"),
        (
            process("64990", Some("no-such-group-relais")),
            "UnknownGroup",
        ),
        (process("64990", None), "NoPrimaryGroup"),
    ];
    for (process, expected) in cases {
        let error = Target::resolve(&process).expect_err(&process.user);
        assert!(
            format!("{error:?}").starts_with(expected),
            "{process:?}: {error:?}"
        );
    }
    assert_eq!(
        Target::resolve(&process("64990", Some("64991"))).expect("numeric ids"),
        Target {
            uid: nix::unistd::Uid::from_raw(64990),
            gid: nix::unistd::Gid::from_raw(64991)
        }
    );
}

/// A symbolic link planted in the data directory does not make root give its target away.
#[test]
fn giving_the_data_directory_never_follows_links() {
    use std::os::unix::fs::MetadataExt as _;
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test changes owners and must run as root in CI"
        );
        eprintln!("skipped, not root: changing a file's owner needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, outside) = (dir.path().join("data"), dir.path().join("outside"));
    std::fs::create_dir_all(data.join("keys")).expect("create");
    std::fs::create_dir_all(&outside).expect("create");
    std::fs::write(data.join("keys/key"), "k").expect("write");
    std::fs::write(outside.join("file"), "f").expect("write");
    std::os::unix::fs::symlink(outside.join("file"), data.join("link")).expect("link");
    std::os::unix::fs::symlink(&outside, data.join("dir-link")).expect("link");
    let target = Target {
        uid: nix::unistd::Uid::from_raw(64990),
        gid: nix::unistd::Gid::from_raw(64991),
    };
    target.give_directory(&data).expect("give");
    for path in ["", "keys", "keys/key", "link", "dir-link"] {
        let meta = std::fs::symlink_metadata(data.join(path)).expect("lstat");
        assert_eq!((meta.uid(), meta.gid()), (64990, 64991), "{path}");
    }
    for path in [outside.clone(), outside.join("file")] {
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
    }
}

/// Storage keeps working inside the filesystem view under batches big enough that SQLite
/// would spill a statement journal to a temporary file, in a directory the view does not
/// include (it failed with "disk I/O error" until temporary files were kept in memory).
#[test]
fn storage_needs_no_temporary_directory_inside_the_view() {
    if child_mode().as_deref() == Some("storage") {
        return storage_child();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_passed(&run_child(
        "hardening::tests::storage_needs_no_temporary_directory_inside_the_view",
        "storage",
        dir.path(),
    ));
}

fn storage_child() {
    use relais_store::{DeviceId, Store, StoreOptions, SubmitRequest};
    let data = child_dir().join("data");
    std::fs::create_dir_all(&data).expect("create");
    let config = Config::dev(data.clone(), "127.0.0.1:0".parse().expect("address"));
    let view = View::for_config(&config, None);
    assert_eq!(
        view.enforce_as(super::filesystem::ABI_TESTED)
            .expect("enforce"),
        Enforcement::Full
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let options = StoreOptions {
            durability: crate::config::Durability::Full,
            batch_max: 4096,
            queue_messages_max: 1_000_000,
            queue_bytes_max: i64::MAX,
            queue_share_per_sender_percent: 100,
            catch_up: std::time::Duration::from_secs(30),
        };
        let hub = std::sync::Arc::new(crate::hub::Hub::default());
        let location = relais_store::Location::Sqlite(data.join("relais.db"));
        let store = Store::open(&location, options, hub).await.expect("open");
        let group = b"group".as_slice();
        assert!(
            store
                .create_group(group, 0, b"s", DeviceId(1), 0)
                .await
                .expect("create")
        );
        store
            .commit(relais_store::CommitRequest {
                sender: DeviceId(1),
                sender_user: "a@localhost".into(),
                sender_fingerprint: "a".into(),
                message_id: b"commit".to_vec(),
                group_id: group.to_vec(),
                from_epoch: 0,
                state: b"s1".to_vec(),
                members_after: vec![DeviceId(1), DeviceId(2)],
                commit: bytes::Bytes::from_static(b"commit"),
                welcome: None,
                now_ms: 0,
            })
            .await
            .expect("commit");
        let body = bytes::Bytes::from(vec![7u8; 1024]);
        let sends = (0..3000).map(|i| {
            store.submit(SubmitRequest {
                sender: DeviceId(1),
                sender_user: "a@localhost".into(),
                sender_fingerprint: "a".into(),
                message_id: format!("m{i}").into_bytes(),
                group_id: group.to_vec(),
                epoch: 1,
                body: body.clone(),
                now_ms: 1,
            })
        });
        let accepted: Vec<i64> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.expect("stored inside the view").seq)
            .collect();
        // Acknowledging them all at once rewrites every page of the messages table in one
        // statement: far past the 64 KiB a statement journal keeps in memory by default.
        let acks = accepted
            .chunks(100)
            .map(|seqs| store.acknowledge(DeviceId(2), seqs.to_vec()));
        let removed: u32 = futures_util::future::join_all(acks)
            .await
            .into_iter()
            .map(|r| r.expect("acknowledged inside the view"))
            .sum();
        assert_eq!(removed, 3000);
        store.close().await;
    });
}
