//! The command lines as an operator and an official meet them: help for every command,
//! configuration checking with its exit codes, and the README walk-through with the real
//! `relaisd serve --dev` and `relais` binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::RELAISD;

/// The `relais` binary sits beside `relaisd` in the same target directory.
fn relais_bin() -> PathBuf {
    let path = Path::new(RELAISD).with_file_name("relais");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        path.display()
    );
    path
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run")
}

/// Every command and subcommand prints a usage line and describes each of its entries.
#[test]
fn help_is_complete_for_every_command() {
    let relaisd = PathBuf::from(RELAISD);
    let relais = relais_bin();
    let commands: Vec<(&PathBuf, Vec<&str>)> = vec![
        (&relaisd, vec![]),
        (&relaisd, vec!["serve"]),
        (&relaisd, vec!["check-config"]),
        (&relaisd, vec!["admin"]),
        (&relaisd, vec!["admin", "user"]),
        (&relaisd, vec!["admin", "user", "add"]),
        (&relaisd, vec!["admin", "user", "list"]),
        (&relaisd, vec!["admin", "code", "issue"]),
        (&relaisd, vec!["admin", "device", "list"]),
        (&relaisd, vec!["admin", "device", "revoke"]),
        (&relaisd, vec!["admin", "status"]),
        (&relais, vec![]),
        (&relais, vec!["enroll"]),
        (&relais, vec!["send"]),
        (&relais, vec!["group"]),
        (&relais, vec!["group", "create"]),
        (&relais, vec!["group", "send"]),
        (&relais, vec!["recv"]),
    ];
    for (bin, args) in commands {
        let mut full = args.clone();
        full.push("--help");
        let out = run(bin, &full);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} {full:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Usage:"), "{full:?}: no usage line:\n{text}");
        // Every listed command, argument and option carries a description, on its line
        // or on an indented line below it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_entry = line.starts_with("  ") && !line.starts_with("   ");
            if !is_entry {
                continue;
            }
            let entry = line.trim_start();
            let inline = entry
                .split_once("  ")
                .is_some_and(|(_, rest)| !rest.trim().is_empty());
            let below = lines
                .get(i + 1)
                .is_some_and(|next| next.starts_with("    ") && !next.trim().is_empty());
            assert!(
                inline || below,
                "{full:?}: undocumented entry {entry:?}\n{text}"
            );
        }
    }
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "domain = \"ministere.gouv.fr\"\n").expect("write");
    let out = run(
        Path::new(RELAISD),
        &["check-config", good.to_str().expect("utf-8")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "domain = \"ministere.gouv.fr\"\n[limits]\nframe_bytes_max = 0\n",
    )
    .expect("write");
    let out = run(
        Path::new(RELAISD),
        &["check-config", bad.to_str().expect("utf-8")],
    );
    assert_eq!(
        out.status.code(),
        Some(78),
        "a bad configuration exits with EX_CONFIG"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("bad.toml:3: frame_bytes_max: must be greater than 0"),
        "{error}"
    );

    let out = run(Path::new(RELAISD), &["serve", "--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a bad command line exits with EX_USAGE"
    );
}

/// The README's walk-through, command for command, against `relaisd serve --dev` started
/// as the README starts it: by whoever runs the tests (root in CI), from a fresh working
/// directory, with its state in the default `./relais-dev`; only the ports are free ones.
#[test]
fn readme_walkthrough_works_with_the_real_binaries() {
    let dir = common::service_tempdir();
    let data = dir.path().join("relais-dev");
    let mut daemon = Command::new(RELAISD)
        .current_dir(dir.path())
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start relaisd --dev");
    let stdout = daemon.stdout.take().expect("stdout");
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .next()
        .expect("a line")
        .expect("utf-8");
    let addr = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("clients="))
        .expect("address")
        .to_owned();
    let socket = data.join("admin.sock");
    let admin = |args: &[&str]| {
        let out = Command::new(RELAISD)
            .arg("admin")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("admin");
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let relais = relais_bin();
    let server = format!("https://{addr}");
    let ca = data.join("ca.pem");
    let cli = |home: &str, args: &[&str]| {
        let out = Command::new(&relais)
            .arg("--home")
            .arg(dir.path().join(home))
            .args(args)
            .output()
            .expect("relais");
        assert!(
            out.status.success(),
            "relais {home} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    for user in ["alice", "bob", "carol"] {
        let code = admin(&["user", "add", user]);
        assert_eq!(code.len(), 19, "the code is alone on stdout: {code:?}");
        cli(
            user,
            &[
                "enroll",
                "--server",
                &server,
                "--ca",
                ca.to_str().expect("utf-8"),
                "--user",
                user,
                "--code",
                &code,
            ],
        );
    }
    cli("alice", &["send", "bob", "Bonjour Bob"]);
    let got = cli("bob", &["recv", "--wait", "5"]);
    assert!(
        got.contains("alice@localhost") && got.contains("Bonjour Bob"),
        "{got}"
    );
    cli("bob", &["send", "alice", "Bonjour Alice"]);
    let got = cli("alice", &["recv", "--wait", "5", "--json"]);
    let line: serde_json::Value =
        serde_json::from_str(got.lines().next().expect("a message")).expect("json");
    assert_eq!(line["text"], "Bonjour Alice");
    assert_eq!(line["sender"], "bob@localhost");
    cli(
        "alice",
        &["group", "create", "crisis-cell", "--members", "bob,carol"],
    );
    cli("alice", &["group", "send", "crisis-cell", "Réunion à 15h"]);
    let got = cli("carol", &["recv", "--wait", "5"]);
    assert!(
        got.contains("crisis-cell") && got.contains("Réunion à 15h"),
        "{got}"
    );
    let conversations = cli("carol", &["conversations"]);
    assert!(
        conversations.contains("crisis-cell\tgroup"),
        "{conversations}"
    );
    let history = cli("alice", &["history", "crisis-cell", "--limit", "20"]);
    assert!(history.contains("Réunion à 15h"), "{history}");
    let found = cli("alice", &["search", "15h"]);
    assert!(found.contains("Réunion à 15h"), "{found}");
    let members = cli("alice", &["group", "members", "crisis-cell"]);
    assert_eq!(members.lines().count(), 3, "{members}");

    // Verifying a contact: both sides print the same number, and confirming it marks bob.
    let number = |text: &str| text.lines().nth(1).expect("the number").trim().to_owned();
    let shown_to_alice = number(&cli("alice", &["verify", "bob"]));
    assert_eq!(shown_to_alice, number(&cli("bob", &["verify", "alice"])));
    assert!(cli("alice", &["verify", "bob", "--confirm", &shown_to_alice]).contains("verified"));
    assert!(cli("alice", &["verify", "bob"]).contains("status: verified"));
    // A second device of alice's: her first device adds it when it next connects.
    let laptop_code = admin(&["code", "issue", "alice"]);
    cli(
        "alice-laptop",
        &[
            "enroll",
            "--server",
            &server,
            "--ca",
            ca.to_str().expect("utf-8"),
            "--user",
            "alice",
            "--code",
            &laptop_code,
        ],
    );
    let devices = cli("alice", &["devices"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    let laptop = devices
        .lines()
        .find(|l| !l.ends_with("this device"))
        .and_then(|l| l.split('\t').next())
        .expect("the laptop's id")
        .to_owned();
    cli("alice-laptop", &["recv", "--wait", "5"]);
    let joined = cli("alice-laptop", &["conversations"]);
    assert!(joined.contains("crisis-cell"), "{joined}");
    cli("alice", &["devices", "revoke", &laptop]);
    assert_eq!(cli("alice", &["devices"]).lines().count(), 1);
    assert!(admin(&["user", "list"]).contains("carol@localhost"));

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().expect("wait");
    assert!(
        status.success(),
        "relaisd --dev exits cleanly on SIGTERM: {status:?}"
    );
}

/// The configuration reference's examples are valid configurations.
#[test]
fn config_reference_examples_pass_check_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/reference/config.md"
    ))
    .expect("docs/reference/config.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut examples = 0;
    for (i, block) in text.split("```toml\n").skip(1).enumerate() {
        let example = block.split("```").next().expect("a closed block");
        let path = dir.path().join(format!("example{i}.toml"));
        std::fs::write(&path, example).expect("write");
        let out = run(
            Path::new(RELAISD),
            &["check-config", path.to_str().expect("utf-8")],
        );
        assert!(
            out.status.success(),
            "example {i} is invalid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        examples += 1;
    }
    assert!(
        examples >= 2,
        "the reference shows a complete and a minimal example"
    );
}
