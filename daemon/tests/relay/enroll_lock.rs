//! Enrolling holds the home's lock, with the real relaisd over real TLS: an enrollment
//! into a home another process holds (a running session, or another enrollment) waits as
//! the commands do, then fails with "in use by process N", having touched none of the
//! home's files nor spent its one-time code; two enrollments of one home at once leave one
//! device, whose home opens, and spend only the winner's code. A relay that accepts the
//! connection and then says nothing fails an enrollment within the TLS step's bound, with
//! the home left empty. The lock itself, and each step's bound (connect, TLS, upgrade),
//! are unit-tested in `client/src/session/lock.rs` and `client/src/connection.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use relais_client::connection::TLS_TIMEOUT;
use relais_client::{Client, ClientError, EnrollLink, HomeLock, Session};
use relais_testkit::Daemon;
use relais_testkit::clients::new_user;

/// How long an enrollment waits for the home's lock: as long as the `relais` commands
/// (`HOME_LOCK_WAIT` in `client/src/bin/relais.rs`).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Every file of `home` and its bytes.
fn files(home: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(home)
        .expect("home")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect()
}

/// Enrolls `user` in `home` with `code`, expecting the home to be in use by this process
/// after waiting for it as long as a command would.
async fn refused_as_in_use(daemon: &Daemon, home: &Path, user: &str, code: &str) {
    let started = Instant::now();
    let refused = Client::enroll(home, &daemon.server, &daemon.ca, user, code)
        .await
        .map(|_| ())
        .expect_err("the home is in use");
    let waited = started.elapsed();
    assert!(
        matches!(&refused, ClientError::HomeInUse { home: h, pid: Some(pid) }
            if h == home && *pid == std::process::id()),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("is in use by another relais process")
            && message.contains(&format!("(process {})", std::process::id()))
            && message.contains("try again"),
        "{message}"
    );
    assert!(
        waited >= LOCK_WAIT && waited < LOCK_WAIT + Duration::from_secs(3),
        "waited {waited:?} for the lock"
    );
}

/// A home held by a running session, then an empty home held by another enrollment: an
/// enrollment into either fails clearly, changes no file, and leaves its code unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_into_a_locked_home_waits_then_fails_touching_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("relay"), "");
    let alice = new_user(&daemon, dir.path(), "alice").await;
    alice.close().await;
    let home = dir.path().join("alice");
    let session = Session::open(&home).await.expect("a running session");
    let before = files(&home);
    let code = daemon.issue_code("alice");
    refused_as_in_use(&daemon, &home, "alice", &code).await;
    let after = files(&home);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no file added or removed"
    );
    assert_eq!(after["device.key"], before["device.key"], "the key is kept");
    assert_eq!(after["lock"], before["lock"], "the session still holds it");
    session
        .shutdown()
        .await
        .expect("the session was not disturbed");
    let reopened = Client::open(&home).await.expect("the home still opens");
    reopened.close().await;

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty home");
    let held = HomeLock::acquire(&empty, Duration::ZERO)
        .await
        .expect("lock");
    let before = files(&empty);
    refused_as_in_use(&daemon, &empty, "alice", &code).await;
    assert_eq!(files(&empty), before, "nothing but the lock, as it was");
    drop(held);

    // Nothing reached the relay: the code is unspent, and enrolls once the home is free.
    let second = Client::enroll(&empty, &daemon.server, &daemon.ca, "alice", &code)
        .await
        .expect("enrolls with the same code");
    assert_ne!(second.device_id(), "");
    second.close().await;
}

/// Two enrollments of one empty home at once, with two codes: one device is enrolled, the
/// other enrollment fails (in use, or already enrolled) without sending its code, which
/// then enrolls a device elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_enrollments_of_one_home_at_once_leave_one_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("relay"), "");
    let codes = [daemon.add_user("alice"), daemon.issue_code("alice")];
    let home = dir.path().join("alice");
    let (first, second) = tokio::join!(
        Client::enroll(&home, &daemon.server, &daemon.ca, "alice", &codes[0]),
        Client::enroll(&home, &daemon.server, &daemon.ca, "alice", &codes[1]),
    );
    let (winner, loser, unspent) = match (first, second) {
        (Ok(winner), Err(loser)) => (winner, loser, &codes[1]),
        (Err(loser), Ok(winner)) => (winner, loser, &codes[0]),
        (first, second) => panic!(
            "exactly one enrolls: {:?} and {:?}",
            first.map(|c| c.device_id().to_owned()),
            second.map(|c| c.device_id().to_owned())
        ),
    };
    assert!(
        matches!(&loser, ClientError::HomeInUse { .. })
            || loser
                .to_string()
                .contains("already holds an enrolled device"),
        "{loser}"
    );
    let device = winner.device_id().to_owned();
    winner.close().await;
    assert!(!home.join("device.key.new").exists(), "no pending key left");
    let opened = Client::open(&home).await.expect("the home opens");
    assert_eq!(opened.device_id(), device, "the winner's device");
    opened.close().await;

    let elsewhere = dir.path().join("elsewhere");
    let other = Client::enroll(&elsewhere, &daemon.server, &daemon.ca, "alice", unspent)
        .await
        .expect("the loser's code was never sent");
    assert_ne!(other.device_id(), device);
    other.close().await;
}

/// A relay that accepts the connection and never writes: the enrollment fails within the
/// TLS step's bound, saying so, and the home stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_from_a_silent_relay_fails_in_time_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let link = EnrollLink::parse(&format!(
        "relais://enroll?v=1&server={addr}&user=alice@localhost&code=ABCD0123EFGH4567\
         &pin=sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    ))
    .expect("link");
    let home = dir.path().join("alice");
    let started = Instant::now();
    let failed = Client::enroll_from_link(&home, &link, None)
        .await
        .map(|_| ())
        .expect_err("the relay is silent");
    let took = started.elapsed();
    let message = failed.to_string();
    assert!(
        matches!(failed, ClientError::Network(_))
            && message.contains(&format!(
                "the relay at {addr} did not answer within 10 s (the TLS handshake); check \
                 the address and your network, or try again later"
            )),
        "{message}"
    );
    assert!(
        took >= TLS_TIMEOUT && took < TLS_TIMEOUT + Duration::from_secs(3),
        "gave up after {took:?}"
    );
    assert!(!message.contains("ABCD0123EFGH4567"), "{message}");
    assert_eq!(files(&home), BTreeMap::new(), "nothing written");
    silent.abort();
}
