//! `relaisd admin`: builds a request for the admin socket and prints the answer, as a
//! table for people or, with `--json`, as JSON for scripts. A new code can also be given as
//! an enrollment link (`--link`): a `relais://enroll?…` link, drawn as a QR code on the
//! terminal and, with `--qr FILE`, in a PNG file (`docs/reference/enroll-link.md`).

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use relais_link::EnrollLink;
use relais_link::qr::{PngFile, Qr};
use relais_protocol::exit::{EX_CONFIG, EX_UNAVAILABLE, EX_USAGE, FAILURE};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::parse_time_ms;
use super::progress::{Progress, Unit};
use crate::admin::{AdminRequest, AdminResponse};
use crate::format_time_ms;

/// Prints a line of the answer. A reader that went away (`relaisd admin … | head`) ends
/// the command quietly, as it does any Unix filter, instead of a panic on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: cannot write the answer: {e}");
            std::process::exit(i32::from(relais_protocol::exit::FAILURE));
        }
    };
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The daemon's admin socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "RELAIS_ADMIN_SOCKET",
        default_value = "/var/lib/relais/admin.sock"
    )]
    socket: PathBuf,
    /// Print the daemon's answer as JSON (JSON lines for `audit export`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage users: add, list, show, suspend, resume, expire, delete.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage enrollment codes: issue, list, cancel.
    #[command(subcommand)]
    Code(CodeCommand),
    /// Manage devices: list, show, revoke.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show version, uptime, storage, connected devices, queue depth and key provider.
    Status,
    /// Show the retention period, or purge expired messages now.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Export or verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Take an online, consistent backup of the database (with a SHA-256 checksum file).
    Backup {
        /// The backup file to create (absolute or relative path; never overwritten).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Print no progress (errors and the result still go out).
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print its one-time enrollment code, alone on standard output.
    ///
    /// With --link, print instead an enrollment link that holds the relay's address, the
    /// user, the code and the pin of the relay's certificate, and draw it as a QR code: the
    /// user's device enrolls from it with nothing else to type or copy.
    Add {
        /// `name` or `name@domain`.
        user: String,
        /// When the account expires (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
        #[arg(long, value_name = "DATE", value_parser = parse_time_ms)]
        expires: Option<i64>,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// List users (deleted ones only with --state deleted or all).
    List {
        /// Only users whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// Only users in this state.
        #[arg(long, value_parser = ["active", "suspended", "expiring", "expired", "deleted", "all"])]
        state: Option<String>,
    },
    /// Show a user with its state and devices.
    Show {
        /// `name` or `name@domain`.
        user: String,
    },
    /// Suspend an account: its devices are disconnected and cannot connect until resumed.
    Suspend {
        /// `name` or `name@domain`.
        user: String,
    },
    /// Resume a suspended account.
    Resume {
        /// `name` or `name@domain`.
        user: String,
    },
    /// Set or clear when an account expires.
    Expire {
        /// `name` or `name@domain`.
        user: String,
        /// The expiry (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC), or `never`.
        #[arg(long, value_name = "DATE|never")]
        at: String,
    },
    /// Delete a user: revoke every device and remove them from their groups. The name is
    /// never given to anyone else.
    Delete {
        /// `name` or `name@domain`.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum CodeCommand {
    /// Issue an enrollment code for another device of an existing user.
    ///
    /// With --link, print it as an enrollment link and a QR code, as `user add --link` does.
    Issue {
        /// `name` or `name@domain`.
        user: String,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// List pending enrollment codes (their ids, never the codes).
    List {
        /// Only this user's codes.
        user: Option<String>,
    },
    /// Cancel a pending enrollment code.
    Cancel {
        /// `name` or `name@domain`.
        user: String,
        /// The code's id from `code list`.
        id: i64,
    },
}

/// How a new code is given: alone, or as an enrollment link.
#[derive(Debug, Args)]
struct LinkArgs {
    /// Print an enrollment link (relais://enroll?…) with the relay's address
    /// (server.public_address), the user, the code and the pin of the relay's certificate
    /// chain, then the same link as a QR code; the user opens the link or scans the code
    /// with the app, or runs `relais enroll --link`. The link holds the code: give it as you
    /// would the code.
    #[arg(long)]
    link: bool,
    /// Also write the QR code to this PNG file, created readable by you alone (never over
    /// an existing file), to send or print. The file is created before the code is issued,
    /// so a path that cannot be written fails with no code issued.
    #[arg(long, value_name = "FILE", requires = "link")]
    qr: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List a user's devices.
    List {
        /// `name` or `name@domain`.
        user: String,
    },
    /// Show a device: enrolled, last seen, KeyPackages left, queued messages, groups.
    Show {
        /// `name` or `name@domain`.
        user: String,
        /// The device id shown by `device list`.
        device: String,
    },
    /// Revoke a device: close its connections, stop all delivery, propose its removal.
    Revoke {
        /// `name` or `name@domain`.
        user: String,
        /// The device id shown by `device list`.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Show the retention period and the queue's oldest message.
    Show,
    /// Delete messages older than the retention period now.
    Purge,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Write audit entries as JSON lines (for a SIEM).
    Export {
        /// Only entries at or after this time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
        #[arg(long, value_name = "DATE", value_parser = parse_time_ms, default_value = "0")]
        since: i64,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check the audit log's chain and its head, and report the first broken entry or the
    /// entries missing at its end; prints the head to keep off the box.
    Verify {
        /// A head printed by an earlier verify (`ENTRIES:MAC`): the chain must still reach
        /// it, so that an older copy of the log put back in place shows too.
        #[arg(long, value_name = "HEAD")]
        expect: Option<String>,
    },
}

pub fn run(args: AdminArgs) -> ExitCode {
    super::block_on(run_async(args))
}

async fn run_async(args: AdminArgs) -> ExitCode {
    if let AdminCommand::Audit(AuditCommand::Export { since, out }) = &args.command {
        return export(&args, *since, out.as_deref()).await;
    }
    let quiet = matches!(args.command, AdminCommand::Backup { quiet: true, .. });
    let link = link_wanted(&args.command);
    let request = match build(args.command) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(qr) = link {
        return issue_link(&args.socket, args.json, &request, qr.as_deref()).await;
    }
    let answer = match &request {
        AdminRequest::Backup { path } => {
            growing(call(&args.socket, &request), Path::new(path), quiet).await
        }
        _ => call(&args.socket, &request).await,
    };
    let result = match answer {
        Ok(result) => result,
        Err(code) => return code,
    };
    if args.json {
        say!("{result}");
    } else {
        print_human(&request, &result);
    }
    if matches!(request, AdminRequest::AuditVerify { .. }) && result["intact"] == Value::Bool(false)
    {
        return ExitCode::from(FAILURE);
    }
    ExitCode::SUCCESS
}

fn build(command: AdminCommand) -> Result<AdminRequest, String> {
    Ok(match command {
        AdminCommand::User(UserCommand::Add {
            user,
            expires,
            link,
        }) => AdminRequest::UserAdd {
            user,
            expires_at_ms: expires,
            link: link.link,
        },
        AdminCommand::User(UserCommand::List { filter, state }) => {
            AdminRequest::UserList { filter, state }
        }
        AdminCommand::User(UserCommand::Show { user }) => AdminRequest::UserShow { user },
        AdminCommand::User(UserCommand::Suspend { user }) => AdminRequest::UserSuspend { user },
        AdminCommand::User(UserCommand::Resume { user }) => AdminRequest::UserResume { user },
        AdminCommand::User(UserCommand::Delete { user }) => AdminRequest::UserDelete { user },
        AdminCommand::User(UserCommand::Expire { user, at }) => {
            let at_ms = if at == "never" {
                None
            } else {
                Some(parse_time_ms(&at)?)
            };
            AdminRequest::UserExpire { user, at_ms }
        }
        AdminCommand::Code(CodeCommand::Issue { user, link }) => AdminRequest::CodeIssue {
            user,
            link: link.link,
        },
        AdminCommand::Code(CodeCommand::List { user }) => AdminRequest::CodeList { user },
        AdminCommand::Code(CodeCommand::Cancel { user, id }) => {
            AdminRequest::CodeCancel { user, id }
        }
        AdminCommand::Device(DeviceCommand::List { user }) => AdminRequest::DeviceList { user },
        AdminCommand::Device(DeviceCommand::Show { user, device }) => {
            AdminRequest::DeviceShow { user, device }
        }
        AdminCommand::Device(DeviceCommand::Revoke { user, device }) => {
            AdminRequest::DeviceRevoke { user, device }
        }
        AdminCommand::Status => AdminRequest::Status,
        AdminCommand::Retention(RetentionCommand::Show) => AdminRequest::RetentionShow,
        AdminCommand::Retention(RetentionCommand::Purge) => AdminRequest::RetentionPurge,
        AdminCommand::Audit(AuditCommand::Verify { expect }) => {
            AdminRequest::AuditVerify { expect }
        }
        AdminCommand::Audit(AuditCommand::Export { .. }) => {
            return Err("export is handled separately".into());
        }
        AdminCommand::Backup { to, .. } => {
            let absolute =
                std::path::absolute(&to).map_err(|e| format!("{}: {e}", to.display()))?;
            AdminRequest::Backup {
                path: absolute.to_string_lossy().into_owned(),
            }
        }
    })
}

/// Waits for `work` while showing how large the file it writes at `path` has grown: the
/// relay writes a backup in one statement that reports no progress of its own.
async fn growing<T>(work: impl std::future::Future<Output = T>, path: &Path, quiet: bool) -> T {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut progress = Progress::start("backup", None, Unit::Bytes, quiet);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                progress.finish(size());
                return out;
            }
            _ = tick.tick() => progress.set(size()),
        }
    }
}

/// Sends a request; on failure prints the error and returns the exit code.
async fn call(socket: &Path, request: &AdminRequest) -> Result<Value, ExitCode> {
    match send(socket, request).await {
        Ok(response) if response.ok => Ok(response.result),
        Ok(response) => {
            eprintln!(
                "error: {}",
                response.error.unwrap_or_else(|| "request refused".into())
            );
            Err(ExitCode::from(FAILURE))
        }
        Err(e) => {
            eprintln!(
                "error: cannot reach relaisd at {}: {e}; is it running, and may you use its socket?",
                socket.display()
            );
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// The admin socket's client: sends one request line to a running daemon and reads its one
/// response line.
async fn send(socket: &Path, request: &AdminRequest) -> std::io::Result<AdminResponse> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Pages through the audit log, writing one JSON object per line.
async fn export(args: &AdminArgs, since_ms: i64, out: Option<&Path>) -> ExitCode {
    let mut sink: Box<dyn Write> = match out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(std::io::BufWriter::new(file)),
            Err(e) => {
                eprintln!("error: cannot create {}: {e}", path.display());
                return ExitCode::from(EX_CONFIG);
            }
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let mut after_id = 0;
    let mut count = 0u64;
    loop {
        let request = AdminRequest::AuditExport {
            since_ms,
            after_id,
            limit: 1000,
        };
        let page = match call(&args.socket, &request).await {
            Ok(Value::Array(page)) => page,
            Ok(_) => Vec::new(),
            Err(code) => return code,
        };
        if page.is_empty() {
            break;
        }
        for entry in &page {
            after_id = entry["id"].as_i64().unwrap_or(after_id);
            if writeln!(sink, "{entry}").is_err() {
                return ExitCode::from(FAILURE);
            }
            count += 1;
        }
    }
    if sink.flush().is_err() {
        return ExitCode::from(FAILURE);
    }
    eprintln!("exported {count} audit entries");
    ExitCode::SUCCESS
}

/// Prints an answer for people: a table for lists, `key: value` lines for one thing.
fn print_human(request: &AdminRequest, result: &Value) {
    let rows = || result.as_array().map(Vec::as_slice).unwrap_or(&[]);
    match request {
        AdminRequest::UserAdd { .. } | AdminRequest::CodeIssue { .. } => print_code(result),
        AdminRequest::UserList { .. } => print_users(rows()),
        AdminRequest::DeviceList { .. } => print_devices(rows()),
        AdminRequest::UserShow { .. } => print_user(result),
        AdminRequest::CodeList { .. } => print_codes(rows()),
        AdminRequest::AuditVerify { .. } => print_audit_verify(result),
        _ => print_fields(result),
    }
}

/// A new enrollment code: the code alone on stdout, so that
/// `CODE=$(relaisd admin user add alice)` works, and what it is for on stderr.
fn print_code(result: &Value) {
    say!("{}", text(result, "code"));
    eprintln!(
        "enrollment code for {} (single use, expires {}); give it to the user over a trusted channel",
        text(result, "user"),
        time(result, "expires_at_ms")
    );
}

/// Whether the command asks for an enrollment link, and where to write its QR code.
fn link_wanted(command: &AdminCommand) -> Option<Option<PathBuf>> {
    match command {
        AdminCommand::User(UserCommand::Add { link, .. })
        | AdminCommand::Code(CodeCommand::Issue { link, .. })
            if link.link =>
        {
            Some(link.qr.clone())
        }
        _ => None,
    }
}

/// `user add --link` and `code issue --link`: claims the PNG file and asks the relay for
/// its address and pin first, so that nothing is issued when a link cannot be made, then
/// issues the code and prints the link, its QR code and (with `qr`) the PNG. The link
/// holds the code, so it goes to standard output and the file only, as the code alone does;
/// once the code is issued the link is printed whatever happens to the file, and a failure
/// to write it is a warning that names the file.
async fn issue_link(
    socket: &Path,
    json: bool,
    request: &AdminRequest,
    qr: Option<&Path>,
) -> ExitCode {
    // The file is claimed before anything is issued: it is never written over.
    let png = match qr.map(PngFile::create).transpose() {
        Ok(png) => png,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let issued = match link_parts(socket).await {
        Ok(relay) => call(socket, request).await.map(|result| (relay, result)),
        Err(code) => Err(code),
    };
    let (relay, result) = match issued {
        Ok(issued) => issued,
        Err(code) => {
            if let Some(file) = png {
                file.discard();
            }
            return code;
        }
    };
    let link = match EnrollLink::new(
        &relay.server,
        &text(&result, "user"),
        &text(&result, "code"),
        &relay.pin,
    ) {
        Ok(link) => link,
        Err(e) => {
            if let Some(file) = png {
                file.discard();
            }
            eprintln!(
                "error: the relay's answer does not make an enrollment link ({e}); the code was \
                 issued: cancel it (`relaisd admin code list` and `code cancel`) and report \
                 this"
            );
            return ExitCode::from(FAILURE);
        }
    };
    print_link(json, &result, &link, png, &relay);
    ExitCode::SUCCESS
}

/// What a link needs of the relay: its public address and the pin of its chain.
struct LinkParts {
    server: String,
    pin: String,
    pin_is_leaf: bool,
}

/// The relay's public address and pin, from `status`; without them the error says what to
/// set, and nothing is issued.
async fn link_parts(socket: &Path) -> Result<LinkParts, ExitCode> {
    let status = call(socket, &AdminRequest::Status).await?;
    let Some(server) = status["public_address"].as_str() else {
        eprintln!(
            "error: an enrollment link carries the relay's address as clients reach it, and \
             none is configured; set it in relaisd.toml ([server] public_address = \
             \"HOST:PORT\", for example \"relais.example.gouv.fr:443\") and restart relaisd"
        );
        return Err(ExitCode::from(EX_USAGE));
    };
    let Some(pin) = status["ca_pin"].as_str() else {
        eprintln!(
            "error: relaisd reports no pin for the certificate chain it serves, which the link \
             must carry; check that its certificate file holds the relay's certificate, then \
             restart relaisd"
        );
        return Err(ExitCode::from(FAILURE));
    };
    Ok(LinkParts {
        server: server.to_owned(),
        pin: pin.to_owned(),
        pin_is_leaf: status["ca_pin_is_leaf"].as_bool() == Some(true),
    })
}

/// The link on standard output, then its QR code (or, with `--json`, the answer with the
/// link), the QR code in `png` if given, and what it is for on standard error.
fn print_link(
    json: bool,
    result: &Value,
    link: &EnrollLink,
    png: Option<PngFile>,
    relay: &LinkParts,
) {
    let uri = link.to_uri();
    let qr = Qr::of(&uri);
    if json {
        let mut answer = result.clone();
        answer["link"] = Value::String(uri.to_string());
        say!("{answer}");
    } else {
        say!("{}", uri.as_str());
        if let Ok(qr) = &qr {
            say!("{}", qr.terminal(std::io::stdout().is_terminal()));
        }
    }
    match (qr, png) {
        (Ok(qr), Some(file)) => {
            if let Err(e) = file.write(&qr) {
                eprintln!("warning: {e}; the link on standard output is valid: give it as text");
            }
        }
        (Ok(_), None) => {}
        (Err(e), png) => {
            if let Some(file) = png {
                file.discard();
            }
            eprintln!("warning: {e}");
        }
    }
    eprintln!(
        "enrollment link for {} (single use, expires {}): the user opens it in the Relais app, \
         scans the QR code, or runs `relais enroll --link`; it holds the code, so give it over \
         a trusted channel",
        text(result, "user"),
        time(result, "expires_at_ms")
    );
    if relay.pin_is_leaf {
        eprintln!(
            "warning: relaisd serves its certificate without its CA, so the link pins that \
             certificate itself: devices enrolled from it will refuse the relay once the \
             certificate is renewed, until their ca.pem is replaced; serve the chain up to \
             your CA (a renewed certificate from the same CA keeps the pin)"
        );
    }
}

fn print_users(users: &[Value]) {
    say!(
        "{:<40} {:<10} {:>7} {:>7}  {:<20}  EXPIRES",
        "USER",
        "STATUS",
        "DEVICES",
        "CODES",
        "CREATED"
    );
    for u in users {
        say!(
            "{:<40} {:<10} {:>7} {:>7}  {:<20}  {}",
            text(u, "user"),
            text(u, "status"),
            text(u, "devices"),
            text(u, "pending_codes"),
            time(u, "created_at_ms"),
            time(u, "expires_at_ms")
        );
    }
}

/// One user: its state, its dates and a table of its devices.
fn print_user(result: &Value) {
    for key in ["user", "status"] {
        say!("{key}: {}", text(result, key));
    }
    for key in [
        "created_at_ms",
        "suspended_at_ms",
        "expires_at_ms",
        "deleted_at_ms",
    ] {
        say!("{}: {}", key.trim_end_matches("_ms"), time(result, key));
    }
    say!("pending_codes: {}", text(result, "pending_codes"));
    print_devices(
        result["devices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    );
}

fn print_codes(codes: &[Value]) {
    say!("{:>6}  {:<40} {:<20}  EXPIRES", "ID", "USER", "CREATED");
    for c in codes {
        say!(
            "{:>6}  {:<40} {:<20}  {}",
            text(c, "id"),
            text(c, "user"),
            time(c, "created_at_ms"),
            time(c, "expires_at_ms")
        );
    }
}

fn print_devices(devices: &[Value]) {
    say!(
        "{:<18} {:<22} {:<22} REVOKED",
        "DEVICE",
        "ENROLLED",
        "LAST SEEN"
    );
    for d in devices {
        say!(
            "{:<18} {:<22} {:<22} {}",
            d["device"].as_str().unwrap_or("-"),
            time(d, "enrolled_at_ms"),
            time(d, "last_seen_at_ms"),
            time(d, "revoked_at_ms")
        );
    }
}

/// What `audit verify` found, in words: intact (with the head to keep), or which way the
/// log was altered.
fn print_audit_verify(result: &Value) {
    match result["problem"].as_str() {
        None => {
            say!(
                "audit log intact: {} entries; head {} (keep it off this machine, and check \
                 later with --expect)",
                text(result, "entries"),
                text(result, "head")
            );
        }
        Some("truncated") => say!(
            "audit log TRUNCATED: its head records {} entries, {} remain: the last entries \
             were deleted",
            text(result, "recorded_entries"),
            text(result, "entries")
        ),
        Some("head") => say!(
            "audit log head TAMPERED: the record of where the log ends is missing or was \
             rewritten; treat the log as altered"
        ),
        Some("behind") => say!(
            "audit log BEHIND: the chain no longer reaches the head {} exported earlier: \
             entries were deleted and an older copy put back",
            text(result, "expected_head")
        ),
        Some(_) => say!(
            "audit log BROKEN at entry {}: it or an earlier entry was altered, inserted or \
             removed",
            text(result, "first_broken_id")
        ),
    }
}

/// Any other answer, one `key: value` line per field, times (`*_at_ms`) as dates.
fn print_fields(result: &Value) {
    let Some(map) = result.as_object() else {
        return;
    };
    for (key, value) in map {
        if let Some(base) = key.strip_suffix("_at_ms") {
            say!("{base}_at: {}", time(result, key));
        } else {
            say!(
                "{key}: {}",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            );
        }
    }
}

/// A field of an answer as text: strings bare, nothing as `-`.
fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A time field (milliseconds since the epoch) of an answer as a UTC date, nothing as `-`.
fn time(v: &Value, key: &str) -> String {
    v[key]
        .as_i64()
        .map_or_else(|| "-".to_owned(), format_time_ms)
}
