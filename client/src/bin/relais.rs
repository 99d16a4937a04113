//! The `relais` command line: a thin layer over the client library, which defines its
//! arguments (`relais_client::cli`). Exit codes (`relais_protocol::exit`): 0 success, 1 the
//! relay or the network failed, 64 bad command line, 70 internal failure, 78 local setup
//! problem.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use relais_client::cli::{Cli, Command, DevicesCommand, GroupCommand, SetCommand};
use relais_client::{
    Client, ClientError, ConversationSummary, EnrollLink, HomeLock, LINK_BYTES_MAX, LinkError,
    OwnDevice, ReceivedMessage, SafetyNumber, format_time_ms, grouped_safety_number,
    read_link_file,
};
use relais_link::qr::{PngFile, Qr};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE, FAILURE};
use zeroize::Zeroizing;

#[path = "relais/follow.rs"]
mod follow;
#[path = "relais/passphrase.rs"]
mod passphrase;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EX_USAGE } else { 0 });
        }
    };
    let home = match cli.home() {
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
        return runtime.block_on(follow::follow(&home, json, &unlock));
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
pub(crate) fn exit_code(e: &ClientError) -> u8 {
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
        link,
        server,
        ca,
        user,
        code,
    } = command
    {
        let secret = unlock.given()?;
        let mut client = match (link, server, ca, user, code) {
            (Some(source), ..) => {
                let link = read_link(&source)?;
                Client::enroll_from_link(&home, &link, secret.as_ref()).await?
            }
            (None, Some(server), Some(ca), Some(user), Some(code)) => {
                Client::enroll_with(&home, &server, &ca, &user, &code, secret.as_ref()).await?
            }
            _ => {
                return Err(ClientError::Usage(
                    "give the enrollment link (--link), or --server, --ca, --user and --code"
                        .into(),
                ));
            }
        };
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
    let mut client = passphrase::unlock(&home, &unlock, async |secret| {
        Client::open_with(&home, secret).await
    })
    .await?;
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
            command: Some(DevicesCommand::Link { qr }),
        } => link_device(client, qr.as_deref()).await,
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

/// The enrollment link `--link` gives: the link itself, `-` for standard input, or a file
/// holding it (which keeps the code out of the shell's history), refused when its group or
/// other users can read it.
fn read_link(source: &str) -> Result<EnrollLink, ClientError> {
    if source.starts_with("relais:") {
        return Ok(EnrollLink::parse(source)?);
    }
    if source != "-" {
        return read_link_file(Path::new(source));
    }
    // One byte more than a link may have, so that a longer text is refused as such.
    let limit = LINK_BYTES_MAX as u64 + 1;
    let mut text = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut text)
        .map_err(|e| {
            ClientError::Usage(format!(
                "cannot read the enrollment link from standard input: {e}; give the link \
                 itself (relais://enroll?…), a file holding it, or - for standard input"
            ))
        })?;
    let text = std::str::from_utf8(&text).map_err(|_| LinkError::NotALink)?;
    Ok(EnrollLink::parse(text)?)
}

/// `relais devices link`: an enrollment link for a new device of this user, on standard
/// output with its QR code, and with `qr` in a PNG file too. The file is claimed before the
/// code is issued, so that a path that cannot be written (or an existing file, never written
/// over) fails before any code exists. Once the code is issued the link is printed whatever
/// happens to the file: a failure to write it is a warning that names the file, never the
/// link, and the command succeeds.
async fn link_device(client: &mut Client, qr: Option<&Path>) -> Result<String, ClientError> {
    let png = qr
        .map(PngFile::create)
        .transpose()
        .map_err(|e| ClientError::State(e.to_string()))?;
    let link = match client.link_device().await {
        Ok(link) => link,
        Err(e) => {
            if let Some(file) = png {
                file.discard();
            }
            return Err(e);
        }
    };
    let uri = link.to_uri();
    let drawn = match Qr::of(&uri) {
        Ok(code) => {
            if let Some(file) = png
                && let Err(e) = file.write(&code)
            {
                eprintln!("warning: {e}; the link on standard output is valid: give it as text");
            }
            code.terminal(std::io::stdout().is_terminal())
        }
        Err(e) => {
            if let Some(file) = png {
                file.discard();
            }
            eprintln!("warning: {e}");
            String::new()
        }
    };
    let expires = link
        .expires_at_ms()
        .map_or_else(|| "soon".to_owned(), format_time_ms);
    eprintln!(
        "link for a new device of {} (single use, expires {expires}): open it on the new \
         device (`relais enroll --link`, or the Relais app) or scan the QR code with it; \
         whoever has it can enroll a device as you until then",
        link.user()
    );
    Ok(format!("{}\n{drawn}\n", uri.as_str()))
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

/// This user's devices as `devices` prints them: id, key, enrollment, last seen. The key
/// is shown as `verify` and `group members` show keys, and begins with the digits that
/// membership lines ("alice@… has a new device d2df8e7f…") give.
fn render_devices(devices: &[OwnDevice]) -> String {
    devices
        .iter()
        .map(|d| {
            let seen = d
                .last_seen_ms
                .map_or_else(|| "never".into(), format_time_ms);
            let this = if d.this_device { "\tthis device" } else { "" };
            let key = hex::encode(&d.public_key[..d.public_key.len().min(8)]);
            format!(
                "{}\tkey {key}\tenrolled {}\tlast seen {seen}{this}\n",
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
pub(crate) fn render(messages: &[ReceivedMessage], json: bool) -> String {
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

    #[test]
    fn devices_render_with_the_key_membership_lines_name() {
        let device = |id: &str, this_device: bool| OwnDevice {
            device_id: id.into(),
            public_key: vec![0xD2, 0xDF, 0x8E, 0x7F, 1, 2, 3, 4, 5, 6],
            enrolled_at_ms: 1_000,
            last_seen_ms: (!this_device).then_some(2_000),
            this_device,
        };
        assert_eq!(
            render_devices(&[device("0a74", true), device("e9e0", false)]),
            "0a74\tkey d2df8e7f01020304\tenrolled 1970-01-01T00:00:01Z\tlast seen never\t\
             this device\n\
             e9e0\tkey d2df8e7f01020304\tenrolled 1970-01-01T00:00:01Z\tlast seen \
             1970-01-01T00:00:02Z\n"
        );
    }
}
