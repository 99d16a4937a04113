//! What a command's page says beyond its options: SIGNALS, EXIT STATUS, ENVIRONMENT, FILES
//! and SEE ALSO. Where the code says it, it comes from the code: the exit codes each
//! command's source returns, the configuration's default paths, the file the unit passes to
//! `serve`, the credentials it loads, the time connections get to close.

use std::collections::BTreeSet;
use std::path::Path;

use clap_mangen::roff::{Inline, Roff};
use relais_protocol::exit::{
    EX_CONFIG, EX_DATAERR, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, FAILURE,
};
use relaisd::config::{Config, KeySourceKind};

use super::{Manual, contains_word, entries, inline_markdown, read};

/// The exit codes of `relais_protocol::exit`, by the name the sources use.
const CODES: &[(&str, u8)] = &[
    ("FAILURE", FAILURE),
    ("EX_USAGE", EX_USAGE),
    ("EX_DATAERR", EX_DATAERR),
    ("EX_UNAVAILABLE", EX_UNAVAILABLE),
    ("EX_SOFTWARE", EX_SOFTWARE),
    ("EX_CONFIG", EX_CONFIG),
];

/// The paths and figures the pages state, read from the code and the units.
pub struct Facts {
    /// The configuration file `relaisd.service` passes to `serve --config`.
    pub config_file: String,
    pub data_dir: String,
    pub database: String,
    pub admin_socket: String,
    /// Where `relaisd keys provision` seals the keys, and the unit loads them from.
    pub credentials: String,
    /// The files in `credentials`.
    pub credential_files: Vec<String>,
    /// Seconds open connections get to close when `serve` stops.
    pub drain_seconds: u64,
}

impl Facts {
    /// The facts of `config`, the configuration every key of which is defaulted.
    pub fn of_code(config: &Config) -> Facts {
        let unit = read("systemd/relaisd.service");
        let exec = unit
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .expect("systemd/relaisd.service has no ExecStart=");
        let config_file = exec
            .split_whitespace()
            .skip_while(|word| *word != "--config")
            .nth(1)
            .unwrap_or_else(|| panic!("relaisd.service's ExecStart={exec} names no --config"))
            .to_owned();
        let mut sealed = config.clone();
        sealed.keys.source = KeySourceKind::Sealed;
        let credentials = sealed.keys_dir();
        let credential_files: Vec<String> = [
            relaisd::keys::CODE_SECRET,
            relaisd::keys::SIGNING_KEY,
            relaisd::keys::TLS_KEY,
        ]
        .iter()
        .map(|name| relaisd::keys::sealed_path(&credentials, name))
        .chain([relaisd::keys::certificate_path(&credentials)])
        .map(|path| path.display().to_string())
        .collect();
        for file in &credential_files {
            assert!(
                unit.contains(&format!(":{file}\n")),
                "relaisd.service does not load {file}, where the sealed source reads it"
            );
        }
        Facts {
            config_file,
            data_dir: config.data_dir.display().to_string(),
            database: config.database_path().display().to_string(),
            admin_socket: config.admin_socket().display().to_string(),
            credentials: credentials.display().to_string(),
            credential_files,
            drain_seconds: drain_seconds(),
        }
    }
}

impl Manual for Facts {
    fn page_of(&self, path: &[String]) -> String {
        page_of(path)
    }

    fn sections(&self, command: &clap::Command, path: &[String]) -> Roff {
        sections(command, path, self)
    }

    fn see_also(&self, command: &clap::Command, path: &[String]) -> Vec<String> {
        see_also(command, path)
    }
}

/// SIGNALS, EXIT STATUS, ENVIRONMENT and FILES of the page of `relaisd PATH...`.
fn sections(command: &clap::Command, path: &[String], facts: &Facts) -> Roff {
    let mut roff = Roff::new();
    let top = path.first().map(String::as_str);
    if matches!(top, None | Some("serve")) {
        entries(&mut roff, "SIGNALS", signals(facts));
    }
    let codes: Vec<(String, Vec<Inline>)> = exit_codes(command, path)
        .into_iter()
        .map(|code| (code.to_string(), meaning(code)))
        .collect();
    entries(&mut roff, "EXIT STATUS", codes);
    entries(&mut roff, "ENVIRONMENT", environment(command, path));
    entries(&mut roff, "FILES", files(path, facts));
    roff
}

/// The pages SEE ALSO names for `relaisd PATH...`: its parent and `relaisd(1)`, the
/// configuration's page where the command reads a configuration, and what it works with.
fn see_also(command: &clap::Command, path: &[String]) -> Vec<String> {
    let name = page_of(path);
    let mut pages = Vec::new();
    if let Some((_, parent)) = path.split_last() {
        pages.push(format!("{}(1)", page_of(parent)));
        if !parent.is_empty() {
            pages.push("relaisd(1)".to_owned());
        }
    }
    let reads_config = command.get_arguments().any(|a| a.get_id() == "config");
    if path.is_empty() || reads_config || name == "relaisd-check-config" {
        pages.push("relaisd.toml(5)".to_owned());
    }
    let related: &[&str] = match name.as_str() {
        "relaisd" => &["systemctl(1)", "journalctl(1)", "systemd-creds(1)"],
        "relaisd-serve" => &[
            "relaisd-check-config(1)",
            "relaisd-keys(1)",
            "systemd.socket(5)",
            "systemd-creds(1)",
            "journalctl(1)",
        ],
        "relaisd-admin-backup" => &["relaisd-restore(1)"],
        "relaisd-restore" => &["relaisd-admin-backup(1)"],
        "relaisd-migrate" => &["relaisd-storage-copy(1)"],
        "relaisd-storage-copy" => &["relaisd-migrate(1)"],
        keys if keys.starts_with("relaisd-keys") => &["systemd-creds(1)"],
        _ => &[],
    };
    for page in related {
        if !pages.iter().any(|p| p == page) {
            pages.push((*page).to_owned());
        }
    }
    pages
}

/// `relaisd-admin-user` for `["admin", "user"]`.
fn page_of(path: &[String]) -> String {
    std::iter::once("relaisd")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-")
}

fn signals(facts: &Facts) -> Vec<(String, Vec<Inline>)> {
    let stop = format!(
        "`relaisd serve` stops: it stops accepting connections, reports itself not ready \
         (`/readyz`) and stopping (to systemd), tells every connection to close and waits up \
         to {} seconds for them, removes the admin socket, closes the database and exits \
         with 0. Every message it acknowledged is stored; devices reconnect and carry on.",
        facts.drain_seconds
    );
    let reload = "`relaisd serve` reloads its TLS certificate and key from its key source, \
         without closing its listeners or any connection (connections already open keep the \
         pair they started with); `systemctl reload relaisd` sends it. With \
         `keys.source = \"file\"` it reads `tls.certificate` and `tls.private_key` again. \
         With `\"systemd-credentials\"` it reads `$CREDENTIALS_DIRECTORY` again, which systemd \
         fills only when the unit starts: a new key or certificate there takes a restart. \
         With `\"sealed\"` it may run no program once it serves, so it cannot unseal, and \
         says so. A reload that fails keeps the current pair, logs why, and sets the metric \
         `relais_key_provider_up` to 0.";
    vec![
        ("SIGTERM, SIGINT".to_owned(), inline_markdown(&stop)),
        ("SIGHUP".to_owned(), inline_markdown(reload)),
    ]
}

/// The codes the command can exit with: 0, 64 for a command line clap refuses, and those
/// its source returns (70 too where it runs on `block_on`, which returns it).
fn exit_codes(command: &clap::Command, path: &[String]) -> BTreeSet<u8> {
    let mut codes = BTreeSet::from([0, EX_USAGE]);
    let Some(top) = path.first() else {
        for sub in command.get_subcommands() {
            codes.extend(exit_codes(sub, &[sub.get_name().to_owned()]));
        }
        return codes;
    };
    let source = match top.as_str() {
        "check-config" => {
            // Run by `cli/mod.rs` itself, in its arm of the dispatch.
            let text = read("daemon/src/cli/mod.rs");
            let start = text
                .find("Command::CheckConfig")
                .expect("cli/mod.rs no longer dispatches Command::CheckConfig");
            let rest = &text[start + 1..];
            rest[..rest.find("Command::").unwrap_or(rest.len())].to_owned()
        }
        "serve" => read("daemon/src/cli/serve.rs"),
        "admin" => read("daemon/src/cli/admin.rs"),
        "keys" => read("daemon/src/cli/keys.rs"),
        "migrate" | "storage" => read("daemon/src/cli/storage.rs"),
        "restore" => read("daemon/src/cli/restore.rs"),
        other => panic!(
            "relaisd {other}: say in cli_reference/process.rs which file under daemon/src/cli/ \
             runs it, for its exit codes"
        ),
    };
    for (at, _) in source.match_indices("EX_") {
        let name: String = source[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        assert!(
            CODES.iter().any(|(known, _)| *known == name),
            "relaisd {top} returns {name}: say in cli_reference/process.rs what it means"
        );
    }
    for (name, code) in CODES {
        if contains_word(&source, name) {
            codes.insert(*code);
        }
    }
    if source.contains("block_on(") {
        codes.insert(EX_SOFTWARE);
    }
    codes
}

/// What an exit code tells the operator of relaisd.
fn meaning(code: u8) -> Vec<Inline> {
    let text = match code {
        0 => "Success.",
        FAILURE => {
            "The relay refused the request, or what was checked is not intact (`admin audit \
             verify`), or the answer could not be written out: read the message."
        }
        EX_USAGE => {
            "`EX_USAGE`: the command line is wrong (an unknown option, a missing or bad \
             argument). Run again as it is, it fails the same way."
        }
        EX_DATAERR => {
            "`EX_DATAERR`: the backup cannot be read or does not match its checksum file: use \
             another backup."
        }
        EX_UNAVAILABLE => {
            "`EX_UNAVAILABLE`: relaisd did not answer on its admin socket: start it, or check \
             that you may use the socket, then retry."
        }
        EX_SOFTWARE => {
            "`EX_SOFTWARE`: an internal failure (the runtime could not start, the process \
             could not protect itself or use its listeners) or, for `migrate` and \
             `storage copy`, a failure of the database: read the message; retrying rarely \
             helps before its cause is fixed."
        }
        EX_CONFIG => {
            "`EX_CONFIG`: the configuration or the local setup is wrong (a mistake in the \
             configuration file, reported as FILE:LINE; keys that cannot be read or unsealed; \
             a file or directory that cannot be created): fix it on this machine, then retry."
        }
        other => panic!("exit code {other}: say in cli_reference/process.rs what it means"),
    };
    inline_markdown(text)
}

/// The variables `relaisd PATH...` reads: those of `serve` and `migrate`, and those clap
/// reads for an option.
fn environment(command: &clap::Command, path: &[String]) -> Vec<(String, Vec<Inline>)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let top = path.first().map(String::as_str);
    if matches!(top, None | Some("serve")) {
        vars.extend(serve_environment());
    }
    if top == Some("migrate") {
        vars.push((
            "CREDENTIALS_DIRECTORY".to_owned(),
            "Under systemd, where a credential `storage-password` is the PostgreSQL password \
             when `storage.password_file` is unset."
                .to_owned(),
        ));
    }
    let mut commands = vec![(path.to_vec(), command)];
    if path.is_empty() {
        commands = descendants(Vec::new(), command);
    }
    for (path, command) in commands {
        for arg in command.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let text = format!(
                "Taken for `{} --{long}` when that is not given ({}).",
                page_of(&path).replace('-', " "),
                help.trim_end_matches('.').to_lowercase()
            );
            vars.push((var.to_string_lossy().into_owned(), text));
        }
    }
    vars.into_iter()
        .map(|(var, text)| (var, inline_markdown(&text)))
        .collect()
}

/// `command`, at `path`, and every command under it with theirs.
fn descendants(path: Vec<String>, command: &clap::Command) -> Vec<(Vec<String>, &clap::Command)> {
    let mut all = Vec::new();
    for sub in command.get_subcommands() {
        let mut path = path.clone();
        path.push(sub.get_name().to_owned());
        all.extend(descendants(path, sub));
    }
    all.insert(0, (path, command));
    all
}

fn serve_environment() -> Vec<(String, String)> {
    [
        (
            "RELAIS_LOG",
            "What `serve` logs, as a filter of Rust's `tracing` (`info` when unset; for \
             example `debug`, or `info,relaisd::connection=debug`).",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Set by systemd from the unit's `LoadCredential=` and `LoadCredentialEncrypted=` \
             lines. With `keys.source = \"systemd-credentials\"` the keys are read there, and \
             `serve` refuses to start without it; a credential `storage-password` there is the \
             PostgreSQL password when `storage.password_file` is unset.",
        ),
        (
            "LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID",
            "Set by systemd for socket activation: `serve` takes the listening sockets named \
             `client` and `metrics` (`relaisd.socket`, `relaisd-metrics.socket`) instead of \
             binding the configured addresses, so that they stay open across a restart; a \
             single unnamed socket is the client listener.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd for `Type=notify` and `WatchdogSec=`: `serve` reports when it is \
             ready and when it stops, and pings the watchdog at half its period.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd when standard error is the journal: `serve` then writes structured \
             journal entries, whose fields (such as the audit records' `MESSAGE_ID`) \
             journalctl can select on, instead of lines of text.",
        ),
    ]
    .into_iter()
    .map(|(var, text)| (var.to_owned(), text.to_owned()))
    .collect()
}

fn files(path: &[String], facts: &Facts) -> Vec<(String, Vec<Inline>)> {
    let config = (
        facts.config_file.clone(),
        "The configuration file `relaisd.service` passes to `relaisd serve --config`; see \
         relaisd.toml(5)."
            .to_owned(),
    );
    let socket = (
        facts.admin_socket.clone(),
        "The admin socket, where `data_dir` and `admin.socket` are left at their defaults; \
         the default of `relaisd admin --socket`."
            .to_owned(),
    );
    let credentials = (
        format!("{}/", facts.credentials),
        format!(
            "What `relaisd keys provision` writes: the keys sealed to the TPM and the TLS \
             certificate (`{}`). The unit loads them as credentials at each start \
             (`LoadCredentialEncrypted=`, `LoadCredential=`), and the `sealed` key source \
             reads them here.",
            facts
                .credential_files
                .iter()
                .map(|f| Path::new(f).file_name().expect("a file").to_string_lossy())
                .collect::<Vec<_>>()
                .join("`, `")
        ),
    );
    let entries = match path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => vec![
            config,
            (
                facts.data_dir.clone(),
                "The default `data_dir`: the database and, by default, the admin socket."
                    .to_owned(),
            ),
            (
                facts.database.clone(),
                "The SQLite database, where `data_dir` and `storage.path` are left at their \
                 defaults."
                    .to_owned(),
            ),
            socket,
            credentials,
        ],
        ["check-config"] | ["migrate"] => vec![config],
        ["admin", ..] => vec![socket],
        ["keys"]
        | [
            "keys",
            "provision" | "rotate" | "recover" | "check" | "install-certificate",
        ] => {
            vec![credentials]
        }
        _ => Vec::new(),
    };
    entries
        .into_iter()
        .map(|(file, text)| (file, inline_markdown(&text)))
        .collect()
}

/// `DRAIN_TIMEOUT` of `daemon/src/server.rs`, in seconds.
fn drain_seconds() -> u64 {
    let source = read("daemon/src/server.rs");
    let prefix = "const DRAIN_TIMEOUT: Duration = Duration::from_secs(";
    source
        .lines()
        .find_map(|line| line.strip_prefix(prefix)?.strip_suffix(");")?.parse().ok())
        .unwrap_or_else(|| panic!("daemon/src/server.rs has no `{prefix}N);`"))
}
