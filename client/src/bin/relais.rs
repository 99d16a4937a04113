//! The `relais` command line: a thin layer over the client library. Exit codes
//! (`relais_protocol::exit`): 0 success, 1 the relay or the network failed, 64 bad command
//! line, 70 internal failure, 78 local setup problem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::io::Write as _;

use relais_client::{
    Client, ClientError, ConnectionState, ConversationChange, ConversationSummary, DeliveryState,
    Event, HomeLock, OwnDevice, ReceivedMessage, SafetyNumber, Session, format_time_ms,
    grouped_safety_number,
};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE, FAILURE};

#[path = "relais/passphrase.rs"]
mod passphrase;

/// relais, the Relais client: end-to-end-encrypted messages with MLS; the relay only ever
/// sees ciphertext.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about, long_about = None)]
struct Cli {
    /// Where this device keeps its key, MLS state and history [default: $HOME/.relais].
    #[arg(long, value_name = "DIR", env = "RELAIS_HOME", global = true)]
    home: Option<PathBuf>,
    /// A file whose first line is the passphrase of an encrypted home (for scripts; on a
    /// terminal it is asked instead); with `enroll` and `passphrase set`, the one to protect
    /// the home with. Never give a passphrase as an argument.
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAIS_PASSPHRASE_FILE",
        global = true
    )]
    passphrase_file: Option<PathBuf>,
    /// A key file (at least 32 random bytes, from the platform's secret store or
    /// systemd-creds) that protects the home instead of a passphrase.
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAIS_KEY_FILE",
        global = true,
        conflicts_with = "passphrase_file"
    )]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this device with a one-time code from an administrator.
    Enroll {
        /// The relay, as https://HOST:PORT.
        #[arg(long, value_name = "URL")]
        server: String,
        /// The CA certificate (PEM) that signed the relay's certificate.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// Your user name, `name` or `name@domain`.
        #[arg(long)]
        user: String,
        /// The enrollment code (dashes and case do not matter).
        #[arg(long)]
        code: String,
    },
    /// Send a message to a user (a direct conversation, created on first use).
    Send {
        /// The recipient, `name` or `name@domain`.
        user: String,
        /// The message.
        text: String,
    },
    /// Create and use named groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Show the safety number you share with a contact, or confirm it to mark them verified.
    ///
    /// Compare the number with the contact in person or on a call you trust. It changes
    /// whenever either of you gains or loses a device: a device an operator enrolled in
    /// someone's name shows that way.
    Verify {
        /// The contact, `name` or `name@domain`.
        user: String,
        /// The number the contact read to you (spaces ignored): marks them verified if it is
        /// the one shown.
        #[arg(long, value_name = "NUMBER")]
        confirm: Option<String>,
    },
    /// List this device's conversations, newest activity first, with unread counts.
    Conversations {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a conversation's last messages and membership changes, oldest first.
    History {
        /// A user (direct conversation) or a group's name.
        conversation: String,
        /// How many entries at most.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Search this device's history for a text (nothing leaves the device).
    Search {
        text: String,
        /// How many entries at most, newest first.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List your devices (a new one is added to your conversations by the others when they
    /// connect), or revoke one you lost.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Change a setting of this device.
    #[command(subcommand)]
    Set(SetCommand),
    /// Encrypt this home's keys and history under a passphrase (or a key file), or change it.
    #[command(subcommand)]
    Passphrase(passphrase::PassphraseCommand),
    /// Stay connected and print messages and changes as they arrive, until interrupted.
    ///
    /// Lines as `recv` prints them (membership changes with `*` as sender); the connection's
    /// state, warnings and failed deliveries go to standard error. With `--json`, every event
    /// is one JSON object per line on standard output (docs/reference/events.md). Ctrl-C or
    /// SIGTERM acknowledges what was received and exits 0. While it runs, other commands on
    /// this home wait for it, and fail after a moment: the device is in use.
    Follow {
        /// One JSON object per line for every event, connection changes included.
        #[arg(long)]
        json: bool,
    },
    /// Receive messages: one line each with conversation, sender, time and text;
    /// membership changes show with `*` as their sender.
    Recv {
        /// Seconds to wait for a first message when none is waiting.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
        /// One JSON object per line instead of tab-separated text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Revoke another of your devices: the relay cuts it off at once and its
    /// conversations drop it.
    Revoke {
        /// The device id, as `relais devices` lists it.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum SetCommand {
    /// Refuse to send into a conversation with a verified contact whose devices changed,
    /// until you verify them again (`on`), or only warn (`off`, the default).
    RequireVerified {
        #[arg(value_parser = ["on", "off"])]
        value: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group with the given members (and your other devices).
    Create {
        /// The group's name, as members will see it.
        name: String,
        /// Comma-separated users to add.
        #[arg(long, value_delimiter = ',', value_name = "USERS")]
        members: Vec<String>,
    },
    /// Send a message to a group.
    Send {
        /// The group's name.
        name: String,
        /// The message.
        text: String,
    },
    /// List a group's members: each device, with its user, the user's role (admin or
    /// member) and the device's key; admins first.
    Members {
        /// The group's name (or a user, for a direct conversation).
        name: String,
    },
    /// Add users (all their devices) to a group you are in; any member may.
    Add {
        /// The group's name.
        name: String,
        /// Comma-separated users to add.
        #[arg(long, value_delimiter = ',', value_name = "USERS", required = true)]
        members: Vec<String>,
    },
    /// Remove a user (all their devices) from a group; only its admins may.
    Remove {
        /// The group's name.
        name: String,
        /// The user to remove, `name` or `name@domain`.
        user: String,
    },
    /// Leave a group, with all your devices: the other members take you out of it even if
    /// this device never connects again. When you are its last admin, the member who has
    /// been in it longest becomes admin.
    Leave {
        /// The group's name.
        name: String,
    },
    /// Rename a group for every member; only its admins may.
    Rename {
        /// The group's name.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Make a member an admin of a group; only its admins may.
    Promote {
        /// The group's name.
        name: String,
        /// The member to make an admin, `name` or `name@domain`.
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EX_USAGE } else { 0 });
        }
    };
    let home = match cli
        .home
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".relais")))
    {
        Some(home) => home,
        None => {
            eprintln!("error: no --home given and $HOME is not set; pass --home DIR");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let unlock = passphrase::Unlock {
        passphrase_file: cli.passphrase_file,
        key_file: cli.key_file,
    };
    if let Command::Follow { json } = cli.command {
        return runtime.block_on(follow(home, json, unlock));
    }
    match runtime.block_on(run(cli.command, home, unlock)) {
        Ok(output) => {
            // A closed standard output is reported, not a panic as `println!` would.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write to standard output: {e}");
                    ExitCode::from(FAILURE)
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The sysexits code for an error: 64 for a request that cannot work as given, 78 for a
/// missing or broken local setup, 1 for what the relay or the network did.
fn exit_code(e: &ClientError) -> u8 {
    if e.is_usage() {
        EX_USAGE
    } else if e.is_local_setup() {
        EX_CONFIG
    } else {
        FAILURE
    }
}

/// Runs one command and returns what it prints on standard output.
async fn run(
    command: Command,
    home: PathBuf,
    unlock: passphrase::Unlock,
) -> Result<String, ClientError> {
    if let Command::Enroll {
        server,
        ca,
        user,
        code,
    } = command
    {
        let secret = unlock.given()?;
        let mut client =
            Client::enroll_with(&home, &server, &ca, &user, &code, secret.as_ref()).await?;
        let output = format!(
            "enrolled {} as device {}\n",
            client.user(),
            client.device_id()
        );
        print_warnings(&mut client);
        client.close().await;
        return Ok(output);
    }
    // One process per home: the MLS state lives in memory while a command runs.
    let _lock = HomeLock::acquire(&home, HOME_LOCK_WAIT).await?;
    if let Command::Passphrase(command) = command {
        return passphrase::run(command, &home, &unlock).await;
    }
    let mut client = passphrase::open(&home, &unlock).await?;
    client.connect().await?;
    // Shown before the command runs, so that a long `recv --wait` does not hold them back.
    print_warnings(&mut client);
    let result = dispatch(&mut client, command).await;
    print_warnings(&mut client);
    client.close().await;
    result
}

/// How long a command waits for another process to release the home: long enough for one
/// command to finish; a `relais follow` holds it until stopped, and the error says so.
const HOME_LOCK_WAIT: Duration = Duration::from_secs(2);

/// `relais follow`: prints a session's events until SIGINT or SIGTERM, then shuts it down
/// cleanly (exit 0). A session that ends by itself (a revoked device) exits as its error
/// says; a second signal during the shutdown exits at once.
async fn follow(home: PathBuf, json: bool, unlock: passphrase::Unlock) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let signals =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    let (mut interrupt, mut terminate) = match signals {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot handle signals: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let opened = async {
        let lock = HomeLock::acquire(&home, HOME_LOCK_WAIT).await?;
        let client = passphrase::open(&home, &unlock).await?;
        Ok::<_, ClientError>(Session::start(client)?.holding(lock))
    };
    let mut session = match opened.await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    let mut output = Ok(());
    loop {
        let event = tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            event = session.next_event() => event,
        };
        let Some(event) = event else { break };
        output = show_event(&event, json);
        if output.is_err() {
            break;
        }
    }
    let ended = tokio::select! {
        ended = session.shutdown() => ended,
        _ = interrupt.recv() => return ExitCode::from(FAILURE),
        _ = terminate.recv() => return ExitCode::from(FAILURE),
    };
    match (output, ended) {
        (Err(e), _) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(FAILURE)
        }
        (Ok(()), Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
    }
}

/// Prints one event as `follow` shows it, flushed at once.
fn show_event(event: &Event, json: bool) -> std::io::Result<()> {
    let line = if json {
        let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        line.push('\n');
        line
    } else {
        match event {
            Event::Message {
                conversation,
                sender,
                sent_at_ms,
                text,
                ..
            } => render(
                &[ReceivedMessage {
                    conversation: conversation.clone(),
                    sender: sender.clone(),
                    sent_at_ms: *sent_at_ms,
                    text: text.clone(),
                    event: false,
                }],
                false,
            ),
            Event::Notice {
                conversation,
                at_ms,
                text,
                ..
            } => render(
                &[ReceivedMessage {
                    conversation: conversation.clone(),
                    sender: String::new(),
                    sent_at_ms: *at_ms,
                    text: text.clone(),
                    event: true,
                }],
                false,
            ),
            other => {
                if let Some(note) = describe_event(other) {
                    eprintln!("{note}");
                }
                return Ok(());
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.flush()
}

/// What `follow` says on standard error about an event other than a message or a notice;
/// `None` for those whose notice already says it (membership) or that need no word.
fn describe_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Connection {
            state,
            reason,
            retry_in_ms,
            ..
        } => describe_connection(*state, reason.as_deref(), *retry_in_ms)?,
        Event::Warning { text } => format!("warning: {text}"),
        Event::Lagged { missed } => {
            format!("warning: {missed} events were not shown; `relais history` has the messages")
        }
        Event::Delivery {
            state: DeliveryState::Failed,
            conversation,
            reason,
            ..
        } => format!(
            "warning: a message to {conversation} was not delivered: {}",
            reason.as_deref().unwrap_or("refused")
        ),
        Event::Delivery {
            state: DeliveryState::Pending,
            conversation,
            ..
        } => format!(
            "relais: a message to {conversation} awaits the relay's answer; it is sent again \
             once reconnected"
        ),
        Event::Conversation {
            conversation,
            change,
            previous_name,
            ..
        } => match change {
            ConversationChange::Created => format!("relais: new conversation {conversation}"),
            ConversationChange::Renamed => format!(
                "relais: {} is now called {conversation}",
                previous_name.as_deref().unwrap_or("a conversation")
            ),
            ConversationChange::Left => format!("relais: you are no longer in {conversation}"),
        },
        Event::Verification {
            contact,
            verified: true,
        } => format!("relais: {contact} is verified"),
        Event::Verification {
            contact,
            verified: false,
        } => format!(
            "warning: {contact} is no longer verified: compare safety numbers again \
             (`relais verify {contact}`)"
        ),
        Event::Membership { .. }
        | Event::Delivery {
            state: DeliveryState::Sent,
            ..
        }
        | Event::Message { .. }
        | Event::Notice { .. } => return None,
    })
}

/// What `follow` says about its connection; nothing at the end, whose error, if any, is
/// printed once the session is shut down.
fn describe_connection(
    state: ConnectionState,
    reason: Option<&str>,
    retry_in_ms: Option<u64>,
) -> Option<String> {
    Some(match state {
        ConnectionState::Connected => "relais: connected".into(),
        ConnectionState::Disconnected => format!(
            "relais: disconnected: {}",
            reason.unwrap_or("no reason given")
        ),
        ConnectionState::Reconnecting => {
            let seconds = retry_in_ms.unwrap_or(0) as f64 / 1000.0;
            let why = reason.map_or_else(String::new, |r| format!(" ({r})"));
            format!("relais: reconnecting in {seconds:.1} s{why}")
        }
        ConnectionState::Ended => return None,
    })
}

/// Prints what the library noticed without failing (the library itself never prints).
fn print_warnings(client: &mut Client) {
    for warning in client.take_warnings() {
        eprintln!("warning: {warning}");
    }
}

/// Runs a command on a connected device and returns what it prints.
async fn dispatch(client: &mut Client, command: Command) -> Result<String, ClientError> {
    match command {
        // Run before any command reaches here.
        Command::Enroll { .. } | Command::Follow { .. } | Command::Passphrase(_) => {
            Ok(String::new())
        }
        Command::Send { user, text } => {
            warn_unverified(client, &user).await;
            client.send(&user, &text).await.map(|()| String::new())
        }
        Command::Verify { user, confirm } => match confirm {
            None => client
                .safety_number(&user)
                .await
                .map(|n| show_safety_number(&n)),
            Some(number) => client
                .confirm_safety_number(&user, &number)
                .await
                .map(|n| format!("{} is verified\n", n.contact)),
        },
        Command::Conversations { json } => client
            .conversation_list()
            .await
            .map(|list| render_conversations(&list, json)),
        Command::History {
            conversation,
            limit,
            json,
        } => client
            .history(&conversation, limit)
            .await
            .map(|messages| render(&messages, json)),
        Command::Search { text, limit, json } => client
            .search(&text, limit)
            .await
            .map(|messages| render(&messages, json)),
        Command::Group(command) => group(client, command).await,
        Command::Devices { command: None } => client
            .devices()
            .await
            .map(|devices| render_devices(&devices)),
        Command::Devices {
            command: Some(DevicesCommand::Revoke { device }),
        } => client
            .revoke_device(&device)
            .await
            .map(|()| format!("device {device} is revoked\n")),
        Command::Set(SetCommand::RequireVerified { value }) => client
            .set_require_verified(value == "on")
            .await
            .map(|()| format!("require-verified is {value}\n")),
        Command::Recv { wait, json } => client
            .receive_with_events(Duration::from_secs(wait))
            .await
            .map(|messages| render(&messages, json)),
    }
}

/// Runs a `relais group` command and returns what it prints.
async fn group(client: &mut Client, command: GroupCommand) -> Result<String, ClientError> {
    match command {
        GroupCommand::Create { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client
                .create_group(&name, &members)
                .await
                .map(|()| String::new())
        }
        GroupCommand::Send { name, text } => {
            warn_unverified(client, &name).await;
            client
                .group_send(&name, &text)
                .await
                .map(|()| String::new())
        }
        GroupCommand::Members { name } => client.group_members(&name).await.map(|members| {
            members
                .iter()
                .map(|m| {
                    let role = if m.admin { "admin" } else { "member" };
                    let key = &m.device_key[..m.device_key.len().min(16)];
                    format!("{}\t{role}\t{key}\n", m.user)
                })
                .collect()
        }),
        GroupCommand::Add { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client
                .add_members(&name, &members)
                .await
                .map(|()| String::new())
        }
        GroupCommand::Remove { name, user } => client
            .remove_member(&name, &user)
            .await
            .map(|()| format!("{user} is no longer in {name}\n")),
        GroupCommand::Leave { name } => client
            .leave(&name)
            .await
            .map(|()| format!("you are leaving {name}: its members take you out of it\n")),
        GroupCommand::Rename { name, new_name } => client
            .rename_group(&name, &new_name)
            .await
            .map(|()| format!("{name} is now named {new_name}\n")),
        GroupCommand::Promote { name, user } => client
            .promote(&name, &user)
            .await
            .map(|()| format!("{user} is an admin of {name}\n")),
    }
}

/// Warns, on standard error, about verified contacts of a conversation whose devices
/// changed; with require-verified on, the send that follows is refused instead.
async fn warn_unverified(client: &Client, conversation: &str) {
    if let Ok(changed) = client.unverified_contacts(conversation).await
        && !changed.is_empty()
    {
        eprintln!(
            "warning: {} changed devices since you verified them; compare safety numbers \
             again with `relais verify {}`",
            changed.join(", "),
            changed[0]
        );
    }
}

/// This user's devices as `devices` prints them: id, enrollment, last seen.
fn render_devices(devices: &[OwnDevice]) -> String {
    devices
        .iter()
        .map(|d| {
            let seen = d
                .last_seen_ms
                .map_or_else(|| "never".into(), format_time_ms);
            let this = if d.this_device { "\tthis device" } else { "" };
            format!(
                "{}\tenrolled {}\tlast seen {seen}{this}\n",
                d.device_id,
                format_time_ms(d.enrolled_at_ms)
            )
        })
        .collect()
}

/// A safety number as `verify` prints it.
fn show_safety_number(n: &SafetyNumber) -> String {
    let state = if n.verified {
        "verified".to_owned()
    } else if n.changed_since_verified {
        format!(
            "NOT verified: {} changed devices since you verified them",
            n.contact
        )
    } else {
        "not verified".to_owned()
    };
    format!(
        "safety number with {}:\n  {}\nstatus: {state}\ndevices of {}: {}\nQR payload: {}\n\
         compare it with {} in person or on a call you trust, then run\n  \
         relais verify {} --confirm \"{}\"\n",
        n.contact,
        grouped_safety_number(&n.number),
        n.contact,
        n.devices.join(", "),
        n.qr_payload,
        n.contact,
        n.contact,
        grouped_safety_number(&n.number),
    )
}

/// Conversations as `conversations` prints them: name, kind, unread count, and the last
/// entry's time and text.
fn render_conversations(list: &[ConversationSummary], json: bool) -> String {
    let field = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let mut out = String::new();
    for c in list {
        let (at, text) = c.last.as_ref().map_or((String::new(), String::new()), |m| {
            (format_time_ms(m.sent_at_ms), m.text.clone())
        });
        if json {
            let line = serde_json::json!({
                "conversation": c.name, "kind": c.kind, "unread": c.unread,
                "last_at": at, "last_text": text,
            });
            out.push_str(&format!("{line}\n"));
        } else {
            let preview: String = text.chars().take(60).collect();
            out.push_str(&format!(
                "{}\t{}\t{} unread\t{at}\t{}\n",
                field(&c.name),
                c.kind,
                c.unread,
                field(&preview)
            ));
        }
    }
    out
}

/// Received messages as `recv` prints them: tab-separated lines, or JSON lines.
fn render(messages: &[ReceivedMessage], json: bool) -> String {
    let mut out = String::new();
    for m in messages {
        let sent_at = format_time_ms(m.sent_at_ms);
        if json {
            let line = serde_json::json!({
                "conversation": m.conversation,
                "sender": m.sender,
                "event": m.event,
                "sent_at": sent_at,
                "sent_at_ms": m.sent_at_ms,
                "text": m.text,
            });
            out.push_str(&format!("{line}\n"));
        } else {
            // Tabs and line breaks inside a field would break the one-line format.
            let field = |s: &str| s.replace(['\t', '\n', '\r'], " ");
            out.push_str(&format!(
                "{}\t{}\t{sent_at}\t{}\n",
                field(&m.conversation),
                if m.event { "*" } else { &m.sender },
                field(&m.text)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn messages_render_as_lines() {
        let messages = [ReceivedMessage {
            conversation: "ops".into(),
            sender: "bob@localhost".into(),
            sent_at_ms: 1_000,
            text: "a\tb\nc".into(),
            event: false,
        }];
        assert_eq!(
            render(&messages, false),
            "ops\tbob@localhost\t1970-01-01T00:00:01Z\ta b c\n"
        );
        let line: serde_json::Value =
            serde_json::from_str(render(&messages, true).trim_end()).expect("json");
        assert_eq!(line["sent_at"], "1970-01-01T00:00:01Z");
        assert_eq!(line["sent_at_ms"], 1_000);
        assert_eq!(line["text"], "a\tb\nc");
    }
}
