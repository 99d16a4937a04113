//! The README's walk-through, run command for command with the real binaries: the test
//! takes the command lines of its `sh` blocks one after the other, runs each (or says why
//! not), and checks what it printed; a command the README gains or loses fails it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relais_testkit::relaisd;

use super::relais_bin;

/// The README's walk-through, command for command: each command line of its `sh` blocks,
/// in its order, is one this test runs with the real binaries, or says why it does not.
/// The relay is `relaisd serve --dev` started as the README starts it: by whoever runs the
/// tests (root in CI), from a fresh working directory, with its state in the default
/// `./relais-dev`. Only the ports are free ones, the homes are in that directory rather
/// than in `/tmp`, and an encrypted home's passphrase comes from `RELAIS_PASSPHRASE_FILE`
/// instead of the terminal, as the README says it may.
#[test]
fn readme_walkthrough_works_with_the_real_binaries() {
    let dir = relais_testkit::service_tempdir();
    let mut readme = Walkthrough::new(dir.path());
    let built = "the test runs the relaisd and relais that cargo built for it";
    readme.skip("cargo build --release", built);
    readme.skip(r#"export PATH="$PWD/target/release:$PATH""#, built);
    readme.start_relay("relaisd serve --dev");
    two_users_write_to_each_other(&mut readme);
    alice_verifies_bob(&mut readme);
    let laptop_key = a_second_device_joins_and_is_revoked(&mut readme);
    a_group_conversation(&mut readme);
    a_passphrase_for_alice(&mut readme);
    the_members_govern_the_group(&mut readme, &laptop_key);
    the_operators_side(&mut readme);
    readme.stop_relay();
    readme.skip(
        "relaisd serve --dev --storage postgres://relais@127.0.0.1:5432/relais \
         --storage-password-file ./db-password",
        "it needs a PostgreSQL database; postgres.rs runs relaisd on one",
    );
    readme.finish();
}

/// Alice enrolls from an enrollment link pasted on standard input, Bob with his code; they
/// write to each other.
fn two_users_write_to_each_other(readme: &mut Walkthrough) {
    let printed = readme.run("relaisd admin --socket relais-dev/admin.sock user add alice --link");
    let link = printed.lines().next().unwrap_or_default().to_owned();
    // The relay listens on a free port rather than the README's 8443, and `--dev`'s links
    // name the port it listens on.
    let authority = readme.server.trim_start_matches("https://").to_owned();
    let expected = format!("relais://enroll?v=1&server={authority}&user=alice@localhost&code=");
    assert!(
        link.starts_with(&expected),
        "the link, then its QR code: {printed}"
    );
    let code = readme.run("BOB_CODE=$(relaisd admin --socket relais-dev/admin.sock user add bob)");
    assert_eq!(
        code.trim().len(),
        19,
        "the code is alone on stdout: {code:?}"
    );
    let pasted = format!("{link}\n");
    let enrolled = readme.run_with_input("relais --home /tmp/alice enroll --link -", &pasted);
    assert!(
        enrolled.starts_with("enrolled alice@localhost as device "),
        "{enrolled}"
    );
    readme.run(&enroll("bob", "bob", "BOB_CODE"));
    readme.run(r#"relais --home /tmp/alice send bob "Bonjour Bob""#);
    let got = readme.run("relais --home /tmp/bob recv --wait 5");
    let line = got.lines().next().unwrap_or_default();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 4, "conversation, sender, time, text: {got}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("alice@localhost", "alice@localhost", "Bonjour Bob"),
        "{got}"
    );
    readme.run(r#"relais --home /tmp/bob send alice "Bonjour Alice""#);
    let got = readme.run("relais --home /tmp/alice recv --wait 5");
    assert!(
        got.starts_with("bob@localhost\tbob@localhost\t") && got.ends_with("\tBonjour Alice\n"),
        "{got}"
    );
}

/// Both sides print the same number, and confirming it marks bob verified.
fn alice_verifies_bob(readme: &mut Walkthrough) {
    let number = |shown: &str| shown.lines().nth(1).expect("the number").trim().to_owned();
    let shown = readme.run("relais --home /tmp/alice verify bob");
    assert!(shown.contains("status: not verified"), "{shown}");
    let alices = number(&shown);
    let digits: String = alices.split(' ').collect();
    assert!(
        digits.len() == 60 && digits.chars().all(|c| c.is_ascii_digit()),
        "60 digits: {shown}"
    );
    let bobs = number(&readme.run("relais --home /tmp/bob verify alice"));
    assert_eq!(alices, bobs, "alice and bob read out the same number");
    let confirmed = readme.run_filled(
        r#"relais --home /tmp/alice verify bob --confirm "NUMBER BOB READ OUT""#,
        &[("NUMBER BOB READ OUT", &bobs)],
    );
    assert_eq!(confirmed, "bob@localhost is verified\n");
}

/// Alice's laptop: her first device lists it, adds it to her conversation with bob (saying
/// so under the key `relais devices` shows) and answers its request for history; the
/// laptop has the conversation and its messages; then the first device revokes it.
/// Returns the laptop's key.
fn a_second_device_joins_and_is_revoked(readme: &mut Walkthrough) -> String {
    readme.run("LAPTOP_CODE=$(relaisd admin --socket relais-dev/admin.sock code issue alice)");
    readme.run(&enroll("alice-laptop", "alice", "LAPTOP_CODE"));
    let devices = readme.run("relais --home /tmp/alice devices");
    assert_eq!(devices.lines().count(), 2, "{devices}");
    let laptop: Vec<&str> = devices
        .lines()
        .find(|l| !l.ends_with("\tthis device"))
        .expect("the laptop")
        .split('\t')
        .collect();
    let (id, key) = (
        laptop[0].to_owned(),
        laptop[1].strip_prefix("key ").expect("its key"),
    );
    assert_eq!(key.len(), 16, "{devices}");
    let added = readme.run("relais --home /tmp/alice recv --wait 2");
    let line = format!("has a new device {}… (added by alice@localhost", &key[..8]);
    assert!(added.contains(&line), "no {line:?} in:\n{added}");
    readme.run("relais --home /tmp/alice-laptop recv --wait 5");
    let joined = readme.run("relais --home /tmp/alice-laptop conversations");
    assert!(
        joined.starts_with("bob@localhost\tdirect\t"),
        "in the conversation with bob: {joined}"
    );
    let history = readme.run("relais --home /tmp/alice-laptop history bob");
    for text in ["\tBonjour Bob\n", "\tBonjour Alice\n"] {
        assert!(history.contains(text), "the laptop has {text:?}: {history}");
    }
    let revoked = readme.run_filled(
        "relais --home /tmp/alice devices revoke LAPTOP_DEVICE_ID",
        &[("LAPTOP_DEVICE_ID", &id)],
    );
    assert_eq!(revoked, format!("device {id} is revoked\n"));
    key.to_owned()
}

fn a_group_conversation(readme: &mut Walkthrough) {
    readme.run("CAROL_CODE=$(relaisd admin --socket relais-dev/admin.sock user add carol)");
    readme.run(&enroll("carol", "carol", "CAROL_CODE"));
    readme.run("relais --home /tmp/alice group create crisis-cell --members bob,carol");
    readme.run(r#"relais --home /tmp/alice group send crisis-cell "Réunion à 15h""#);
    let got = readme.run("relais --home /tmp/carol recv --wait 5");
    assert!(
        got.starts_with("crisis-cell\talice@localhost\t") && got.ends_with("\tRéunion à 15h\n"),
        "{got}"
    );
    let conversations = readme.run("relais --home /tmp/alice conversations");
    assert!(
        conversations.starts_with("crisis-cell\tgroup\t0 unread\t"),
        "the newest first: {conversations}"
    );
    let history = readme.run("relais --home /tmp/alice history crisis-cell --limit 20");
    assert!(history.ends_with("\tRéunion à 15h\n"), "{history}");
    let found = readme.run(r#"relais --home /tmp/alice search "15h""#);
    assert_eq!(found, history, "the one entry with 15h");
    let members = readme.run("relais --home /tmp/alice group members crisis-cell");
    let roles: Vec<(&str, &str)> = members
        .lines()
        .map(|l| {
            let mut fields = l.split('\t');
            (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("alice@localhost", "admin"),
            ("bob@localhost", "member"),
            ("carol@localhost", "member")
        ],
        "{members}"
    );
}

fn a_passphrase_for_alice(readme: &mut Walkthrough) {
    readme.give_passphrase("/tmp/alice");
    let set = readme.run("relais --home /tmp/alice passphrase set");
    assert!(
        set.ends_with(" is encrypted; every command now needs its passphrase\n"),
        "{set}"
    );
    assert!(
        !readme.dir.join("alice/device.key").exists(),
        "the device key is no longer a file of its own"
    );
    let history = readme.run("relais --home /tmp/alice history crisis-cell");
    assert!(history.ends_with("\tRéunion à 15h\n"), "{history}");
}

/// Promotion, renaming and leaving, seen in alice's history; with, in her conversation
/// with bob, her laptop's departure under the key `relais devices` showed.
fn the_members_govern_the_group(readme: &mut Walkthrough, laptop_key: &str) {
    let promoted = readme.run("relais --home /tmp/alice group promote crisis-cell bob");
    assert_eq!(promoted, "bob is an admin of crisis-cell\n");
    let renamed = readme.run("relais --home /tmp/bob group rename crisis-cell cellule-de-crise");
    assert_eq!(renamed, "crisis-cell is now named cellule-de-crise\n");
    let left = readme.run("relais --home /tmp/carol group leave cellule-de-crise");
    assert!(
        left.starts_with("you are leaving cellule-de-crise"),
        "{left}"
    );
    let got = readme.run("relais --home /tmp/alice recv");
    let short = &laptop_key[..8];
    for line in [
        "bob@localhost\t*\t",
        format!("alice@localhost's device {short}…").as_str(),
        "cellule-de-crise\t*\t",
        "alice@localhost made bob@localhost an admin",
        "bob@localhost renamed the group to cellule-de-crise",
        "carol@localhost left",
    ] {
        assert!(got.contains(line), "no {line:?} in:\n{got}");
    }
}

fn the_operators_side(readme: &mut Walkthrough) {
    let users = readme.run("relaisd admin --socket relais-dev/admin.sock user list");
    for user in ["alice@localhost", "bob@localhost", "carol@localhost"] {
        assert!(users.contains(user), "{users}");
    }
    let devices = readme.run("relaisd admin --socket relais-dev/admin.sock device list bob");
    let bobs = devices
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("bob's device")
        .to_owned();
    let revoked = readme.run_filled(
        "relaisd admin --socket relais-dev/admin.sock device revoke bob DEVICE_ID",
        &[("DEVICE_ID", &bobs)],
    );
    assert!(revoked.contains(&bobs), "{revoked}");
}

/// The README's `relais enroll` of a device in `/tmp/HOME` for `user`, with the code in
/// `$VARIABLE`.
fn enroll(home: &str, user: &str, variable: &str) -> String {
    format!(
        "relais --home /tmp/{home} enroll --server https://127.0.0.1:8443 --ca relais-dev/ca.pem \
         --user {user} --code \"${variable}\""
    )
}

/// The README's walk-through as this test runs it: the command lines of its `sh` blocks,
/// which the test takes one after the other, and what they need: `relaisd serve --dev` in
/// a working directory, the shell variables the README sets, the passphrases given.
struct Walkthrough {
    dir: PathBuf,
    /// The README's command lines, in order, and how many the test has taken.
    commands: Vec<String>,
    taken: usize,
    /// What `NAME=$(...)` lines set.
    variables: HashMap<String, String>,
    daemon: Option<std::process::Child>,
    /// The relay's address, instead of the README's `https://127.0.0.1:8443`.
    server: String,
    /// Homes (as the README names them) and their passphrase file.
    passphrases: HashMap<String, PathBuf>,
}

/// The address the README gives the relay; the test's relay listens on a free port.
const README_SERVER: &str = "https://127.0.0.1:8443";

impl Walkthrough {
    fn new(dir: &Path) -> Walkthrough {
        let readme = std::fs::read_to_string(relais_testkit::repository().join("README.md"))
            .expect("README.md");
        Walkthrough {
            dir: dir.to_owned(),
            commands: walkthrough_commands(&readme),
            taken: 0,
            variables: HashMap::new(),
            daemon: None,
            server: String::new(),
            passphrases: HashMap::new(),
        }
    }

    /// Takes the README's next command line, which must be `line`.
    fn take(&mut self, line: &str) {
        let next = self.commands.get(self.taken).map(String::as_str);
        assert_eq!(
            next,
            Some(line),
            "the README's walk-through, command {}: the test must run what the README says",
            self.taken + 1
        );
        self.taken += 1;
    }

    /// Takes `line` without running it, for the reason given (in the test's output).
    fn skip(&mut self, line: &str, why: &str) {
        self.take(line);
        eprintln!("not run: {line}: {why}");
    }

    /// Takes and runs `line`, which must succeed; returns its standard output.
    fn run(&mut self, line: &str) -> String {
        self.run_filled(line, &[])
    }

    /// Takes and runs `line` with `input` as its standard input, as the reader types or
    /// pastes it; returns its standard output.
    fn run_with_input(&mut self, line: &str, input: &str) -> String {
        self.take(line);
        self.execute_with(line, line, Some(input))
    }

    /// Takes `line` and runs it with each placeholder the README leaves to the reader
    /// (`LAPTOP_DEVICE_ID`) replaced by what an earlier command printed.
    fn run_filled(&mut self, line: &str, fills: &[(&str, &str)]) -> String {
        self.take(line);
        let mut filled = line.to_owned();
        for (placeholder, value) in fills {
            assert!(filled.contains(placeholder), "{line} has no {placeholder}");
            filled = filled.replace(placeholder, value);
        }
        if let Some((name, inner)) = filled
            .split_once("=$(")
            .and_then(|(name, rest)| Some((name, rest.strip_suffix(')')?)))
        {
            let out = self.execute(line, inner);
            self.variables
                .insert(name.to_owned(), out.trim().to_owned());
            return out;
        }
        self.execute(line, &filled)
    }

    /// Runs `command` (the README's `line`, filled in) from the working directory, with
    /// no terminal.
    fn execute(&self, line: &str, command: &str) -> String {
        self.execute_with(line, command, None)
    }

    /// The same, with `input` (if any) as the command's standard input.
    fn execute_with(&self, line: &str, command: &str, input: Option<&str>) -> String {
        let words = shell_words(command, &self.variables);
        let mut process = Command::new(self.program(&words[0]));
        for word in &words[1..] {
            process.arg(self.local(word));
        }
        let home = words.iter().skip_while(|w| *w != "--home").nth(1);
        if let Some(file) = home.and_then(|home| self.passphrases.get(home)) {
            process.env("RELAIS_PASSPHRASE_FILE", file);
        }
        let mut child = process
            .current_dir(&self.dir)
            .env_remove("RELAIS_HOME")
            .env_remove("RELAIS_KEY_FILE")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run a command of the README");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write as _;
            stdin.write_all(input.as_bytes()).expect("standard input");
        }
        let out = child
            .wait_with_output()
            .expect("run a command of the README");
        assert!(
            out.status.success(),
            "{line}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn program(&self, name: &str) -> PathBuf {
        match name {
            "relaisd" => relaisd().to_owned(),
            "relais" => relais_bin(),
            other => panic!("the README runs {other}: say in cli.rs how the test runs it"),
        }
    }

    /// An argument as this test gives it: the relay's real address, and homes under the
    /// working directory rather than in `/tmp`.
    fn local(&self, word: &str) -> String {
        if word == README_SERVER {
            return self.server.clone();
        }
        match word.strip_prefix("/tmp/") {
            Some(home) => self.dir.join(home).display().to_string(),
            None => word.to_owned(),
        }
    }

    /// From now on, commands on `home` read its passphrase from `RELAIS_PASSPHRASE_FILE`.
    fn give_passphrase(&mut self, home: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let file = self.dir.join("passphrase");
        std::fs::write(&file, "un long voyage en train de nuit\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        self.passphrases.insert(home.to_owned(), file);
    }

    /// Takes `line`, the README's `relaisd serve --dev`, and starts it on free ports; waits
    /// for its admin socket.
    fn start_relay(&mut self, line: &str) {
        self.take(line);
        let words = shell_words(line, &self.variables);
        let mut daemon = Command::new(self.program(&words[0]))
            .current_dir(&self.dir)
            .args(&words[1..])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relaisd --dev");
        let stdout = daemon.stdout.take().expect("stdout");
        self.daemon = Some(daemon);
        let first = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .next()
            .expect("a line")
            .expect("utf-8");
        let address = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("clients="))
            .expect("address");
        self.server = format!("https://{address}");
        let socket = self.dir.join("relais-dev/admin.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C, as the README stops the relay: it exits cleanly.
    fn stop_relay(&mut self) {
        let mut daemon = self.daemon.take().expect("the relay runs");
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(daemon.id().to_string())
            .status();
        let status = daemon.wait().expect("wait");
        assert!(
            status.success(),
            "relaisd --dev exits cleanly on Ctrl-C: {status:?}"
        );
    }

    /// Every command line of the README's walk-through was taken.
    fn finish(&self) {
        assert!(
            self.taken == self.commands.len(),
            "the README's walk-through has commands this test does not run: {:?}",
            &self.commands[self.taken..]
        );
    }
}

impl Drop for Walkthrough {
    fn drop(&mut self) {
        // A failed step leaves no relay behind.
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// The command lines of the README's `sh` blocks from "Five-minute walk-through" to the
/// next section, in order.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Five-minute walk-through\n")
        .expect("the README has its walk-through");
    let section = &readme[start + 1..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        match line {
            "```sh" => in_block = true,
            "```" => in_block = false,
            line if in_block && !line.trim().is_empty() && !line.starts_with('#') => {
                assert!(
                    !line.ends_with('\\'),
                    "one command per line in the README: {line}"
                );
                commands.push(line.to_owned());
            }
            _ => {}
        }
    }
    assert!(
        commands.len() > 20,
        "the walk-through's commands: {commands:?}"
    );
    commands
}

/// `line` split into words as a shell would: double quotes group words, and `$NAME` is a
/// variable an earlier line set. Nothing else the README uses needs a shell.
fn shell_words(line: &str, variables: &HashMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_default();
            }
            '$' => {
                let mut name = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    name.push(c);
                }
                let value = variables
                    .get(&name)
                    .unwrap_or_else(|| panic!("{line}: ${name} is not set by an earlier line"));
                word.get_or_insert_default().push_str(value);
            }
            '\'' | '\\' | '`' | '|' | '>' | '<' | ';' | '&' if !quoted => {
                panic!("{line}: the test does not interpret {c:?}; run such a line by hand")
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_default().push(c),
        }
    }
    assert!(!quoted, "{line}: a quote is not closed");
    words.extend(word);
    words
}
