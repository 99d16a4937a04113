//! The `relais` command line: a thin layer over the client library. Exit codes
//! (`relais_protocol::exit`): 0 success, 1 the relay or the network failed, 64 bad command
//! line, 70 internal failure, 78 local setup problem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::io::Write as _;

use relais_client::{
    Client, ClientError, ConversationSummary, OwnDevice, ReceivedMessage, SafetyNumber,
    format_time_ms, grouped_safety_number,
};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE, FAILURE};

/// relais, the Relais client: end-to-end-encrypted messages with MLS; the relay only ever
/// sees ciphertext.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about, long_about = None)]
struct Cli {
    /// Where this device keeps its key, MLS state and history [default: $HOME/.relais].
    #[arg(long, value_name = "DIR", env = "RELAIS_HOME", global = true)]
    home: Option<PathBuf>,
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
    /// List a group's members: each device, with its user and key.
    Members {
        /// The group's name (or a user, for a direct conversation).
        name: String,
    },
    /// Add users (all their devices) to a group you are in.
    Add {
        /// The group's name.
        name: String,
        /// Comma-separated users to add.
        #[arg(long, value_delimiter = ',', value_name = "USERS", required = true)]
        members: Vec<String>,
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
    match runtime.block_on(run(cli.command, home)) {
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
async fn run(command: Command, home: PathBuf) -> Result<String, ClientError> {
    if let Command::Enroll {
        server,
        ca,
        user,
        code,
    } = command
    {
        let mut client = Client::enroll(&home, &server, &ca, &user, &code).await?;
        let output = format!(
            "enrolled {} as device {}\n",
            client.user(),
            client.device_id()
        );
        print_warnings(&mut client);
        client.close().await;
        return Ok(output);
    }
    let mut client = Client::open(&home).await?;
    client.connect().await?;
    // Shown before the command runs, so that a long `recv --wait` does not hold them back.
    print_warnings(&mut client);
    let result = dispatch(&mut client, command).await;
    print_warnings(&mut client);
    client.close().await;
    result
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
        Command::Enroll { .. } => Ok(String::new()),
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
        GroupCommand::Members { name } => client.conversation_members(&name).await.map(|members| {
            members
                .iter()
                .map(|(user, key)| format!("{user}\t{}\n", &key[..key.len().min(16)]))
                .collect()
        }),
        GroupCommand::Add { name, members } => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client
                .add_members(&name, &members)
                .await
                .map(|()| String::new())
        }
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
