//! Filling the home the app is measured on, through the real relay with the client library:
//! two users, `desktop-00000` (the official whose window is measured) and `desktop-00001`
//! (a colleague), each on a library `Session` as the app runs it. They write to each other
//! in turn in one direct conversation, the long one; then the official creates the other
//! groups with the colleague and writes one line in each; the colleague's last word makes
//! the long conversation the most recent, the first of the list, which the app's timing
//! script opens. Texts have lengths from a few words to several lines, so rows differ in
//! height as real ones do; their content is fixed, so runs compare.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use relais_client::{ClientError, Session, SessionHandle};

use crate::daemon::Daemon;
use crate::setup;

/// Longest the official's device may take to store what the colleague sent.
const STORED_WAIT: Duration = Duration::from_secs(600);
/// Longest the colleague's device may take to join the conversation the official opened.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Longest a command waits for its session to reconnect.
const RECONNECT_WAIT: Duration = Duration::from_secs(120);
/// The colleague's last text, the newest of the long conversation.
const LAST_WORD: &str = "Bonne fin de journée.";
/// How often progress is printed while filling.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Words the texts are made of.
const WORDS: &[&str] = &[
    "réunion",
    "dossier",
    "préfecture",
    "note",
    "demain",
    "validation",
    "ministère",
    "compte rendu",
    "version",
    "signature",
    "service",
    "calendrier",
    "arbitrage",
    "cabinet",
];

/// The filled home and what it holds.
pub struct Filled {
    /// The official's home, closed: the app opens it.
    pub home: PathBuf,
    pub conversations: usize,
    /// History entries in all conversations: texts and membership lines.
    pub entries: u64,
    pub long_conversation_entries: u64,
    /// Commands that met a reconnecting session: tried again, or left to the outbox.
    pub retries: u64,
}

/// Fills a home with `conversations` conversations and `messages` texts in all.
pub async fn fill(
    daemon: &Daemon,
    homes: &Path,
    conversations: usize,
    messages: u64,
) -> anyhow::Result<Filled> {
    let users = setup::users(daemon, homes, "desktop", 2).await?;
    let [(official, home), (colleague, colleague_home)] =
        <[_; 2]>::try_from(users).map_err(|_| anyhow!("two users were asked for"))?;
    let official_session = Session::open(&home).await?;
    let colleague_session = Session::open(&colleague_home).await?;
    let (me, them) = (official_session.handle(), colleague_session.handle());
    let groups = conversations.saturating_sub(1);
    // One text per group, the colleague's last word, and the rest in the long conversation.
    let long = messages
        .checked_sub(groups as u64 + 1)
        .filter(|long| *long >= 2)
        .context("--messages must exceed --conversations by at least 2")?;

    // The official writes first, so that the direct conversation is theirs; once the
    // colleague's device has joined it, both write their halves at once, each as fast as
    // their session answers.
    let retries = AtomicU64::new(0);
    let first = text(0);
    sending(&retries, || me.send(&colleague, &first)).await?;
    joined(&them, &official).await?;
    let progress = Progress::new("texts in the long conversation", long);
    let (mine, theirs) = tokio::join!(
        write_half(&me, &colleague, (1..long).step_by(2), &progress, &retries),
        write_half(&them, &official, (2..long).step_by(2), &progress, &retries),
    );
    mine?;
    theirs?;
    let progress = Progress::new("groups", groups as u64);
    for g in 0..groups {
        let name = format!("Groupe {:04}", g + 1);
        create_group(&me, &name, &colleague, &retries).await?;
        let line = text(long + g as u64);
        sending(&retries, || me.group_send(&name, &line)).await?;
        progress.tick();
    }
    sending(&retries, || them.send(&official, LAST_WORD)).await?;

    let (entries, long_entries) = wait_stored(&me, &official, &colleague).await?;
    let listed = me.conversations().await?.len();
    official_session.shutdown().await?;
    colleague_session.shutdown().await?;
    if listed != conversations {
        bail!("the official's device lists {listed} conversations, not {conversations}");
    }
    Ok(Filled {
        home,
        conversations: listed,
        entries,
        long_conversation_entries: long_entries,
        retries: retries.into_inner(),
    })
}

/// Sends the texts numbered `numbers` to `peer`, one after the other.
async fn write_half(
    session: &SessionHandle,
    peer: &str,
    numbers: impl Iterator<Item = u64>,
    progress: &Progress,
    retries: &AtomicU64,
) -> anyhow::Result<()> {
    for n in numbers {
        let text = text(n);
        sending(retries, || session.send(peer, &text))
            .await
            .with_context(|| format!("text {n} to {peer}"))?;
        progress.tick();
    }
    Ok(())
}

/// Sends a text through a session, again while the session is reconnecting. A session
/// busy storing a long history can fall behind the relay's pushes, and the relay then
/// closes its connection; the session reconnects by itself. Meanwhile a send answers
/// `NotConnected` having submitted nothing, so it is tried again; one that lost its
/// connection on the way (`Network`) stays in the durable outbox, which sends it again with
/// the same id after the reconnection, so it is not.
async fn sending<F, Fut>(retries: &AtomicU64, mut send: F) -> Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let deadline = Instant::now() + RECONNECT_WAIT;
    loop {
        match send().await {
            Err(ClientError::NotConnected) if Instant::now() < deadline => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(ClientError::Network(_)) => {
                retries.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            result => return result,
        }
    }
}

/// Creates the group `name` with `colleague`, again while the session is reconnecting; a
/// creation whose connection was lost on the way is looked for before it is tried again.
async fn create_group(
    me: &SessionHandle,
    name: &str,
    colleague: &str,
    retries: &AtomicU64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECONNECT_WAIT;
    loop {
        match me.create_group(name, &[colleague]).await {
            Ok(()) => return Ok(()),
            Err(ClientError::NotConnected | ClientError::Network(_))
                if Instant::now() < deadline =>
            {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let listed = me.conversations().await.unwrap_or_default();
                if listed.iter().any(|c| c.name == name) {
                    return Ok(());
                }
            }
            Err(e) => return Err(anyhow!(e).context(format!("creating {name}"))),
        }
    }
}

/// Waits until the colleague's device has joined the direct conversation `official`
/// opened, so that it writes there rather than open another.
async fn joined(them: &SessionHandle, official: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + JOIN_WAIT;
    while Instant::now() < deadline {
        let list = them.conversations().await?;
        // A direct conversation is named after the other user, domain included.
        let with_official = |name: &str| name.split('@').next() == Some(official);
        if list
            .iter()
            .any(|c| c.kind == "direct" && with_official(&c.name))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the colleague's device did not join {official}'s conversation within {JOIN_WAIT:?}")
}

/// Waits until the official's device stored the colleague's last word in their direct
/// conversation: it was sent last, and a group's messages arrive in order, so everything
/// before it is stored too. Returns the entries of all conversations and of that one.
async fn wait_stored(
    me: &SessionHandle,
    official: &str,
    colleague: &str,
) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + STORED_WAIT;
    loop {
        let list = me.conversations().await?;
        let long = list
            .iter()
            .find(|c| c.kind == "direct")
            .with_context(|| format!("{official} has no direct conversation with {colleague}"))?;
        let page = me.history_page(&from_hex(&long.group_id)?, None, 1).await?;
        if page
            .entries
            .last()
            .is_some_and(|e| e.message.text == LAST_WORD)
        {
            let mut entries = 0;
            for c in &list {
                entries += me
                    .history_page(&from_hex(&c.group_id)?, None, 1)
                    .await?
                    .total;
            }
            return Ok((entries, page.total));
        }
        if Instant::now() > deadline {
            bail!(
                "{official} stored {} entries of the long conversation, not the last, within \
                 {STORED_WAIT:?}",
                page.total
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Text number `n`: its number, then three to twenty-five words, a few lines at most.
fn text(n: u64) -> String {
    let words = 3 + (n * 7 % 23) as usize;
    let body: Vec<&str> = (0..words)
        .map(|k| WORDS[(n as usize + k * 5) % WORDS.len()])
        .collect();
    format!("{n}. {}", body.join(" "))
}

fn from_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("a group id in hex has an even length: {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .with_context(|| format!("a group id in hex: {text:?}"))
        })
        .collect()
}

/// Prints how far a long step got, every [`PROGRESS_EVERY`].
struct Progress {
    what: &'static str,
    total: u64,
    done: AtomicU64,
    printed: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            what,
            total,
            done: Default::default(),
            printed: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut printed) = self.printed.lock() else {
            return;
        };
        if printed.elapsed() >= PROGRESS_EVERY {
            *printed = Instant::now();
            eprintln!("  {done} of {} {}", self.total, self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn texts_are_fixed_and_vary_in_length() {
        assert_eq!(super::text(0), "0. réunion validation service");
        let lengths: Vec<usize> = (0..40).map(|n| super::text(n).len()).collect();
        assert!(lengths.iter().any(|l| *l < 40) && lengths.iter().any(|l| *l > 150));
        assert_eq!(super::from_hex("00ff10").expect("hex"), vec![0, 255, 16]);
        assert!(super::from_hex("0").is_err() && super::from_hex("zz").is_err());
    }
}
