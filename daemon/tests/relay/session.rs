//! The long-running session (`relais_client::Session`) and `relais follow` against the
//! real relay: pushes are processed and acknowledged as they arrive with nothing asking
//! for them; a session outlives a relay that dies and comes back, and sends its outbox
//! again with nothing lost or doubled; a revoked device's session ends saying why; and
//! `relais follow` prints parseable lines until SIGTERM or Ctrl-C, holding the home.

use std::process::Stdio;
use std::time::Duration;

use relais_client::{
    Client, ClientError, ConnectionState, ConversationChange, DeliveryState, ErrorCode, Event,
    Secret, Session,
};
use relais_testkit::Daemon;
use relais_testkit::clients::{new_user, relais_cli, server_code};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a test waits for an event (a reconnection after a restart included).
const WAIT: Duration = Duration::from_secs(20);

/// Reads `session`'s events until one satisfies `wanted`; fails after [`WAIT`] with every
/// event seen. Returns the events before it, and it.
async fn until(
    session: &mut Session,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> (Vec<Event>, Event) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, session.next_event()).await {
            Ok(Some(event)) if wanted(&event) => return (seen, event),
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the session ended before {what}; it said {seen:#?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; the session said {seen:#?}"),
        }
    }
}

/// Every event that comes within `quiet`.
async fn rest(session: &mut Session, quiet: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(quiet, session.next_event()).await {
        seen.push(event);
    }
    seen
}

fn is_message(text: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Message { text: t, .. } if t == text)
}

fn is_connection(state: ConnectionState) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Connection { state: s, .. } if *s == state)
}

fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Bob's session receives a conversation and its texts while nobody asks it for anything,
/// and acknowledges them: once it is shut down, the relay has nothing left for bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_takes_pushes_as_they_arrive_and_acknowledges_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let bob = new_user(&daemon, dir.path(), "bob").await;
    let mut session = Session::start(bob).expect("session");
    until(
        &mut session,
        "the connection",
        is_connection(ConnectionState::Connected),
    )
    .await;

    alice.send("bob", "first").await.expect("send");
    let (before, first) = until(&mut session, "the first text", is_message("first")).await;
    let Event::Message {
        conversation,
        group_id,
        sender,
        sent_at_ms,
        ..
    } = &first
    else {
        unreachable!("a message")
    };
    assert_eq!(
        (conversation.as_str(), sender.as_str()),
        ("alice@localhost", "alice@localhost")
    );
    assert_eq!(group_id.len(), 32, "a 16-byte group id in hex");
    assert!(*sent_at_ms > 0);
    assert!(
        before.iter().any(|e| matches!(
            e,
            Event::Conversation { conversation, change: ConversationChange::Created, kind, .. }
                if conversation == "alice@localhost" && kind == "direct"
        )),
        "the new conversation is announced before its first text: {before:#?}"
    );
    for text in ["second", "third", "fourth"] {
        alice.send("bob", text).await.expect("send");
    }
    let (between, _) = until(&mut session, "the fourth text", is_message("fourth")).await;
    assert_eq!(texts(&between), ["second", "third"], "in order");
    let received = rest(&mut session, Duration::from_millis(500)).await;
    assert!(texts(&received).is_empty(), "nothing twice: {received:#?}");
    // Acknowledged while the session runs, not only when it closes.
    assert_eq!(
        queue_once_settled(&daemon).await,
        0,
        "the running session acknowledged every delivery"
    );

    session.shutdown().await.expect("a clean shutdown");
    let mut bob = Client::open(&dir.path().join("bob")).await.expect("open");
    bob.connect().await.expect("connect");
    assert_eq!(
        bob.sync(Duration::from_millis(500)).await.expect("sync"),
        0,
        "every delivery was acknowledged, so the relay sends none again"
    );
    assert!(
        bob.receive(Duration::ZERO).await.expect("recv").is_empty(),
        "what the session announced is marked shown"
    );
    let history = bob.history("alice", 10).await.expect("history");
    let stored: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(stored, ["first", "second", "third", "fourth"]);
}

/// The deliveries the relay still holds for any device, once that stops falling (or
/// after [`WAIT`]).
async fn queue_once_settled(daemon: &Daemon) -> u64 {
    let queued = || {
        let status: serde_json::Value =
            serde_json::from_str(&daemon.admin(&["--json", "status"])).expect("json");
        status["queued_deliveries"].as_u64().expect("a count")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while queued() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queued()
}

/// The relay freezes while alice's session sends, then dies and comes back: the text waits
/// in her outbox (announced `pending`), goes out again once she has reconnected (`sent`),
/// and bob's session, back too, shows it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_the_relay_and_sends_its_outbox_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    alice.send("bob", "hello").await.expect("send");
    bob.sync(Duration::from_secs(2)).await.expect("bob joins");
    let mut alices = Session::start(alice).expect("alice's session");
    let mut bobs = Session::start(bob).expect("bob's session");
    for session in [&mut alices, &mut bobs] {
        until(
            session,
            "the connection",
            is_connection(ConnectionState::Connected),
        )
        .await;
    }
    let _ = rest(&mut bobs, Duration::from_millis(300)).await;

    let message_id = send_while_the_relay_dies(&mut daemon, &mut alices).await;
    daemon.launch();
    until(
        &mut alices,
        "the reconnection",
        is_connection(ConnectionState::Connected),
    )
    .await;
    let (_, sent) = until(&mut alices, "the answer", |e| {
        matches!(
            e,
            Event::Delivery {
                state: DeliveryState::Sent,
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(&sent, Event::Delivery { message_id: id, .. } if *id == message_id),
        "the same message, sent again with its id: {sent:?}"
    );
    let (seen, _) = until(&mut bobs, "the text", is_message("through the outage")).await;
    assert!(
        seen.iter()
            .any(is_connection(ConnectionState::Reconnecting)),
        "bob's session lost the relay too: {seen:#?}"
    );
    alices
        .handle()
        .send("bob", "after")
        .await
        .expect("send after");
    let (seen, _) = until(&mut bobs, "the next text", is_message("after")).await;
    let mut later = seen;
    later.extend(rest(&mut bobs, Duration::from_secs(1)).await);
    assert!(texts(&later).is_empty(), "nothing twice: {later:#?}");
    alices.shutdown().await.expect("alice stops");
    bobs.shutdown().await.expect("bob stops");
}

/// Freezes the relay while alice's session sends, then kills it: the text waits in her
/// outbox, announced `pending`, and the session starts reconnecting. Returns its id.
async fn send_while_the_relay_dies(daemon: &mut Daemon, alices: &mut Session) -> String {
    daemon.signal("STOP");
    let handle = alices.handle();
    let sending = tokio::spawn(async move { handle.send("bob", "through the outage").await });
    // The text is stored and sent; its answer never comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.kill();
    let error = sending.await.expect("task").expect_err("the relay died");
    assert!(!error.is_answer(), "the relay did not answer: {error}");
    let is_pending = |e: &Event| {
        matches!(
            e,
            Event::Delivery {
                state: DeliveryState::Pending,
                ..
            }
        )
    };
    let (_, pending) = until(alices, "the pending text", is_pending).await;
    let Event::Delivery { message_id, .. } = pending else {
        unreachable!("a delivery")
    };
    until(
        alices,
        "the loss",
        is_connection(ConnectionState::Disconnected),
    )
    .await;
    until(
        alices,
        "a retry",
        is_connection(ConnectionState::Reconnecting),
    )
    .await;
    message_id
}

/// An operator revokes bob's device: his session ends with the relay's reason, its
/// handle refuses further commands, and `shutdown` returns the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_devices_session_ends_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let bob = new_user(&daemon, dir.path(), "bob").await;
    let device = bob.device_id().to_owned();
    let mut session = Session::start(bob).expect("session");
    until(
        &mut session,
        "the connection",
        is_connection(ConnectionState::Connected),
    )
    .await;
    daemon.admin(&["device", "revoke", "bob", &device]);
    let (_, ended) = until(
        &mut session,
        "the end",
        is_connection(ConnectionState::Ended),
    )
    .await;
    let Event::Connection { code, reason, .. } = &ended else {
        unreachable!("a connection event")
    };
    assert_eq!(code.as_deref(), Some("DEVICE_REVOKED"), "{ended:?}");
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("revoked")),
        "{ended:?}"
    );
    assert_eq!(session.next_event().await, None, "nothing after the end");
    let refused = session.handle().send("alice", "hi").await;
    assert!(
        matches!(refused, Err(ClientError::SessionEnded)),
        "{refused:?}"
    );
    let error = session.shutdown().await.expect_err("ended by the relay");
    assert_eq!(
        server_code(&error),
        Some(ErrorCode::DeviceRevoked),
        "{error}"
    );
}

/// `relais follow` started as a program.
struct Follow {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Follow {
    fn start(home: &std::path::Path, args: &[&str]) -> Follow {
        let mut child = Command::new(relais_cli())
            .arg("--home")
            .arg(home)
            .arg("follow")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("relais follow");
        let stdout = child.stdout.take().expect("stdout");
        Follow {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Reads lines until one satisfies `wanted`; returns those before it, and it.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) if wanted(&line) => return (seen, line),
                Ok(Ok(Some(line))) => seen.push(line),
                Ok(Ok(None)) | Ok(Err(_)) => panic!("follow ended before {what}: {seen:#?}"),
                Err(_) => panic!("no {what} within {WAIT:?}; follow printed {seen:#?}"),
            }
        }
    }

    /// Sends `signal` (`TERM`, `INT`) and returns the exit status, what it printed after,
    /// and its standard error.
    async fn stop(mut self, signal: &str) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid)
            .status()
            .expect("kill");
        assert!(sent.success());
        let mut after = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, self.lines.next_line()).await {
            after.push(line);
        }
        let mut stderr = String::new();
        let mut pipe = self.child.stderr.take().expect("stderr");
        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
            .await
            .expect("stderr");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("follow exits")
            .expect("status");
        (status, after, stderr)
    }
}

/// `relais follow --json`: one JSON object per line, each with its `type`, printed as it
/// comes; the home is held meanwhile (another command is refused, saying why); SIGTERM
/// ends it with 0, leaving what it printed marked shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relais_follow_json_prints_one_event_per_line_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let bob = new_user(&daemon, dir.path(), "bob").await;
    bob.close().await;
    let home = dir.path().join("bob");
    let mut follow = Follow::start(&home, &["--json"]);
    let json = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    };
    follow
        .until("the connection", |l| {
            json(l)["type"] == "connection" && json(l)["state"] == "connected"
        })
        .await;

    another_command_is_refused(&home);

    alice.send("bob", "Bonjour\tBob").await.expect("send");
    alice.send("bob", "second").await.expect("send");
    let (before, line) = follow
        .until("the first text", |l| json(l)["type"] == "message")
        .await;
    let message = json(&line);
    assert_eq!(message["text"], "Bonjour\tBob");
    assert_eq!(message["sender"], "alice@localhost");
    assert_eq!(message["conversation"], "alice@localhost");
    assert!(message["sent_at_ms"].as_i64().is_some_and(|ms| ms > 0));
    assert!(
        message["group_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    assert!(
        before.iter().any(|l| json(l)["type"] == "conversation"),
        "{before:#?}"
    );
    follow
        .until("the second text", |l| json(l)["text"] == "second")
        .await;

    let (status, after, stderr) = follow.stop("TERM").await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    for line in after {
        assert!(json(&line)["type"].is_string(), "{line}");
    }
    let recv = std::process::Command::new(relais_cli())
        .arg("--home")
        .arg(&home)
        .args(["recv"])
        .output()
        .expect("relais recv");
    assert!(
        recv.status.success(),
        "{}",
        String::from_utf8_lossy(&recv.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&recv.stdout),
        "",
        "follow showed them, and released the home"
    );
}

/// While follow holds the home, `relais send` there waits a moment, then fails (exit 78)
/// saying the home is in use.
fn another_command_is_refused(home: &std::path::Path) {
    let busy = std::process::Command::new(relais_cli())
        .arg("--home")
        .arg(home)
        .args(["send", "alice", "hi"])
        .output()
        .expect("relais send");
    let said = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(78), "{said}");
    assert!(said.contains("in use by another relais process"), "{said}");
}

/// `relais follow` for people: lines as `recv` prints them on standard output, the
/// connection on standard error, and Ctrl-C ends it with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relais_follow_prints_lines_as_recv_does_until_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let bob = new_user(&daemon, dir.path(), "bob").await;
    bob.close().await;
    let mut follow = Follow::start(&dir.path().join("bob"), &[]);
    alice.send("bob", "Bonjour Bob").await.expect("send");
    let (_, line) = follow
        .until("the text", |l| l.ends_with("\tBonjour Bob"))
        .await;
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(
        (fields.len(), fields[0], fields[1]),
        (4, "alice@localhost", "alice@localhost"),
        "{line:?}"
    );
    assert!(fields[2].ends_with('Z'), "an RFC 3339 time: {line:?}");
    let (status, _, stderr) = follow.stop("INT").await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("relais: connected"), "{stderr}");
}

/// An encrypted home: `Session::open_with` opens it with its passphrase only, refusing
/// none or a wrong one as `Client::open_with` does, and holds it while it runs; `relais
/// follow` opens it the same way with `--passphrase-file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opens_an_encrypted_home_with_its_passphrase() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let home = dir.path().join("bob");
    let passphrase = Secret::passphrase("un long voyage en train de nuit");
    let code = daemon.add_user("bob");
    let bob = Client::enroll_with(
        &home,
        &daemon.server,
        &daemon.ca,
        "bob",
        &code,
        Some(&passphrase),
    )
    .await
    .expect("bob enrolls with a passphrase");
    bob.close().await;

    let none = Session::open(&home).await.map(|_| ()).expect_err("locked");
    assert!(matches!(none, ClientError::Locked { .. }), "{none}");
    let wrong = Secret::passphrase("un long voyage en car");
    let wrong = Session::open_with(&home, Some(&wrong))
        .await
        .map(|_| ())
        .expect_err("wrong");
    assert!(matches!(wrong, ClientError::WrongSecret { .. }), "{wrong}");
    let mut session = Session::open_with(&home, Some(&passphrase))
        .await
        .expect("opens");
    until(
        &mut session,
        "the connection",
        is_connection(ConnectionState::Connected),
    )
    .await;
    let second = Session::open_with(&home, Some(&passphrase))
        .await
        .map(|_| ())
        .expect_err("held");
    assert!(matches!(second, ClientError::HomeInUse { .. }), "{second}");
    alice.send("bob", "first").await.expect("send");
    until(&mut session, "the text", is_message("first")).await;
    session.shutdown().await.expect("a clean shutdown");

    let file = dir.path().join("passphrase");
    std::fs::write(&file, "un long voyage en train de nuit\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = file.to_str().expect("utf-8");
    let mut follow = Follow::start(&home, &["--json", "--passphrase-file", file]);
    alice.send("bob", "second").await.expect("send");
    follow
        .until("the second text", |l| l.contains("\"text\":\"second\""))
        .await;
    let (status, _, stderr) = follow.stop("TERM").await;
    assert!(status.success(), "exit {status:?}: {stderr}");
}
