//! The `relais` command line's definition: its commands, arguments and help texts. The
//! `relais` binary parses it and runs each command on the library; the same definition is
//! the source of `docs/reference/relais-cli.md` and the manual pages in `client/man/`
//! (generated and checked by `daemon/tests/relay/cli_reference.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The directory under `$HOME` that is a device's home when `--home` is not given.
pub const DEFAULT_HOME: &str = ".relais";

/// relais, the Relais client: end-to-end-encrypted messages with MLS; the relay only ever
/// sees ciphertext.
///
/// Each device keeps its key, its conversations and their history in a directory of its
/// own, its home (--home). Start by enrolling the device with the enrollment link (or the
/// address, certificate and one-time code) your administrator gave you (`relais enroll`);
/// then write (`relais send`),
/// read (`relais recv`), and compare safety numbers with each contact (`relais verify`) to
/// be sure nobody else reads along. Protect the home with a passphrase (`relais passphrase
/// set`). Each command connects, does its work and exits; `relais follow` stays connected.
#[derive(Debug, Parser)]
#[command(name = "relais", version)]
pub struct Cli {
    /// The directory where this device keeps its key, MLS state and history, one per
    /// device; only you may read it [default: $HOME/.relais].
    #[arg(long, value_name = "DIR", env = "RELAIS_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// A file whose first line is the passphrase of an encrypted home, for scripts (on a
    /// terminal it is asked instead); with `enroll` and `passphrase set`, the passphrase to
    /// protect the home with. Only you may read the file (chmod 600). A passphrase is never
    /// given as an argument, where other users could see it.
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAIS_PASSPHRASE_FILE",
        global = true
    )]
    pub passphrase_file: Option<PathBuf>,
    /// A key file that unlocks a home protected by one instead of a passphrase (at least 32
    /// random bytes, kept by the platform's secret store or systemd-creds); with `enroll` and
    /// `passphrase set`, the key file to protect the home with.
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAIS_KEY_FILE",
        global = true,
        conflicts_with = "passphrase_file"
    )]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The home the command works on: `--home` (or `RELAIS_HOME`), else `$HOME/.relais`;
    /// `None` when neither is set.
    pub fn home(&self) -> Option<PathBuf> {
        self.home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(DEFAULT_HOME)))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this device with a one-time code from an administrator.
    ///
    /// Run it once per device, with the enrollment link your administrator (or another of
    /// your devices, `relais devices link`) gave you, or with the relay's address, its
    /// certificate authority and the code. The device's key is made here and never leaves
    /// it. With --passphrase-file or --key-file the home is encrypted from the start;
    /// otherwise protect it afterwards with `relais passphrase set`.
    ///
    /// A link pins the relay's certificate: the device accepts only a relay whose
    /// certificate chain holds it, and sends nothing to another. Nothing is written to the
    /// home when enrolling fails.
    #[command(group(clap::ArgGroup::new("relay").required(true).args(["link", "server"])))]
    Enroll {
        /// The enrollment link (relais://enroll?…), which holds the relay's address, your
        /// user name, the code and the pin of the relay's certificate; or a file holding it
        /// alone, readable by you only (mode 600: `chmod 600 FILE`, or it is refused); or
        /// `-` to read it from standard input. A file or `-` keeps the code out of your
        /// shell's history. Replaces --server, --ca, --user and --code.
        #[arg(long, value_name = "LINK|FILE|-", conflicts_with_all = ["ca", "user", "code"])]
        link: Option<String>,
        /// The relay's address, as your administrator gave it: https://HOST:PORT.
        #[arg(long, value_name = "URL", requires_all = ["ca", "user", "code"])]
        server: Option<String>,
        /// The certificate (PEM) of the authority that signed the relay's certificate, as
        /// your administrator gave it. The device reads it at every connection: keep it
        /// where it is.
        #[arg(long, value_name = "FILE", requires = "server")]
        ca: Option<PathBuf>,
        /// Your user name, `name` or `name@domain`.
        #[arg(long, requires = "server")]
        user: Option<String>,
        /// The enrollment code; it works once (dashes and case do not matter).
        #[arg(long, requires = "server")]
        code: Option<String>,
    },
    /// Send a message to a user (a direct conversation, created on first use).
    ///
    /// The message goes to every device of the user and to your other devices. If a contact
    /// you verified has changed devices since, it says so first (and, with `relais set
    /// require-verified on`, refuses to send).
    Send {
        /// The recipient, `name` or `name@domain`.
        user: String,
        /// The message (in quotes if it has spaces).
        text: String,
    },
    /// Create groups, send to them, and manage their members.
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
        /// The text to look for; case is ignored for unaccented letters only (`é` does not
        /// find `É`).
        text: String,
        /// How many entries at most, newest first.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List your devices, link a new one, or revoke one you lost.
    ///
    /// A device you enroll later joins your conversations by itself: your other devices add
    /// it to each of them the next time they connect, and send it their history.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Change a setting of this device.
    #[command(subcommand)]
    Set(SetCommand),
    /// Encrypt this home's keys and history under a passphrase (or a key file), or change it.
    #[command(subcommand)]
    Passphrase(PassphraseCommand),
    /// Stay connected and print messages and changes as they arrive, until interrupted.
    ///
    /// Lines as `recv` prints them (membership changes with `*` as sender); the connection's
    /// state, warnings and failed deliveries go to standard error. With `--json`, every event
    /// is one JSON object per line on standard output, its kind in the field `type`
    /// (`message`, `notice`, `membership`, `verification`, `conversation`, `delivery`,
    /// `connection`, `warning`, `lagged`). Ctrl-C or SIGTERM acknowledges what was received
    /// and exits 0. While it runs, other commands on this home wait for it, and fail after a
    /// moment: the device is in use.
    Follow {
        /// One JSON object per line for every event, connection changes included.
        #[arg(long)]
        json: bool,
    },
    /// Receive messages: one line each with conversation, sender, time and text;
    /// membership changes show with `*` as their sender.
    ///
    /// Each is shown once; `relais history` shows a conversation again.
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
pub enum DevicesCommand {
    /// Link a new device of yours: print an enrollment link for it, and its QR code, without
    /// an administrator.
    ///
    /// Open the link on the new device (`relais enroll --link`, or the Relais app), or scan
    /// the QR code with it. The link holds a one-time code that expires within minutes:
    /// whoever has it can enroll a device as you until then, so keep it between your
    /// devices. Once enrolled, the new device is in your conversations and gets their
    /// history from this one. The relay may refuse (DEVICE_LINKING_DISABLED, or
    /// LIMIT_EXCEEDED for too many codes waiting or devices): ask your administrator then.
    Link {
        /// Also write the QR code to this PNG file, readable by you alone (never over an
        /// existing file). The file is created before the code is issued, so a path that
        /// cannot be written fails with no code issued.
        #[arg(long, value_name = "FILE")]
        qr: Option<PathBuf>,
    },
    /// Revoke another of your devices: the relay cuts it off at once and its
    /// conversations drop it.
    Revoke {
        /// The device id, as `relais devices` lists it.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Refuse to send into a conversation with a verified contact whose devices changed,
    /// until you verify them again (`on`), or only warn (`off`, the default).
    RequireVerified {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        value: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with the given members (and your other devices); you are its admin.
    Create {
        /// The group's name, as members will see it.
        name: String,
        /// The users to add, separated by commas (`bob,carol@interieur.gouv.fr`).
        #[arg(long, value_delimiter = ',', value_name = "USERS")]
        members: Vec<String>,
    },
    /// Send a message to a group.
    Send {
        /// The group's name.
        name: String,
        /// The message (in quotes if it has spaces).
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
        /// The users to add, separated by commas.
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

#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Encrypt this home: its device key, MLS state, conversations and history are sealed
    /// under a key derived from a passphrase (asked twice on the terminal, or given with
    /// --passphrase-file) or from a key file (--key-file); every command then needs it.
    ///
    /// Nothing is lost if it is interrupted: the home stays unencrypted, or is finished
    /// the next time it is opened. Afterwards no plaintext is left in the home's files.
    /// There is no way back to an unencrypted home, and no way in without the passphrase:
    /// keep it where you keep other secrets.
    Set,
    /// Change the passphrase of an encrypted home (the current one from the terminal or
    /// --passphrase-file), or protect it with a key file instead.
    Change {
        /// A file holding the new passphrase on its first line [default: asked twice on
        /// the terminal].
        #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
        new_passphrase_file: Option<PathBuf>,
        /// A key file (at least 32 random bytes) to protect the home instead of a
        /// passphrase.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

/// The command-line definition, for generating documentation.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        super::command().debug_assert();
    }
}
