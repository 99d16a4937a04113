//! The command lines as an operator and an official meet them: help for every command,
//! configuration checking with its exit codes, and the README walk-through with the real
//! `relaisd serve --dev` and `relais` binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use relais_testkit::relaisd;

/// The `relais` binary sits beside `relaisd` in the same target directory.
fn relais_bin() -> PathBuf {
    let path = relaisd().with_file_name("relais");
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
    let relaisd = relaisd().to_path_buf();
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
        (&relaisd, vec!["keys", "dev-certificates"]),
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
    let out = run(relaisd(), &["check-config", good.to_str().expect("utf-8")]);
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
    let out = run(relaisd(), &["check-config", bad.to_str().expect("utf-8")]);
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

    let out = run(relaisd(), &["serve", "--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a bad command line exits with EX_USAGE"
    );
}

/// `relaisd keys dev-certificates` writes what `serve --dev` would, in a directory of its
/// own, and keeps a complete set on later runs (the bench runs it before every node).
#[test]
fn dev_certificates_are_written_once_and_kept() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let out = run(relaisd(), &["keys", "dev-certificates", "--data", data_arg]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("wrote the development CA"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .expect(name)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "the directory is private");
    assert_eq!(mode("server.key"), 0o600, "the key is private");
    let ca = std::fs::read(data.join("ca.pem")).expect("ca.pem");
    assert!(std::fs::read(data.join("server.pem")).is_ok_and(|pem| !pem.is_empty()));

    let out = run(
        relaisd(),
        &[
            "keys",
            "dev-certificates",
            "--data",
            data_arg,
            "--name",
            "relay.test",
        ],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("kept the development CA"),
        "{printed}"
    );
    assert_eq!(std::fs::read(data.join("ca.pem")).expect("ca.pem"), ca);
}

/// The README's walk-through, command for command, against `relaisd serve --dev` started
/// as the README starts it: by whoever runs the tests (root in CI), from a fresh working
/// directory, with its state in the default `./relais-dev`; only the ports are free ones.
#[test]
fn readme_walkthrough_works_with_the_real_binaries() {
    let dir = relais_testkit::service_tempdir();
    let (mut daemon, walkthrough) = Walkthrough::start(dir.path());
    for user in ["alice", "bob", "carol"] {
        let code = walkthrough.admin(&["user", "add", user]);
        assert_eq!(code.len(), 19, "the code is alone on stdout: {code:?}");
        walkthrough.enroll(user, user, &code);
    }
    walkthrough.direct_messages_both_ways();
    walkthrough.a_group_conversation();
    walkthrough.verifying_a_contact();
    walkthrough.a_second_device_joins_and_is_revoked();
    assert!(
        walkthrough
            .admin(&["user", "list"])
            .contains("carol@localhost")
    );

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

/// The README walk-through's side: `relaisd serve --dev` in a working directory, its admin
/// socket, and the `relais` command with a home per device under that directory.
struct Walkthrough {
    dir: PathBuf,
    socket: PathBuf,
    relais: PathBuf,
    server: String,
    ca: PathBuf,
}

impl Walkthrough {
    /// Starts `relaisd serve --dev` in `dir` and waits for its admin socket.
    fn start(dir: &Path) -> (std::process::Child, Walkthrough) {
        let data = dir.join("relais-dev");
        let mut daemon = Command::new(relaisd())
            .current_dir(dir)
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let walkthrough = Walkthrough {
            dir: dir.to_owned(),
            socket,
            relais: relais_bin(),
            server: format!("https://{addr}"),
            ca: data.join("ca.pem"),
        };
        (daemon, walkthrough)
    }

    /// `relaisd admin ARGS`, which must succeed: its output, trimmed.
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(relaisd())
            .arg("admin")
            .arg("--socket")
            .arg(&self.socket)
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
    }

    /// `relais --home DIR/HOME ARGS`, which must succeed: its output.
    fn cli(&self, home: &str, args: &[&str]) -> String {
        let out = Command::new(&self.relais)
            .arg("--home")
            .arg(self.dir.join(home))
            .args(args)
            .output()
            .expect("relais");
        assert!(
            out.status.success(),
            "relais {home} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `relais enroll` of a device in `home` for `user`, as the README gives it.
    fn enroll(&self, home: &str, user: &str, code: &str) {
        self.cli(
            home,
            &[
                "enroll",
                "--server",
                &self.server,
                "--ca",
                self.ca.to_str().expect("utf-8"),
                "--user",
                user,
                "--code",
                code,
            ],
        );
    }

    fn direct_messages_both_ways(&self) {
        self.cli("alice", &["send", "bob", "Bonjour Bob"]);
        let got = self.cli("bob", &["recv", "--wait", "5"]);
        assert!(
            got.contains("alice@localhost") && got.contains("Bonjour Bob"),
            "{got}"
        );
        self.cli("bob", &["send", "alice", "Bonjour Alice"]);
        let got = self.cli("alice", &["recv", "--wait", "5", "--json"]);
        let line: serde_json::Value =
            serde_json::from_str(got.lines().next().expect("a message")).expect("json");
        assert_eq!(line["text"], "Bonjour Alice");
        assert_eq!(line["sender"], "bob@localhost");
    }

    fn a_group_conversation(&self) {
        self.cli(
            "alice",
            &["group", "create", "crisis-cell", "--members", "bob,carol"],
        );
        self.cli("alice", &["group", "send", "crisis-cell", "Réunion à 15h"]);
        let got = self.cli("carol", &["recv", "--wait", "5"]);
        assert!(
            got.contains("crisis-cell") && got.contains("Réunion à 15h"),
            "{got}"
        );
        let conversations = self.cli("carol", &["conversations"]);
        assert!(
            conversations.contains("crisis-cell\tgroup"),
            "{conversations}"
        );
        let history = self.cli("alice", &["history", "crisis-cell", "--limit", "20"]);
        assert!(history.contains("Réunion à 15h"), "{history}");
        let found = self.cli("alice", &["search", "15h"]);
        assert!(found.contains("Réunion à 15h"), "{found}");
        let members = self.cli("alice", &["group", "members", "crisis-cell"]);
        assert_eq!(members.lines().count(), 3, "{members}");
    }

    /// Both sides print the same number, and confirming it marks bob.
    fn verifying_a_contact(&self) {
        let number = |text: &str| text.lines().nth(1).expect("the number").trim().to_owned();
        let shown_to_alice = number(&self.cli("alice", &["verify", "bob"]));
        assert_eq!(
            shown_to_alice,
            number(&self.cli("bob", &["verify", "alice"]))
        );
        let confirmed = self.cli("alice", &["verify", "bob", "--confirm", &shown_to_alice]);
        assert!(confirmed.contains("verified"));
        assert!(
            self.cli("alice", &["verify", "bob"])
                .contains("status: verified")
        );
    }

    /// A second device of alice's: her first device adds it when it next connects, and
    /// revokes it.
    fn a_second_device_joins_and_is_revoked(&self) {
        let laptop_code = self.admin(&["code", "issue", "alice"]);
        self.enroll("alice-laptop", "alice", &laptop_code);
        let devices = self.cli("alice", &["devices"]);
        assert_eq!(devices.lines().count(), 2, "{devices}");
        let laptop = devices
            .lines()
            .find(|l| !l.ends_with("this device"))
            .and_then(|l| l.split('\t').next())
            .expect("the laptop's id")
            .to_owned();
        self.cli("alice-laptop", &["recv", "--wait", "5"]);
        let joined = self.cli("alice-laptop", &["conversations"]);
        assert!(joined.contains("crisis-cell"), "{joined}");
        self.cli("alice", &["devices", "revoke", &laptop]);
        assert_eq!(self.cli("alice", &["devices"]).lines().count(), 1);
    }
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
        let out = run(relaisd(), &["check-config", path.to_str().expect("utf-8")]);
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
