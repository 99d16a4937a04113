//! Desktop notifications through the freedesktop notification service on the session bus
//! (`org.freedesktop.Notifications.Notify`), for new messages while the window is not in
//! front.
//!
//! What a notification says is decided here and kept to what the user allowed: the title
//! is the conversation, the body "Nouveau message" (or how many) unless the user chose to
//! see message texts (off by default: a notification shows on a locked screen and to
//! whoever sits nearby). One notification per conversation is kept up to date
//! (`replaces_id`) rather than one per message.
//!
//! D-Bus calls wait for the bus, so they run on a thread of their own, fed through a
//! bounded queue that drops what does not fit: the UI never waits for the notification
//! service. A desktop without one (no session bus, or no service on it) is not an error:
//! the first failure gives one warning ([`Notifier::take_warning`]) and the notifier then
//! drops everything silently until the app restarts.
//!
//! D-Bus access is `zbus`, already linked for AccessKit's screen-reader bridge (see
//! `Cargo.toml`), so notifications cost no crate and no C library.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use relais_client::Event;
use zbus::zvariant::Value;

use crate::backend::Update;
use crate::i18n::I18n;
use crate::model::{Kind, Model};

/// The service's well-known name, object path and interface (Desktop Notifications
/// Specification 1.2).
pub const DESTINATION: &str = "org.freedesktop.Notifications";
pub const PATH: &str = "/org/freedesktop/Notifications";
pub const INTERFACE: &str = "org.freedesktop.Notifications";

/// The app's id: its `.desktop` file's name and its icon's, so that the desktop shows
/// the right name and icon beside the notification.
pub const APP_ID: &str = "fr.gouv.relais";

/// Notifications waiting for the D-Bus thread: beyond this, new ones are dropped (the
/// window's title and the conversation list still count what is unread).
const QUEUE_MAX: usize = 32;

/// How long a call may wait for the bus or the service before it counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Characters of a message's text a notification shows at most, when the user allowed
/// texts: a notification is a glance, and the service need not lay out a long text.
const TEXT_CHARS_MAX: usize = 200;

/// One conversation's notification, as the service will show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Which notification this one replaces when it is shown again: the conversation's
    /// group id, stable across renames.
    pub key: String,
    /// The conversation's name.
    pub summary: String,
    /// "Nouveau message", "3 nouveaux messages", or the text when the user allowed it.
    pub body: String,
    /// The conversation's unread count, for the vendor hint `x-relais-unread`.
    pub unread: u64,
}

/// A message to notify about, as the session announced it.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub conversation: &'a str,
    pub group_id: &'a str,
    pub sender: &'a str,
    pub text: &'a str,
    /// Whether the conversation is a group (its texts are then shown with their sender).
    pub group: bool,
    /// The conversation's unread count, this message included.
    pub unread: u64,
}

/// A text someone else sent, as a session event announced it: what a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub group_id: String,
    pub sender: String,
    pub text: String,
}

/// The text `update` brings from another user (`me`'s own, from another of their devices,
/// are not news), if it brings one.
pub fn arrived(update: &Update, me: Option<&str>) -> Option<Arrived> {
    let Update::Event(Event::Message {
        group_id,
        sender,
        text,
        ..
    }) = update
    else {
        return None;
    };
    (me != Some(sender.as_str())).then(|| Arrived {
        group_id: group_id.clone(),
        sender: sender.clone(),
        text: text.clone(),
    })
}

/// The notification for `message`, in the user's language: without its text unless
/// `show_text` (the user's setting, off by default).
pub fn notification(tr: &I18n, message: &NewMessage<'_>, show_text: bool) -> Notification {
    let unread = message.unread.max(1);
    let body = if show_text {
        let text = shorten(message.text);
        if message.group {
            tr.t_args(
                "notify-text-in-group",
                &[("sender", message.sender.into()), ("text", text.into())],
            )
        } else {
            text
        }
    } else {
        tr.t_args("notify-new-messages", &[("count", unread.into())])
    };
    Notification {
        key: message.group_id.to_owned(),
        summary: message.conversation.to_owned(),
        body,
        unread,
    }
}

/// The arguments of `Notify` (D-Bus signature `susssasa{sv}i`): app name, the id of the
/// notification replaced (0 for none), icon, summary, body, actions, hints, expiry (-1:
/// the service's default). `markup` says whether the service reads the body as markup, so
/// that a text that looks like markup is escaped and shown as it was written.
pub type NotifyArgs = (
    String,
    u32,
    String,
    String,
    String,
    Vec<String>,
    HashMap<&'static str, Value<'static>>,
    i32,
);

/// What `Notify` is called with for `notification`.
pub fn notify_args(notification: &Notification, replaces_id: u32, markup: bool) -> NotifyArgs {
    let body = if markup {
        escape_markup(&notification.body)
    } else {
        notification.body.clone()
    };
    let unread = i32::try_from(notification.unread).unwrap_or(i32::MAX);
    let hints = HashMap::from([
        // The spec's "normal" urgency: a message is worth a look, not an alarm.
        ("urgency", Value::U8(1)),
        ("category", Value::from("im.received")),
        ("desktop-entry", Value::from(APP_ID)),
        // Vendor hints start with `x-`: services that know none ignore it, and the count
        // is in the body too.
        ("x-relais-unread", Value::I32(unread)),
    ]);
    (
        APP_ID.to_owned(),
        replaces_id,
        APP_ID.to_owned(),
        notification.summary.clone(),
        body,
        Vec::new(),
        hints,
        -1,
    )
}

/// Hands notifications to the service from a thread of its own; cheap to call from the UI.
#[derive(Debug)]
pub struct Notifier {
    queue: SyncSender<Notification>,
    warning: Receiver<String>,
}

impl Notifier {
    /// A notifier on the user's session bus (`DBUS_SESSION_BUS_ADDRESS`). It connects only
    /// when it has a first notification to show.
    pub fn session() -> Notifier {
        Notifier::start(None)
    }

    /// A notifier on the bus at `address` (a D-Bus address such as `unix:path=/run/…`).
    pub fn on_bus(address: &str) -> Notifier {
        Notifier::start(Some(address.to_owned()))
    }

    fn start(address: Option<String>) -> Notifier {
        let (queue, waiting) = sync_channel(QUEUE_MAX);
        // One warning ever: the thread stops saying anything after its first failure.
        let (warn, warning) = sync_channel(1);
        let thread_warn = warn.clone();
        let spawned = std::thread::Builder::new()
            .name("relais-notify".into())
            .spawn(move || run(address, &waiting, &thread_warn));
        if let Err(e) = spawned {
            // The queue's receiver went with the closure: every notification is dropped.
            let _ = warn.try_send(format!("desktop notifications are off: {e}"));
        }
        Notifier { queue, warning }
    }

    /// Shows `notification`, replacing the conversation's previous one; never waits. It is
    /// dropped when the queue is full or the service is unavailable.
    pub fn notify(&self, notification: Notification) {
        match self.queue.try_send(notification) {
            // Dropped: the unread counts in the window still say it.
            Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// Notifies `arrived` as the user's settings allow, with its conversation's name and
    /// unread count from `model` (once the update is applied).
    pub fn announce(&self, model: &Model, tr: &I18n, arrived: &Arrived) {
        let settings = model.pages.settings;
        if !settings.notifications {
            return;
        }
        let Some(conversation) = model
            .conversations
            .iter()
            .find(|c| c.group_id == arrived.group_id)
        else {
            return;
        };
        let message = NewMessage {
            conversation: &conversation.name,
            group_id: &arrived.group_id,
            sender: &arrived.sender,
            text: &arrived.text,
            group: conversation.kind != Kind::Direct,
            unread: conversation.unread,
        };
        self.notify(notification(tr, &message, settings.notification_text));
    }

    /// The one warning the notifier gives, once, if the service cannot be reached: the
    /// caller logs it. Notifications are then off until the app restarts.
    pub fn take_warning(&self) -> Option<String> {
        self.warning.try_recv().ok()
    }
}

/// The notifier's thread: connects at the first notification, then shows each in turn;
/// after a failure it warns once and drops the rest until the queue closes.
fn run(address: Option<String>, waiting: &Receiver<Notification>, warn: &SyncSender<String>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = warn.try_send(format!("desktop notifications are off: {e}"));
            return;
        }
    };
    let mut service: Option<Service> = None;
    while let Ok(notification) = waiting.recv() {
        let shown = runtime.block_on(async {
            if service.is_none() {
                service = Some(Service::connect(address.as_deref()).await?);
            }
            let Some(service) = service.as_mut() else {
                return Ok(());
            };
            service.show(&notification).await
        });
        if let Err(e) = shown {
            let _ = warn.try_send(format!(
                "desktop notifications are off until Relais restarts: the notification \
                 service did not answer on the session bus ({e})"
            ));
            // Silence: drain and drop until the app closes the queue.
            while waiting.recv().is_ok() {}
            return;
        }
    }
}

/// A connection to the notification service.
struct Service {
    bus: zbus::Connection,
    /// Whether the service reads bodies as markup (its `body-markup` capability).
    markup: bool,
    /// The id the service gave each conversation's notification, to replace it.
    shown: HashMap<String, u32>,
}

/// Conversations whose notification id is remembered: past this, the oldest ids are
/// forgotten and their next notification is a new one.
const SHOWN_MAX: usize = 256;

impl Service {
    async fn connect(address: Option<&str>) -> zbus::Result<Service> {
        let builder = match address {
            Some(address) => zbus::connection::Builder::address(address)?,
            None => zbus::connection::Builder::session()?,
        };
        let connect = builder.method_timeout(CALL_TIMEOUT).build();
        let bus = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| zbus::Error::Failure("the session bus did not answer in time".into()))??;
        let reply = bus
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(INTERFACE),
                "GetCapabilities",
                &(),
            )
            .await?;
        let capabilities: Vec<String> = reply.body().deserialize()?;
        Ok(Service {
            bus,
            markup: capabilities.iter().any(|c| c == "body-markup"),
            shown: HashMap::new(),
        })
    }

    async fn show(&mut self, notification: &Notification) -> zbus::Result<()> {
        let replaces = self.shown.get(&notification.key).copied().unwrap_or(0);
        let args = notify_args(notification, replaces, self.markup);
        let reply = self
            .bus
            .call_method(Some(DESTINATION), PATH, Some(INTERFACE), "Notify", &args)
            .await?;
        let id: u32 = reply.body().deserialize()?;
        if self.shown.len() >= SHOWN_MAX && !self.shown.contains_key(&notification.key) {
            self.shown.clear();
        }
        self.shown.insert(notification.key.clone(), id);
        Ok(())
    }
}

/// At most [`TEXT_CHARS_MAX`] characters of `text`, on one line.
fn shorten(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(TEXT_CHARS_MAX + 1)
        .collect();
    if line.chars().count() > TEXT_CHARS_MAX {
        let mut cut: String = line.chars().take(TEXT_CHARS_MAX).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

/// `text` with the three characters the spec's markup reads escaped.
fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    fn message<'a>(text: &'a str, unread: u64) -> NewMessage<'a> {
        NewMessage {
            conversation: "Cellule de crise",
            group_id: "5c0e11",
            sender: "bob@interieur.gouv.fr",
            text,
            group: true,
            unread,
        }
    }

    #[test]
    fn a_notification_shows_no_text_unless_allowed() {
        let fr = I18n::new(Lang::Fr);
        let secret = "le code du coffre est 4512";
        let quiet = notification(&fr, &message(secret, 1), false);
        assert_eq!(quiet.summary, "Cellule de crise");
        assert_eq!(quiet.body, "Nouveau message");
        assert_eq!(quiet.key, "5c0e11");
        let args = notify_args(&quiet, 0, true);
        assert!(!format!("{args:?}").contains("4512"), "{args:?}");

        let several = notification(&fr, &message(secret, 3), false);
        assert_eq!(several.body, "3 nouveaux messages");
        assert_eq!(
            notification(&I18n::new(Lang::En), &message(secret, 3), false).body,
            "3 new messages"
        );

        let shown = notification(&fr, &message(secret, 1), true);
        assert!(
            shown.body.contains("bob@interieur.gouv.fr"),
            "{}",
            shown.body
        );
        assert!(shown.body.contains(secret), "{}", shown.body);
        let direct = NewMessage {
            group: false,
            ..message(secret, 1)
        };
        assert_eq!(notification(&fr, &direct, true).body, secret);
    }

    #[test]
    fn a_long_or_multiline_text_is_cut_to_one_short_line() {
        let long = format!("début\n{}", "é".repeat(500));
        let body = notification(
            &I18n::new(Lang::Fr),
            &NewMessage {
                group: false,
                ..message(&long, 1)
            },
            true,
        )
        .body;
        assert_eq!(body.chars().count(), TEXT_CHARS_MAX + 1);
        assert!(body.starts_with("début ") && body.ends_with('…'), "{body}");
    }

    #[test]
    fn the_call_is_the_specifications_notify() {
        let notification = Notification {
            key: "5c0e11".into(),
            summary: "bob@interieur.gouv.fr".into(),
            body: "<b>urgent</b> & co".into(),
            unread: 2,
        };
        let args = notify_args(&notification, 7, true);
        let call = zbus::Message::method_call(PATH, "Notify")
            .and_then(|m| m.destination(DESTINATION))
            .and_then(|m| m.interface(INTERFACE))
            .and_then(|m| m.build(&args))
            .expect("a valid call");
        let header = call.header();
        // The signature field the message carries on the wire, as the spec gives it.
        assert_eq!(header.signature().to_string_no_parens(), "susssasa{sv}i");
        assert_eq!(header.member().map(|m| m.as_str()), Some("Notify"));
        assert_eq!(header.interface().map(|i| i.as_str()), Some(INTERFACE));
        assert_eq!(header.destination().map(|d| d.as_str()), Some(DESTINATION));
        assert_eq!(header.path().map(|p| p.as_str()), Some(PATH));
        type Read = (
            String,
            u32,
            String,
            String,
            String,
            Vec<String>,
            HashMap<String, zbus::zvariant::OwnedValue>,
            i32,
        );
        let (app, replaces, icon, summary, body, actions, hints, expire): Read =
            call.body().deserialize().expect("readable back");
        assert_eq!((app.as_str(), replaces, icon.as_str()), (APP_ID, 7, APP_ID));
        assert_eq!(summary, "bob@interieur.gouv.fr");
        assert_eq!(
            body, "&lt;b&gt;urgent&lt;/b&gt; &amp; co",
            "markup is escaped"
        );
        assert!(actions.is_empty());
        assert_eq!(expire, -1);
        assert_eq!(u8::try_from(&hints["urgency"]).ok(), Some(1));
        assert_eq!(i32::try_from(&hints["x-relais-unread"]).ok(), Some(2));
        assert_eq!(
            <&str>::try_from(&hints["category"]).ok(),
            Some("im.received")
        );
        // A service that does not read markup gets the text as written.
        assert_eq!(notify_args(&notification, 0, false).4, "<b>urgent</b> & co");
    }

    #[test]
    fn without_a_bus_it_warns_once_and_then_stays_quiet() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = format!("unix:path={}", dir.path().join("no-bus").display());
        let notifier = Notifier::on_bus(&address);
        let started = std::time::Instant::now();
        for unread in 1..=(QUEUE_MAX as u64 * 3) {
            let tr = I18n::new(Lang::Fr);
            notifier.notify(notification(&tr, &message("x", unread), false));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "notify waited for the bus: {:?}",
            started.elapsed()
        );
        let mut warning = None;
        while warning.is_none() && started.elapsed() < CALL_TIMEOUT * 2 {
            warning = notifier.take_warning();
            std::thread::sleep(Duration::from_millis(20));
        }
        let warning = warning.expect("one warning");
        assert!(warning.contains("notifications are off"), "{warning}");
        for _ in 0..10 {
            notifier.notify(notification(&I18n::new(Lang::Fr), &message("x", 1), false));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(notifier.take_warning(), None, "one warning only");
    }
}
