//! The client's state at rest: a home encrypted with a passphrase (at enrollment, or later
//! with `relais passphrase set`) keeps no message text, name or key in the clear in any of
//! its files, opens only with its passphrase, survives an encryption killed at any moment,
//! and keeps working; an unencrypted home says so once.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use relais_client::{Client, ClientError, Secret, SecretKind};
use relais_testkit::clients::{new_user, receive_n};
use relais_testkit::{Daemon, assert_bytes_absent, relaisd, secret};

const PASSPHRASE: &str = "un long voyage en train de nuit";

/// A file only its owner reads, holding `contents`.
fn private_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The `relais` binary beside `relaisd`, run on `home` with `args` and no terminal.
fn relais(home: &Path, args: &[&str]) -> Output {
    let bin = relaisd().with_file_name("relais");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --workspace --bins",
        bin.display()
    );
    Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAIS_PASSPHRASE_FILE")
        .env_remove("RELAIS_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run relais")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What must not be found in an encrypted home's files: the texts, the names in the
/// conversation, and the device key, raw and in hex.
fn needles(texts: &[&str], key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let mut needles: Vec<(String, Vec<u8>)> = texts
        .iter()
        .map(|t| (format!("text {t:?}"), t.as_bytes().to_vec()))
        .collect();
    needles.push(("the device key".into(), key.to_vec()));
    needles.push((
        "the device key in hex".into(),
        hex::encode(key).into_bytes(),
    ));
    needles
}

fn assert_nothing_in_the_clear(home: &Path, needles: &[(String, Vec<u8>)]) {
    let needles: Vec<(&str, Vec<u8>)> = needles
        .iter()
        .map(|(label, bytes)| (label.as_str(), bytes.clone()))
        .collect();
    assert_bytes_absent(&[home], &needles);
    for leftover in ["device.key", "device.key.new"] {
        assert!(
            !home.join(leftover).exists(),
            "{leftover} is left in {}",
            home.display()
        );
    }
}

/// The bytes of every file of the home's database.
fn database_files(home: &Path) -> Vec<(String, Vec<u8>)> {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(home.join(name)).ok()?)))
        .collect()
}

/// Marker texts a conversation between alice and bob leaves in their histories.
struct Texts {
    sent: String,
    answer: String,
    group: String,
}

/// alice writes to bob, bob answers, alice creates a group with him and writes there.
async fn converse(alice: &mut Client, bob: &mut Client) -> Texts {
    let texts = Texts {
        sent: secret("sent"),
        answer: secret("answer"),
        group: secret("group"),
    };
    alice.send("bob", &texts.sent).await.expect("alice sends");
    assert_eq!(receive_n(bob, 1).await[0].text, texts.sent);
    bob.send("alice", &texts.answer).await.expect("bob answers");
    assert_eq!(receive_n(alice, 1).await[0].text, texts.answer);
    alice
        .create_group(&texts.group, &["bob"])
        .await
        .expect("group");
    alice
        .group_send(&texts.group, &texts.sent)
        .await
        .expect("group send");
    assert_eq!(receive_n(bob, 1).await[0].text, texts.sent);
    texts
}

/// The texts of a direct conversation's history, oldest first.
async fn history(client: &Client, peer: &str) -> Vec<String> {
    client
        .history(peer, 100)
        .await
        .expect("history")
        .into_iter()
        .map(|m| m.text)
        .collect()
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_encrypted_at_enrollment_keeps_nothing_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let home = dir.path().join("alice");
    let passphrase_file = private_file(dir.path(), "passphrase", PASSPHRASE.as_bytes());
    let passphrase = Secret::read_passphrase_file(&passphrase_file).expect("passphrase");
    let code = daemon.add_user("alice");
    let mut alice = Client::enroll_with(
        &home,
        &daemon.server,
        &daemon.ca,
        "alice",
        &code,
        Some(&passphrase),
    )
    .await
    .expect("alice enrolls");
    alice.connect().await.expect("alice connects");
    assert_eq!(alice.protection(), Some(SecretKind::Passphrase));
    assert!(
        alice.take_warnings().is_empty(),
        "an encrypted home does not warn"
    );
    let key = alice.secret_key_for_tests();
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let texts = converse(&mut alice, &mut bob).await;
    alice.close().await;
    assert_nothing_in_the_clear(
        &home,
        &needles(
            &[
                &texts.sent,
                &texts.answer,
                &texts.group,
                "bob@localhost",
                &daemon.server,
            ],
            &key,
        ),
    );

    refused_unlocks_change_nothing(dir.path(), &home).await;

    // With the passphrase: everything is there, and the device keeps working.
    let mut alice = Client::open_with(&home, Some(&passphrase))
        .await
        .expect("reopen");
    assert_eq!(*alice.secret_key_for_tests(), *key);
    assert_eq!(
        history(&alice, "bob").await,
        [texts.sent.clone(), texts.answer.clone()]
    );
    assert_eq!(
        alice.search(&texts.answer, 10).await.expect("search").len(),
        1
    );
    alice.connect().await.expect("connect");
    alice
        .group_send(&texts.group, "encore")
        .await
        .expect("send again");
    assert_eq!(receive_n(&mut bob, 1).await[0].text, "encore");
    alice.close().await;
    let out = relais(
        &home,
        &[
            "--passphrase-file",
            path_text(&passphrase_file),
            "history",
            &texts.group,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("encore"));
}

/// Without the passphrase, or with a wrong one, the home is refused with a clear error
/// (exit code 78 from the command line), and nothing in it changes.
async fn refused_unlocks_change_nothing(dir: &Path, home: &Path) {
    let before = database_files(home);
    let locked = Client::open(home).await.map(|_| ()).expect_err("locked");
    assert!(matches!(locked, ClientError::Locked { .. }), "{locked}");
    let wrong = Client::open_with(home, Some(&Secret::passphrase("un long voyage en car")))
        .await
        .map(|_| ())
        .expect_err("wrong passphrase");
    assert_eq!(
        wrong.to_string(),
        format!("wrong passphrase for {}; try again", home.display())
    );
    assert!(wrong.is_local_setup());
    let wrong_file = private_file(dir, "wrong", b"un long voyage en car\n");
    let out = relais(home, &["--passphrase-file", path_text(&wrong_file), "recv"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrong passphrase for"),
        "{}",
        stderr(&out)
    );
    let out = relais(home, &["recv"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is encrypted with a passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        database_files(home),
        before,
        "a refused unlock changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypting_a_home_with_history_leaves_no_plaintext_and_it_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let home = alice.home().to_owned();
    let texts = converse(&mut alice, &mut bob).await;
    alice.close().await;
    let key: [u8; 32] = std::fs::read(home.join("device.key"))
        .expect("key file")
        .try_into()
        .expect("32 bytes");

    // A short passphrase is refused, and changes nothing.
    let short = private_file(dir.path(), "short", b"trop court\n");
    let out = relais(
        &home,
        &["--passphrase-file", path_text(&short), "passphrase", "set"],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(home.join("device.key").exists());

    let passphrase_file = private_file(
        dir.path(),
        "passphrase",
        format!("{PASSPHRASE}\n").as_bytes(),
    );
    let file = path_text(&passphrase_file);
    let out = relais(&home, &["--passphrase-file", file, "passphrase", "set"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is encrypted"));
    let old_texts = [
        texts.sent.as_str(),
        &texts.answer,
        &texts.group,
        "bob@localhost",
        &daemon.server,
    ];
    assert_nothing_in_the_clear(&home, &needles(&old_texts, &key));
    let again = relais(&home, &["--passphrase-file", file, "passphrase", "set"]);
    assert_eq!(again.status.code(), Some(64), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("passphrase change"),
        "{}",
        stderr(&again)
    );

    // Bob wrote meanwhile; alice reads it, her history is whole, and she answers.
    let (meanwhile, after) = (secret("meanwhile"), secret("after"));
    bob.send("alice", &meanwhile).await.expect("bob writes");
    let passphrase = Secret::read_passphrase_file(&passphrase_file).expect("passphrase");
    let mut alice = Client::open_with(&home, Some(&passphrase))
        .await
        .expect("open");
    assert_eq!(*alice.secret_key_for_tests(), key);
    alice.connect().await.expect("connect");
    assert!(
        alice.take_warnings().is_empty(),
        "no warning once encrypted"
    );
    assert_eq!(receive_n(&mut alice, 1).await[0].text, meanwhile);
    assert_eq!(
        history(&alice, "bob").await,
        [texts.sent.clone(), texts.answer.clone(), meanwhile.clone()]
    );
    alice
        .group_send(&texts.group, &after)
        .await
        .expect("group send");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(
        (got[0].conversation.as_str(), got[0].text.as_str()),
        (texts.group.as_str(), after.as_str())
    );
    alice.close().await;
    let all_texts = [&old_texts[..], &[meanwhile.as_str(), &after]].concat();
    assert_nothing_in_the_clear(&home, &needles(&all_texts, &key));

    a_new_passphrase_replaces_the_old_one(dir.path(), &home, &passphrase_file, &texts.group).await;
}

/// `relais passphrase change`: the old passphrase opens nothing any more, the new one
/// opens everything.
async fn a_new_passphrase_replaces_the_old_one(
    dir: &Path,
    home: &Path,
    old_file: &Path,
    group: &str,
) {
    let new_file = private_file(dir, "new", b"une autre phrase bien plus longue\n");
    let out = relais(
        home,
        &[
            "--passphrase-file",
            path_text(old_file),
            "passphrase",
            "change",
            "--new-passphrase-file",
            path_text(&new_file),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let old = Secret::read_passphrase_file(old_file).expect("old");
    let refused = Client::open_with(home, Some(&old)).await.map(|_| ());
    assert!(
        matches!(refused, Err(ClientError::WrongSecret { .. })),
        "{refused:?}"
    );
    let out = relais(
        home,
        &["--passphrase-file", path_text(&new_file), "conversations"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(group));
}

/// `relais passphrase set` killed at moments spread over its work (start-up, the key
/// derivation, the transaction, the scrub, the key file's removal), each time on a fresh
/// copy of the same unencrypted home: whatever the moment, the copy opens, encrypted or
/// not, with its whole history, and once opened keeps nothing in the clear if encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encryption_killed_at_any_moment_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let home = alice.home().to_owned();
    let texts: Vec<String> = (0..20).map(|i| secret(&format!("text{i}"))).collect();
    for text in &texts {
        alice.send("bob", text).await.expect("send");
    }
    receive_n(&mut bob, texts.len()).await;
    alice.close().await;
    let key: [u8; 32] = std::fs::read(home.join("device.key"))
        .expect("key file")
        .try_into()
        .expect("32 bytes");
    let passphrase_file = private_file(dir.path(), "passphrase", PASSPHRASE.as_bytes());
    let passphrase = Secret::read_passphrase_file(&passphrase_file).expect("passphrase");
    let needles = needles(&texts.iter().map(String::as_str).collect::<Vec<_>>(), &key);

    // How long a whole run takes here; the kills are spread over it, more densely at its
    // end, where the transaction and the scrub are.
    let whole = copy_home(&home, &dir.path().join("whole"));
    let started = std::time::Instant::now();
    let mut run = encrypt_in_background(&whole, &passphrase_file);
    assert!(
        run.wait().expect("wait").success(),
        "a run left alone succeeds"
    );
    let run_ms = started.elapsed().as_millis() as u64;
    let moments = (0..8)
        .map(|i| run_ms * i / 8)
        .chain((84..=100).step_by(2).map(|i| run_ms * i / 100));
    let (mut before_commit, mut after_commit) = (0, 0);
    for (n, delay_ms) in moments.enumerate() {
        let copy = copy_home(&home, &dir.path().join(format!("copy{n}")));
        let mut child = encrypt_in_background(&copy, &passphrase_file);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let leftover_key = copy.join("device.key").exists();
        let alice = Client::open_with(&copy, Some(&passphrase))
            .await
            .unwrap_or_else(|e| panic!("opens after a kill at {delay_ms} ms ({status}): {e}"));
        assert_eq!(
            history(&alice, "bob").await,
            texts,
            "killed at {delay_ms} ms"
        );
        let encrypted = alice.protection().is_some();
        alice.close().await;
        if encrypted {
            assert_nothing_in_the_clear(&copy, &needles);
            after_commit += usize::from(leftover_key);
        } else {
            before_commit += 1;
        }
        eprintln!(
            "killed at {delay_ms} of {run_ms} ms ({status}): encrypted {encrypted}, key file left {leftover_key}"
        );
    }
    eprintln!(
        "{before_commit} runs stopped before the commit, {after_commit} after it and before the end"
    );
    assert_nothing_in_the_clear(&whole, &needles);
}

/// A copy of a closed home's files in `to`.
fn copy_home(home: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for entry in std::fs::read_dir(home).expect("home").flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
    to.to_owned()
}

/// `relais passphrase set` on `home`, started.
fn encrypt_in_background(home: &Path, passphrase_file: &Path) -> std::process::Child {
    Command::new(relaisd().with_file_name("relais"))
        .arg("--home")
        .arg(home)
        .arg("--passphrase-file")
        .arg(passphrase_file)
        .args(["passphrase", "set"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relais")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencrypted_home_warns_once_and_a_key_file_can_protect_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let home = alice.home().to_owned();
    assert!(alice.take_warnings().is_empty(), "enrolling does not warn");
    alice.close().await;
    let mut alice = Client::open(&home).await.expect("open");
    let warnings = alice.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("is not encrypted") && w.contains("relais passphrase set")),
        "the first opening warns: {warnings:?}"
    );
    alice.close().await;
    let mut alice = Client::open(&home).await.expect("open");
    assert!(alice.take_warnings().is_empty(), "said once per home");
    assert_eq!(alice.protection(), None);
    alice.close().await;
    let out = relais(&home, &["conversations"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not encrypted"), "{}", stderr(&out));

    // A home enrolled with a key file from the command line: it needs the file.
    let carol = dir.path().join("carol");
    let key_file = private_file(dir.path(), "carol.key", &[0x5c; 32]);
    let key_file = key_file.to_str().expect("utf-8");
    let code = daemon.add_user("carol");
    let ca = daemon.ca.to_str().expect("utf-8");
    let out = relais(
        &carol,
        &[
            "--key-file",
            key_file,
            "enroll",
            "--server",
            &daemon.server,
            "--ca",
            ca,
            "--user",
            "carol",
            "--code",
            &code,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not encrypted"), "{}", stderr(&out));
    let out = relais(&carol, &["conversations"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("--key-file"), "{}", stderr(&out));
    let out = relais(
        &carol,
        &["--key-file", key_file, "send", "alice", "bonjour"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut alice = Client::open(&home).await.expect("open");
    alice.connect().await.expect("connect");
    assert_eq!(receive_n(&mut alice, 1).await[0].text, "bonjour");
    alice.close().await;
}
