//! The `relais` command line: a thin layer over the client library. Exit codes: 0 success,
//! 1 the relay or the network failed, 64 bad command line, 78 local setup problem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use relais_client::{Client, ClientError, format_time_ms};

/// relais, the Relais client: end-to-end-encrypted messages with MLS; the relay only ever
/// sees ciphertext.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about, long_about = None)]
struct Cli {
    /// Where this device keeps its key, MLS state and history.
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { 64 } else { 0 });
        }
    };
    let home = match cli
        .home
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".relais")))
    {
        Some(home) => home,
        None => {
            eprintln!("error: no --home given and $HOME is not set");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(cli.command, home)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_local_setup() { 78 } else { 1 })
        }
    }
}

async fn run(command: Command, home: PathBuf) -> Result<(), ClientError> {
    if let Command::Enroll {
        server,
        ca,
        user,
        code,
    } = command
    {
        let client = Client::enroll(&home, &server, &ca, &user, &code).await?;
        println!(
            "enrolled {} as device {}",
            client.user(),
            client.device_id()
        );
        client.close().await;
        return Ok(());
    }
    let mut client = Client::open(&home).await?;
    client.connect().await?;
    let result = match command {
        Command::Enroll { .. } => Ok(()),
        Command::Send { user, text } => client.send(&user, &text).await,
        Command::Group(GroupCommand::Create { name, members }) => {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            client.create_group(&name, &members).await
        }
        Command::Group(GroupCommand::Send { name, text }) => client.group_send(&name, &text).await,
        Command::Recv { wait, json } => {
            let messages = client.receive(Duration::from_secs(wait)).await?;
            for m in messages {
                if json {
                    let line = serde_json::json!({
                        "conversation": m.conversation, "sender": m.sender,
                        "sent_at": format_time_ms(m.sent_at_ms), "sent_at_ms": m.sent_at_ms, "text": m.text,
                    });
                    println!("{line}");
                } else {
                    // Tabs and newlines inside a text would break the one-line format.
                    let text = m.text.replace(['\t', '\n'], " ");
                    println!(
                        "{}\t{}\t{}\t{}",
                        m.conversation,
                        m.sender,
                        format_time_ms(m.sent_at_ms),
                        text
                    );
                }
            }
            Ok(())
        }
    };
    client.close().await;
    result
}
