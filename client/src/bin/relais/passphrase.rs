//! Encrypted homes on the command line: unlocking one with the passphrase from a file
//! (`--passphrase-file`, `RELAIS_PASSPHRASE_FILE`), a key file (`--key-file`,
//! `RELAIS_KEY_FILE`) or the terminal, never from an argument; and `relais passphrase`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use nix::sys::termios::{self, LocalFlags, SetArg};
use relais_client::cli::PassphraseCommand;
use relais_client::{Client, ClientError, PASSPHRASE_CHARS_MIN, Secret, SecretKind};
use zeroize::Zeroizing;

/// Passphrases asked on a terminal before giving up: a typo is common, and each try costs
/// the Argon2id derivation's half second.
const TERMINAL_TRIES: usize = 3;

/// What unlocks the home, as the global options gave it.
#[derive(Debug, Default)]
pub struct Unlock {
    pub passphrase_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Unlock {
    /// The passphrase or key file the options name, if any.
    pub fn given(&self) -> Result<Option<Secret>, ClientError> {
        match (&self.passphrase_file, &self.key_file) {
            (Some(path), _) => Secret::read_passphrase_file(path).map(Some),
            (None, Some(path)) => Secret::read_key_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// What `open` opens (the device in `home`, or a session on it), unlocked with what the
/// options give or, for a home encrypted with a passphrase, with one asked on the terminal.
pub async fn unlock<T>(
    home: &Path,
    unlock: &Unlock,
    mut open: impl AsyncFnMut(Option<&Secret>) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let given = unlock.given()?;
    let mut opened = open(given.as_ref()).await;
    if given.is_some() || !std::io::stdin().is_terminal() {
        return opened;
    }
    for _ in 0..TERMINAL_TRIES {
        match &opened {
            Err(ClientError::Locked {
                kind: SecretKind::Passphrase,
                ..
            }) => {}
            Err(wrong @ ClientError::WrongSecret { .. }) => eprintln!("{wrong}"),
            _ => break,
        }
        let secret = ask(&format!("passphrase for {}: ", home.display()))?;
        opened = open(Some(&secret)).await;
    }
    opened
}

/// Runs a `relais passphrase` command (the caller holds the home's lock) and returns what
/// it prints.
pub async fn run(
    command: PassphraseCommand,
    home: &Path,
    unlock: &Unlock,
) -> Result<String, ClientError> {
    match command {
        PassphraseCommand::Set => {
            let secret = match unlock.given()? {
                Some(secret) => secret,
                None => choose(home, "--passphrase-file FILE or --key-file FILE")?,
            };
            Client::encrypt_home(home, &secret).await?;
            Ok(format!(
                "{} is encrypted; every command now needs its {}\n",
                home.display(),
                secret.kind()
            ))
        }
        PassphraseCommand::Change {
            new_passphrase_file,
            new_key_file,
        } => {
            let current = match unlock.given()? {
                Some(secret) => secret,
                None if std::io::stdin().is_terminal() => {
                    ask(&format!("current passphrase for {}: ", home.display()))?
                }
                None => {
                    return Err(ClientError::Usage(
                        "give the current passphrase with --passphrase-file FILE (or the key \
                         file with --key-file FILE), or run this on a terminal"
                            .into(),
                    ));
                }
            };
            let new = match (new_passphrase_file, new_key_file) {
                (Some(path), _) => Secret::read_passphrase_file(&path)?,
                (None, Some(path)) => Secret::read_key_file(&path)?,
                (None, None) => choose(home, "--new-passphrase-file FILE or --new-key-file FILE")?,
            };
            Client::change_home_secret(home, &current, &new).await?;
            Ok(format!(
                "{} is now protected by the new {}\n",
                home.display(),
                new.kind()
            ))
        }
    }
}

/// A new passphrase, typed twice on the terminal; `files` says how to give one otherwise.
fn choose(home: &Path, files: &str) -> Result<Secret, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(format!(
            "no terminal to ask for a new passphrase on; give one with {files}"
        )));
    }
    let first = ask(&format!(
        "new passphrase for {} (at least {PASSPHRASE_CHARS_MIN} characters): ",
        home.display()
    ))?;
    let second = ask("the same passphrase again: ")?;
    if !first.same_as(&second) {
        return Err(ClientError::Usage(
            "the two passphrases differ; nothing was changed".into(),
        ));
    }
    Ok(first)
}

/// A passphrase typed on the terminal (standard input), without echoing it.
fn ask(prompt: &str) -> Result<Secret, ClientError> {
    let failed = |e: std::io::Error| {
        ClientError::Usage(format!("cannot read a passphrase from the terminal: {e}"))
    };
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).map_err(|e| failed(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    // The newline the user types is still shown, so the next output starts on a new line.
    quiet.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &quiet).map_err(|e| failed(e.into()))?;
    let mut stderr = std::io::stderr();
    let _ = stderr
        .write_all(prompt.as_bytes())
        .and_then(|()| stderr.flush());
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let restored = termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &saved);
    read.map_err(failed)?;
    restored.map_err(|e| failed(e.into()))?;
    Ok(Secret::passphrase(line.trim_end_matches(['\n', '\r'])))
}
