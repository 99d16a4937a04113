//! The failed-attempt limiter against a real relaisd over real TLS: wrong enrollment codes
//! from one address lock out neither that address's enrolled devices nor other users'
//! enrollments, parallel guesses are evaluated at most the limit's number of times, and
//! the audit log gets one entry per window, not one per guess.

use std::time::Duration;

use relais_protocol::pb::{self, ErrorCode};
use relais_testkit::Daemon;
use relais_testkit::clients::new_user;
use relais_testkit::raw::{Session, next};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `limits.auth_failures_per_minute` by default.
const FAILURES_PER_MINUTE: usize = 10;
/// A code in the right format that no administrator issued.
const WRONG_CODE: &str = "0000-0000-0000-0000";
/// Enroll requests sent on one connection: a connection may send only a few KiB before
/// it authenticates, so the tests guess over several.
const ATTEMPTS_PER_CONNECTION: u8 = 10;

/// The answer to an Enroll: its error code, or `None` when the device was enrolled.
async fn answer(session: &mut Session) -> Option<ErrorCode> {
    let envelope = next(&mut session.ws)
        .await
        .expect("an answer before the end");
    match envelope.kind {
        Some(pb::envelope::Kind::Response(pb::Response {
            body: Some(pb::response::Body::Enrolled(_)),
            ..
        })) => None,
        Some(pb::envelope::Kind::Response(pb::Response {
            body: Some(pb::response::Body::Error(e)),
            ..
        })) => Some(ErrorCode::try_from(e.code).expect("known code")),
        other => panic!("expected an answer to Enroll, got {other:?}"),
    }
}

/// Sends an Enroll on `session` (see [`Session::send_enroll`]) and returns its answer.
async fn enroll(
    session: &mut Session,
    id: u64,
    user: &str,
    code: &str,
    seed: u8,
) -> Option<ErrorCode> {
    session.send_enroll(id, user, code, seed).await;
    answer(session).await
}

/// The audit log's entries for refused enrollments.
fn refused_enrollments(daemon: &Daemon) -> Vec<Value> {
    daemon
        .admin(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|e| e["action"] == "enroll" && e["outcome"] == "refused")
        .collect()
}

/// The value of `relais_enrollments_total{outcome="…"}` on the metrics listener.
async fn enrollments(daemon: &Daemon, outcome: &str) -> usize {
    let mut stream = TcpStream::connect(&daemon.metrics_addr)
        .await
        .expect("connect to metrics");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        daemon.metrics_addr
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let series = format!("relais_enrollments_total{{outcome=\"{outcome}\"}} ");
    response
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} not exported"))
        .parse()
        .expect("a number")
}

/// Sends `attempts` Enroll requests with a wrong code, for the user `user(i)` the `i`th
/// time, each on the connection of its batch, and returns the answers.
async fn guess(
    daemon: &Daemon,
    attempts: u8,
    user: impl Fn(u8) -> String,
) -> Vec<Option<ErrorCode>> {
    let mut answers = Vec::new();
    let mut session = Session::connect(daemon).await;
    for i in 0..attempts {
        if i > 0 && i % ATTEMPTS_PER_CONNECTION == 0 {
            session = Session::connect(daemon).await;
        }
        answers.push(enroll(&mut session, i.into(), &user(i), WRONG_CODE, i).await);
    }
    answers
}

fn counts(answers: &[Option<ErrorCode>]) -> (usize, usize) {
    let wrong = answers
        .iter()
        .filter(|a| **a == Some(ErrorCode::InvalidEnrollmentCode))
        .count();
    let limited = answers
        .iter()
        .filter(|a| **a == Some(ErrorCode::RateLimited))
        .count();
    assert_eq!(wrong + limited, answers.len(), "{answers:?}");
    (wrong, limited)
}

/// Finding 5 of the red-team review: one address guessing codes used to lock out every
/// device and every enrollment at that address, which behind a load balancer is everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_out_neither_enrolled_devices_nor_other_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let carol_code = daemon.add_user("carol");

    let answers = guess(&daemon, 100, |_| "carol".into()).await;
    let (wrong, limited) = counts(&answers);
    assert_eq!((wrong, limited), (FAILURES_PER_MINUTE, 90), "{answers:?}");
    let mut session = Session::connect(&daemon).await;
    assert_eq!(
        enroll(&mut session, 100, "carol", &carol_code, 100).await,
        Some(ErrorCode::RateLimited),
        "carol's enrollment from this address waits for the minute to end"
    );

    // Enrolled devices at the same address authenticate and talk.
    alice.connect().await.expect("alice authenticates");
    bob.connect().await.expect("bob authenticates");
    let text = relais_testkit::secret("after-guessing");
    alice.send("bob", &text).await.expect("alice sends");
    let received = bob.receive(Duration::from_secs(10)).await.expect("receive");
    assert_eq!(
        received.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );

    // Another user enrolls from the same address with a correct code.
    let mut dave = new_user(&daemon, dir.path(), "dave").await;
    dave.send("alice", "hello").await.expect("dave sends");

    let refused = refused_enrollments(&daemon);
    assert_eq!(refused.len(), 1, "one entry for the window: {refused:?}");
    assert_eq!(refused[0]["subject"], "carol@localhost", "{refused:?}");
    assert_eq!(
        enrollments(&daemon, "invalid_code").await,
        FAILURES_PER_MINUTE
    );
    assert_eq!(enrollments(&daemon, "rate_limited").await, 91);
}

/// Reserving an attempt and checking the limit are one step: guesses sent all at once
/// are not all evaluated before the first failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_codes_are_evaluated_at_most_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    daemon.add_user("carol");

    let mut sessions = Vec::new();
    for _ in 0..40 {
        sessions.push(Session::connect(&daemon).await);
    }
    for (seed, session) in sessions.iter_mut().enumerate() {
        session
            .send_enroll(1, "carol", WRONG_CODE, seed as u8)
            .await;
    }
    let answers = futures_util::future::join_all(sessions.iter_mut().map(answer)).await;
    let (wrong, limited) = counts(&answers);
    assert!(
        wrong <= FAILURES_PER_MINUTE,
        "{wrong} guesses evaluated, {limited} refused"
    );
    assert_eq!(limited, 40 - wrong);
    assert_eq!(enrollments(&daemon, "invalid_code").await, wrong);
    assert_eq!(enrollments(&daemon, "rate_limited").await, limited);
    assert_eq!(refused_enrollments(&daemon).len(), 1);
}

/// Guessing across many users from one address meets the looser per-address bound, and
/// the audit log still gets one entry for the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spraying_users_meets_the_per_address_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let answers = guess(&daemon, 120, |i| format!("user{i}")).await;
    let (wrong, limited) = counts(&answers);
    assert_eq!(
        (wrong, limited),
        (5 * FAILURES_PER_MINUTE, 120 - 5 * FAILURES_PER_MINUTE)
    );
    assert!(
        answers[..wrong]
            .iter()
            .all(|a| *a == Some(ErrorCode::InvalidEnrollmentCode)),
        "the first guesses are evaluated: {answers:?}"
    );
    assert_eq!(refused_enrollments(&daemon).len(), 1);
    // The address bound holds for every user, the ones it never tried included.
    let erin = daemon.add_user("erin");
    let mut session = Session::connect(&daemon).await;
    assert_eq!(
        enroll(&mut session, 200, "erin", &erin, 200).await,
        Some(ErrorCode::RateLimited)
    );
}
