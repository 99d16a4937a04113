//! The `relais` command line: a thin layer over the client library. Exit codes: 0 success,
//! 1 the relay or the network failed, 64 bad command line, 78 local setup problem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::io::Write as _;

use relais_client::{Client, ClientError, ReceivedMessage, format_time_ms};

/// sysexits: the command line was wrong.
const EX_USAGE: u8 = 64;
/// sysexits: an internal failure (the runtime could not start).
const EX_SOFTWARE: u8 = 70;
/// sysexits: the local configuration or state is missing or broken.
const EX_CONFIG: u8 = 78;

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
    /// Receive messages: one line each with conversation, sender, time and text.
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
                    ExitCode::FAILURE
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
        1
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
        let client = Client::enroll(&home, &server, &ca, &user, &code).await?;
        let output = format!(
            "enrolled {} as device {}\n",
            client.user(),
            client.device_id()
        );
        client.close().await;
        return Ok(output);
    }
    let mut client = Client::open(&home).await?;
    client.connect().await?;
    let result = match command {
        Command::Enroll { .. } => Ok(String::new()),
        Command::Send { user, text } => client.send(&user, &text).await.map(|()| String::new()),
        Command::Group(GroupCommand::Create { name, members }) => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client
                .create_group(&name, &members)
                .await
                .map(|()| String::new())
        }
        Command::Group(GroupCommand::Send { name, text }) => client
            .group_send(&name, &text)
            .await
            .map(|()| String::new()),
        Command::Group(GroupCommand::Add { name, members }) => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client
                .add_members(&name, &members)
                .await
                .map(|()| String::new())
        }
        Command::Recv { wait, json } => client
            .receive(Duration::from_secs(wait))
            .await
            .map(|messages| render(&messages, json)),
    };
    client.close().await;
    result
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
                field(&m.sender),
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
