//! The screenshots in `docs/desktop/`, rendered by the suite with kittest's snapshot
//! renderer (wgpu on Mesa's lavapipe) and compared with the committed pictures within
//! kittest's per-pixel tolerance, so that a visual change nobody intended fails here;
//! `UPDATE_SNAPSHOTS=true` draws them again after an intended one.
//!
//! What they show is fixed, so that the same code draws the same pixels: the app runs on an
//! empty home (no relay: nothing arrives by itself), and once it shows its welcome screen the
//! test gives its model what the backend would have given it (`Model::apply` with the
//! library's own types): fixed names, texts and times, long past (shown as full dates, in
//! UTC), and no random id on screen.

use std::path::Path;

use egui_kittest::SnapshotOptions;
use relais_client::{
    ConnectionState, ConversationSummary, Event, HistoryEntry, HistoryPage, QR_PREFIX,
    ReceivedMessage, SafetyNumber,
};
use relais_desktop::backend::Update;
use relais_desktop::model::{Page, Screen};

use super::support::*;

/// A safety number as the library gives it: 60 digits, fixed here.
const SAFETY_NUMBER: &str = "460208125311195910723137933746855169213539586857288524817315";
/// 2026-03-02 09:00 UTC, a Monday: every time shown is a few minutes after it.
const MORNING_MS: i64 = 1_772_442_000_000;
const MINUTE_MS: i64 = 60_000;

#[test]
fn the_conversation_list() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut window = prepared_window(&home);
    window.step();
    window.snapshot_options("conversations", &options());
}

#[test]
fn a_timeline_with_a_system_event() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut window = prepared_window(&home);
    open(&mut window, &group_id(1));
    window.step();
    window.snapshot_options("timeline", &options());
}

#[test]
fn a_contacts_verification_page() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut window = prepared_window(&home);
    let bob = "bob@interieur.gouv.fr";
    open(&mut window, &group_id(2));
    let model = window.state_mut().model_mut();
    model.page = Page::Contact;
    model.pages.contact = bob.into();
    let number = SAFETY_NUMBER.to_owned();
    apply(
        &mut window,
        Update::SafetyNumber {
            contact: bob.into(),
            confirmed: false,
            result: Ok(SafetyNumber {
                contact: bob.into(),
                qr_payload: format!("{QR_PREFIX}alice@interieur.gouv.fr:{bob}:{number}"),
                number,
                devices: vec!["d2df8e7f01020304".into(), "5c1a09b2e4f60718".into()],
                verified: false,
                changed_since_verified: false,
            }),
        },
    );
    window.step();
    window.snapshot_options("verification", &options());
}

/// Where the pictures live, and kittest's default per-pixel tolerance: lavapipe renders the
/// same bytes on every run, and the tolerance absorbs a Mesa update's rounding.
fn options() -> SnapshotOptions {
    let desktop = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = desktop
        .parent()
        .expect("desktop/ in the workspace")
        .join("docs/desktop");
    SnapshotOptions::new().output_path(docs)
}

/// The app on an empty home in `dir`, in the main window with the conversations below,
/// connected.
fn prepared_window(dir: &tempfile::TempDir) -> Window {
    let mut window = window(&dir.path().join("home"), None);
    // The backend finds the home empty first; only then is the model the test's.
    run_until(&mut window, WAIT, "the welcome screen", |w| {
        w.state().model().screen == Screen::Enroll
    });
    apply(
        &mut window,
        Update::Started {
            user: "alice@interieur.gouv.fr".into(),
        },
    );
    apply(&mut window, Update::Conversations(conversations()));
    apply(
        &mut window,
        Update::Event(Event::Connection {
            state: ConnectionState::Connected,
            reason: None,
            code: None,
            retry_in_ms: None,
        }),
    );
    window.step();
    window
}

/// Gives the model an update as the backend would, dropping the requests that follow from
/// it: there is no session to answer them.
fn apply(window: &mut Window, update: Update) {
    let _requests = window.state_mut().model_mut().apply(update);
}

/// Opens the conversation `group_id` with its history page.
fn open(window: &mut Window, group_id: &str) {
    let model = window.state_mut().model_mut();
    let _requests = model.open(group_id);
    let page = history();
    apply(
        window,
        Update::History {
            group_id: group_id.to_owned(),
            before: None,
            page,
        },
    );
}

/// A group id, as the library gives it (hex), fixed.
fn group_id(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

fn message(
    conversation: &str,
    sender: &str,
    minute: i64,
    text: &str,
    event: bool,
) -> ReceivedMessage {
    ReceivedMessage {
        conversation: conversation.into(),
        sender: sender.into(),
        sent_at_ms: MORNING_MS + minute * MINUTE_MS,
        text: text.into(),
        event,
    }
}

/// Six conversations: groups and direct ones, read and unread, newest activity first. Each
/// row: name, kind, unread entries, the last entry's sender (empty for a line the library
/// wrote), its minute after nine and its text.
const CONVERSATIONS: [(&str, &str, u64, &str, i64, &str); 6] = [
    (
        "Cellule de crise",
        "group",
        2,
        "bob@interieur.gouv.fr",
        42,
        "Point de situation à 18 h, salle 2.",
    ),
    (
        "bob@interieur.gouv.fr",
        "direct",
        0,
        "alice@interieur.gouv.fr",
        37,
        "Je vous envoie la note avant midi.",
    ),
    (
        "Préfecture — communication",
        "group",
        5,
        "claire@interieur.gouv.fr",
        30,
        "Le communiqué est validé par le cabinet.",
    ),
    (
        "david@economie.gouv.fr",
        "direct",
        0,
        "david@economie.gouv.fr",
        12,
        "Merci, bien reçu.",
    ),
    (
        "Astreinte week-end",
        "group",
        0,
        "",
        5,
        "emma@interieur.gouv.fr a rejoint la conversation",
    ),
    (
        "francois@interieur.gouv.fr",
        "direct",
        1,
        "francois@interieur.gouv.fr",
        1,
        "Pouvez-vous me rappeler ?",
    ),
];

/// [`CONVERSATIONS`] as the library lists them, group ids 1 to 6.
fn conversations() -> Vec<ConversationSummary> {
    (1..)
        .zip(CONVERSATIONS)
        .map(
            |(n, (name, kind, unread, sender, minute, text))| ConversationSummary {
                name: name.into(),
                group_id: group_id(n),
                kind: kind.into(),
                unread,
                after_read_mark: unread,
                last: Some(message(name, sender, minute, text, sender.is_empty())),
            },
        )
        .collect()
}

/// The crisis cell's morning: texts, and the line the library writes when a member's new
/// device joins (the device shown by the start of its key, as the library writes it).
fn history() -> HistoryPage {
    let cellule = "Cellule de crise";
    let lines = [
        (
            "alice@interieur.gouv.fr",
            20,
            "Bonjour à tous, la cellule est ouverte.",
            false,
        ),
        (
            "claire@interieur.gouv.fr",
            22,
            "Présente. J'apporte la carte des coupures.",
            false,
        ),
        (
            "",
            25,
            "bob@interieur.gouv.fr a un nouvel appareil d2df8e7f",
            true,
        ),
        (
            "bob@interieur.gouv.fr",
            31,
            "Depuis mon ordinateur portable : les équipes sont en route, arrivée prévue vers 11 h. \
             Je fais un point dès qu'elles sont sur place.",
            false,
        ),
        ("alice@interieur.gouv.fr", 40, "Merci Bob.", false),
        (
            "bob@interieur.gouv.fr",
            42,
            "Point de situation à 18 h, salle 2.",
            false,
        ),
    ];
    let entries: Vec<HistoryEntry> = lines
        .iter()
        .enumerate()
        .map(|(i, (sender, minute, text, event))| HistoryEntry {
            position: i as i64 + 1,
            message_id: format!("{:032x}", i + 1),
            message: message(cellule, sender, *minute, text, *event),
        })
        .collect();
    HistoryPage {
        total: entries.len() as u64,
        entries,
    }
}
