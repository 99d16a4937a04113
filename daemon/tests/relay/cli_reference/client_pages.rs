//! The client's command line, `relais`: its reference `docs/reference/relais-cli.md` and
//! its pages in `client/man/`, from its definition (`relais_client::cli`). What its pages
//! say beyond the options comes from the code where the code says it: the exit codes the
//! binary's sources return, the files every part of the library puts in a home, how long a
//! command waits for a home in use, the variables its options read.

use std::collections::BTreeSet;
use std::path::Path;

use clap_mangen::roff::Roff;
use relais_client::cli::DEFAULT_HOME;
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE, FAILURE};

use super::{Manual, contains_word, entries, inline_markdown, read, render_markdown};

/// The exit codes of `relais_protocol::exit` the client may return, by the name its
/// sources use.
const CODES: &[(&str, u8)] = &[
    ("FAILURE", FAILURE),
    ("EX_USAGE", EX_USAGE),
    ("EX_SOFTWARE", EX_SOFTWARE),
    ("EX_CONFIG", EX_CONFIG),
];

/// The reference: what every command shares (exit status, environment, files, signals),
/// then every command's full help.
pub fn markdown() -> String {
    let manual = Relais::of_code();
    let mut command = relais_client::cli::command();
    command.build();
    let mut markdown = String::from(
        "# relais command line\n\n\
         Generated from the program's own definition by `daemon/tests/relay/cli_reference.rs`; do not edit by hand.\n\
         `relais` is the officials' command line on the client library; relaisd's is in `cli.md`.\n\
         Its manual pages are in `client/man/` (`man -l client/man/relais.1`).\n\
         No package installs them yet, since there is no client package: install them by hand where `man` looks, for example `/usr/local/share/man/man1/`.\n\n",
    );
    for (heading, entries) in manual.sections_of(&command, &[]) {
        let mut title = heading.to_lowercase();
        title[..1].make_ascii_uppercase();
        markdown.push_str(&format!("## {title}\n\n"));
        for (tag, text) in entries {
            markdown.push_str(&format!("- `{tag}`: {text}\n"));
        }
        markdown.push('\n');
    }
    render_markdown(&mut command, "", &mut markdown);
    markdown
}

/// The pages of `relais` and each of its commands, by file name.
pub fn pages() -> Vec<(String, String)> {
    let manual = Relais::of_code();
    // `relais help` is the same as `--help`: it gets no page, and no page names one.
    let mut command = relais_client::cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    super::command_pages(&command, Vec::new(), &manual, &mut pages);
    pages
}

/// What the pages state that the code decides.
struct Relais {
    /// The exit codes the binary returns, beside 0.
    codes: BTreeSet<u8>,
    /// How long a command waits for another process to release the home, in seconds.
    lock_wait_seconds: u64,
}

impl Relais {
    fn of_code() -> Relais {
        let mut codes = BTreeSet::new();
        // The `relais` binary's sources, where its exit codes are returned.
        for file in rust_files(&relais_testkit::repository().join("client/src/bin")) {
            let source = std::fs::read_to_string(&file).expect("read the binary's source");
            let file = file.display();
            for (at, _) in source.match_indices("EX_") {
                let name: String = source[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                assert!(
                    CODES.iter().any(|(known, _)| *known == name),
                    "{file} returns {name}: say in cli_reference/client_pages.rs what it means"
                );
            }
            codes.extend(
                CODES
                    .iter()
                    .filter(|(name, _)| contains_word(&source, name))
                    .map(|(_, code)| *code),
            );
        }
        let command = seconds("client/src/bin/relais.rs", "HOME_LOCK_WAIT");
        let session = seconds("client/src/session.rs", "OPEN_WAIT");
        assert_eq!(
            command, session,
            "a command and `relais follow` (Session::open_with) wait as long for a home in \
             use; if that changes, say in cli_reference/client_pages.rs which waits how long"
        );
        Relais {
            codes,
            lock_wait_seconds: command,
        }
    }

    /// The sections of the page of `relais PATH...`, each a heading and its tagged entries
    /// (tags plain, texts with Markdown's `code` spans).
    fn sections_of(
        &self,
        command: &clap::Command,
        path: &[String],
    ) -> Vec<(&'static str, Vec<(String, String)>)> {
        let top = path.first().map(String::as_str);
        let mut sections = Vec::new();
        if matches!(top, None | Some("follow")) {
            sections.push(("SIGNALS", signals()));
        }
        let codes = std::iter::once(0)
            .chain(self.codes.iter().copied())
            .map(|code| (code.to_string(), meaning(code, top)))
            .collect();
        sections.push(("EXIT STATUS", codes));
        sections.push(("ENVIRONMENT", environment(command)));
        sections.push(("FILES", self.files(command)));
        sections
    }

    /// The files a home holds, as the library names them; each file the library's sources
    /// put in a home (`home.join("NAME")`) is described, and each described file is one.
    fn files(&self, command: &clap::Command) -> Vec<(String, String)> {
        let dir = command
            .get_arguments()
            .find(|a| a.get_id() == "home")
            .and_then(|a| a.get_value_names()?.first().cloned())
            .expect("relais has --home DIR")
            .to_string();
        let described = [
            (
                "state.db",
                format!(
                    "The device's SQLite database: the relay it belongs to, its MLS state, \
                     conversations, history, outbox and settings. In an encrypted home every \
                     secret or content-bearing value in it is sealed under the passphrase or \
                     key file. `{dir}/state.db-wal` and `{dir}/state.db-shm` are SQLite's, \
                     beside it while a command runs."
                ),
            ),
            (
                "device.key",
                "The device's private key (Ed25519, mode 0600), in an unencrypted home: \
                 whoever copies it can act as this device. An encrypted home seals the key \
                 in `state.db` instead; `relais passphrase set` overwrites this file and \
                 removes it."
                    .to_owned(),
            ),
            (
                "device.key.new",
                "A new device's key while `relais enroll` waits for the relay, in an \
                 unencrypted home; renamed `device.key` once the relay accepted the device \
                 (by the next command, if the enrollment was interrupted)."
                    .to_owned(),
            ),
            (
                "ca.pem",
                "In a home enrolled from an enrollment link (`relais enroll --link`), the \
                 certificate the link pinned (mode 0600): the relay's CA, or its own \
                 certificate when it serves that alone. The home trusts it at every \
                 connection, as a CA file given with `--ca`."
                    .to_owned(),
            ),
            (
                "lock",
                format!(
                    "Locked by the one relais process working on the home (a command, \
                     `relais follow`), and naming it: another waits up to {} seconds, then \
                     exits with 78 saying the home is in use.",
                    self.lock_wait_seconds
                ),
            ),
        ];
        let in_code = home_files();
        let listed: BTreeSet<String> = described.iter().map(|(f, _)| (*f).to_owned()).collect();
        assert_eq!(
            in_code, listed,
            "the files the library puts in a home (left) and those relais(1) describes \
             (right) differ: describe each in cli_reference/client_pages.rs"
        );
        let mut files = vec![(
            format!("$HOME/{DEFAULT_HOME}/"),
            "The home when neither `--home` nor `RELAIS_HOME` is given. A home holds one \
             device: made by `relais enroll`, readable by its owner only. Whoever copies an \
             unencrypted home can read its history and act as the device: protect it with \
             `relais passphrase set`, and give each device a home of its own."
                .to_owned(),
        )];
        files.extend(
            described
                .into_iter()
                .map(|(file, text)| (format!("{dir}/{file}"), text)),
        );
        files
    }
}

impl Manual for Relais {
    fn page_of(&self, path: &[String]) -> String {
        std::iter::once("relais")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-")
    }

    fn sections(&self, command: &clap::Command, path: &[String]) -> Roff {
        let mut roff = Roff::new();
        for (heading, section) in self.sections_of(command, path) {
            let section = section
                .into_iter()
                .map(|(tag, text)| (tag, inline_markdown(&text)))
                .collect();
            entries(&mut roff, heading, section);
        }
        roff
    }

    /// Its parent and `relais(1)`, and the commands it is used with.
    fn see_also(&self, _command: &clap::Command, path: &[String]) -> Vec<String> {
        let mut pages = Vec::new();
        if let Some((_, parent)) = path.split_last() {
            pages.push(format!("{}(1)", self.page_of(parent)));
            if !parent.is_empty() {
                pages.push("relais(1)".to_owned());
            }
        }
        let related: &[&str] = match self.page_of(path).as_str() {
            "relais" => &["relais-enroll", "relais-verify", "relais-passphrase"],
            "relais-enroll" => &["relais-passphrase-set", "relais-devices"],
            "relais-send" | "relais-group-send" => &[
                "relais-recv",
                "relais-verify",
                "relais-set-require-verified",
            ],
            "relais-recv" => &["relais-follow", "relais-history"],
            "relais-follow" => &["relais-recv"],
            "relais-history" => &["relais-search", "relais-conversations"],
            "relais-search" | "relais-conversations" => &["relais-history"],
            "relais-verify" => &["relais-devices", "relais-set-require-verified"],
            "relais-devices" | "relais-devices-revoke" => &["relais-verify", "relais-enroll"],
            "relais-set-require-verified" => &["relais-verify"],
            "relais-passphrase" | "relais-passphrase-set" | "relais-passphrase-change" => {
                &["relais-enroll"]
            }
            "relais-group" => &["relais-verify"],
            _ => &[],
        };
        for page in related.iter().map(|p| format!("{p}(1)")) {
            if !pages.contains(&page) {
                pages.push(page);
            }
        }
        pages
    }
}

fn signals() -> Vec<(String, String)> {
    vec![(
        "SIGINT, SIGTERM".to_owned(),
        "`relais follow` stops: it acknowledges to the relay what it received and stored, \
         closes the connection and the database, releases the home and exits with 0. A second \
         signal during that shutdown exits at once with 1; what was not acknowledged yet comes \
         again at the next connection, and nothing stored is lost."
            .to_owned(),
    )]
}

/// What an exit code tells the user of `relais TOP...`.
fn meaning(code: u8, top: Option<&str>) -> String {
    let follow = top == Some("follow");
    let text = match code {
        0 if follow => "Stopped by SIGINT or SIGTERM, after a clean shutdown.",
        0 => "Success.",
        FAILURE if follow => {
            "The session ended by itself (the relay revoked this device or suspended its \
             account, or the device connected from elsewhere: read the message), standard \
             output could not be written, or a second signal interrupted the shutdown."
        }
        FAILURE => {
            "The relay refused the request (the message says why: a revoked device, a \
             suspended account, an unknown user, a recipient's full queue), or could not be \
             reached or did not answer in time, or standard output could not be written. A \
             network failure is worth retrying; a refusal is not, until its cause is fixed."
        }
        EX_USAGE if follow => {
            "`EX_USAGE`: the command line is wrong (an unknown option, a missing or bad \
             argument, no `--home` and no `$HOME`), or the passphrase or key file given may be \
             read by other users. Run again as it is, it fails the same way."
        }
        EX_USAGE => {
            "`EX_USAGE`: the command line is wrong (an unknown option, a missing or bad \
             argument, no `--home` and no `$HOME`), or asks for what cannot work: an unknown \
             conversation, a safety number that is not the one shown, a new passphrase too \
             short or typed differently, a passphrase or key file other users may read, or a \
             message held back because a verified contact changed devices and \
             `require-verified` is on. Run again as it is, it fails the same way."
        }
        EX_SOFTWARE => {
            "`EX_SOFTWARE`: an internal failure: the program could not start its runtime or \
             (`relais follow`) handle signals. Report it."
        }
        EX_CONFIG => {
            "`EX_CONFIG`: this device's setup is missing or wrong: no device is enrolled in \
             the home, another relais process is using it (a `relais follow`), an encrypted \
             home was given no passphrase or key file or a wrong one, or the local database \
             cannot be read or written. Fix it on this machine, then retry."
        }
        other => panic!("exit code {other}: say in cli_reference/client_pages.rs what it means"),
    };
    text.to_owned()
}

/// The variables `command` reads: `HOME`, and those clap reads for its options (the global
/// ones on every command).
fn environment(command: &clap::Command) -> Vec<(String, String)> {
    let mut vars = vec![(
        "HOME".to_owned(),
        format!("The home is `$HOME/{DEFAULT_HOME}` when `--home` and `RELAIS_HOME` are unset."),
    )];
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let mut help = help.trim_end_matches('.').to_owned();
        help[..1].make_ascii_lowercase();
        vars.push((
            var.to_string_lossy().into_owned(),
            format!("Taken for `--{long}` when it is not given: {help}."),
        ));
    }
    vars
}

/// The names the library's sources give files in a home: every `home.join("NAME")`.
fn home_files() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let root = relais_testkit::repository().join("client/src");
    for file in rust_files(&root) {
        let source = std::fs::read_to_string(&file).expect("read a client source");
        for (at, pattern) in source.match_indices("home.join(\"") {
            let rest = &source[at + pattern.len()..];
            let name = &rest[..rest.find('"').expect("a closed string")];
            names.insert(name.to_owned());
        }
    }
    assert!(!names.is_empty(), "no home.join(\"...\") in client/src");
    names
}

/// The Rust files under `dir`.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list client/src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `const NAME: Duration = Duration::from_secs(N);` in `file`: N.
fn seconds(file: &str, name: &str) -> u64 {
    let prefix = format!("const {name}: Duration = Duration::from_secs(");
    read(file)
        .lines()
        .find_map(|line| {
            line.trim_start()
                .strip_prefix(&prefix)?
                .strip_suffix(");")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{file} has no `{prefix}N);`"))
}
