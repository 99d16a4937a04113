//! The app on a device home with nothing in it: it opens at the welcome screen, whose
//! widgets a screen reader (and this test) finds by their names, in French by default and
//! in English when asked; and looking at it writes nothing into the home.

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use relais_desktop::i18n::Lang;
use relais_desktop::{App, Options};

/// How long the backend may take to look at an empty home.
const DEADLINE: Duration = Duration::from_secs(20);

fn app(home: &std::path::Path, lang: Lang, link: Option<&str>) -> Harness<'static, App> {
    let app = App::new(Options {
        home: home.to_owned(),
        link: link.map(|link| zeroize::Zeroizing::new(link.to_owned())),
        lang,
        utc_offset_seconds: 0,
    });
    Harness::builder()
        .with_size(egui::vec2(1000.0, 760.0))
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

/// Steps the app until `ready` holds; fails saying what it waited for.
fn step_until(
    harness: &mut Harness<'_, App>,
    what: &str,
    ready: impl Fn(&Harness<'_, App>) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while !ready(harness) {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_empty_home_opens_at_the_welcome_screen_in_french() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let home = dir.path().join("relais");
    std::fs::create_dir(&home).expect("home");
    let mut harness = app(&home, Lang::Fr, None);
    step_until(&mut harness, "the enrollment link's field", |h| {
        h.query_by_label("Lien d'inscription").is_some()
    });
    assert!(harness.query_by_label("Bienvenue dans Relais").is_some());
    harness.get_by_label("Phrase de passe");
    harness.get_by_label("Confirmez la phrase de passe");
    harness.get_by_label("Ne pas protéger cet ordinateur par une phrase de passe");
    let submit = harness.get_by_label("Inscrire cet appareil");
    assert!(submit.accesskit_node().is_disabled(), "nothing typed yet");

    harness.get_by_label("Lien d'inscription").focus();
    harness.step();
    harness
        .get_by_label("Lien d'inscription")
        .type_text("relais://enroll?v=1&server=x");
    harness.step();
    harness.get_by_label("Phrase de passe").focus();
    harness.step();
    harness
        .get_by_label("Phrase de passe")
        .type_text("une longue phrase de passe");
    harness.step();
    harness.get_by_label("Confirmez la phrase de passe").focus();
    harness.step();
    harness
        .get_by_label("Confirmez la phrase de passe")
        .type_text("une autre phrase de passe");
    harness.run_steps(2);
    assert!(
        harness
            .query_by_label("Les deux phrases de passe ne sont pas identiques.")
            .is_some(),
        "the mismatch is said"
    );
    assert!(
        harness
            .get_by_label("Inscrire cet appareil")
            .accesskit_node()
            .is_disabled()
    );
    assert_eq!(
        harness.state().model().enroll.link.as_str(),
        "relais://enroll?v=1&server=x"
    );
    let typed: Vec<_> = std::fs::read_dir(&home).expect("home lists").collect();
    assert!(
        typed.is_empty(),
        "the welcome screen wrote into the home: {typed:?}"
    );
}

#[test]
fn english_is_available_and_a_link_given_at_start_fills_the_field() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let link = "relais://enroll?v=1&server=relais.example:443";
    let mut harness = app(&dir.path().join("absent"), Lang::En, Some(link));
    step_until(&mut harness, "the enrollment link's field", |h| {
        h.query_by_label("Enrollment link").is_some()
    });
    assert_eq!(
        harness.get_by_label("Enrollment link").value().as_deref(),
        Some(link)
    );
    harness
        .get_by_label("Do not protect this computer with a passphrase")
        .click();
    harness.run_steps(2);
    assert!(
        harness.query_by_label_contains("Not recommended").is_some(),
        "choosing no passphrase is warned against"
    );
    assert!(
        !harness
            .get_by_label("Enroll this device")
            .accesskit_node()
            .is_disabled(),
        "a link and the explicit choice are enough to try"
    );
    assert!(!dir.path().join("absent").exists(), "no home was created");
}

/// What the timeline's tests draw: the timeline view alone, on a model filled by hand.
struct Window {
    model: relais_desktop::model::Model,
    tr: relais_desktop::i18n::I18n,
    backend: relais_desktop::backend::Backend,
}

fn timeline_window(
    home: &std::path::Path,
    total: i64,
    loaded: std::ops::RangeInclusive<i64>,
) -> Harness<'static, Window> {
    use relais_client::{ConversationSummary, HistoryEntry, HistoryPage, ReceivedMessage};
    use relais_desktop::backend::Update;
    let mut model = relais_desktop::model::Model::new(Lang::Fr, 0);
    model.apply(Update::Started {
        user: "alice@x".into(),
    });
    model.apply(Update::Conversations(vec![ConversationSummary {
        name: "ops".into(),
        group_id: "01".repeat(16),
        kind: "group".into(),
        unread: 0,
        after_read_mark: 0,
        last: None,
    }]));
    model.open(&"01".repeat(16));
    let entries = loaded
        .map(|n| HistoryEntry {
            position: n,
            message_id: format!("{n:x}"),
            message: ReceivedMessage {
                conversation: "ops".into(),
                sender: if n % 50 == 0 {
                    String::new()
                } else {
                    "bob@x".into()
                },
                sent_at_ms: 1_796_630_400_000 + n * 1_000,
                // Lengths vary, so rows wrap to different heights.
                text: format!("entry {n:06} {}", "mot ".repeat((n % 60) as usize)),
                event: n % 50 == 0,
            },
        })
        .collect();
    let page = HistoryPage {
        entries,
        total: total as u64,
    };
    model.apply(Update::History {
        group_id: "01".repeat(16),
        before: None,
        page,
    });
    let window = Window {
        model,
        tr: relais_desktop::i18n::I18n::new(Lang::Fr),
        backend: relais_desktop::backend::Backend::start(home.to_owned()),
    };
    Harness::builder()
        .with_size(egui::vec2(800.0, 600.0))
        .build_ui_state(
            |ui, w: &mut Window| {
                let mut cx = relais_desktop::views::Cx {
                    model: &mut w.model,
                    tr: &w.tr,
                    backend: &w.backend,
                };
                relais_desktop::views::timeline::show(ui, &mut cx);
            },
            window,
        )
}

/// Entries the accessibility tree holds: those laid out this frame.
fn laid_out(harness: &Harness<'_, Window>) -> Vec<String> {
    harness
        .query_all_by_label_contains("entry ")
        .filter_map(|node| node.value().or_else(|| node.accesskit_node().label()))
        .collect()
}

/// Steps until the wheel's smooth scrolling, which goes on for a few frames, has stopped.
fn settle(harness: &mut Harness<'_, Window>) {
    let mut still = 0;
    for _ in 0..500 {
        let offset = harness.state().model.timeline.last_offset;
        harness.step();
        let now = harness.state().model.timeline.last_offset;
        still = if now == offset { still + 1 } else { 0 };
        if still == 5 {
            return;
        }
    }
    panic!("the view kept scrolling");
}

fn wheel(harness: &mut Harness<'_, Window>, up_points: f32) {
    harness.hover_at(egui::pos2(400.0, 300.0));
    harness.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, up_points),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: egui::Modifiers::NONE,
    });
    harness.run_steps(3);
}

#[test]
fn a_long_timeline_lays_out_only_what_is_in_view_and_starts_at_the_newest() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut harness = timeline_window(&dir.path().join("absent"), 100_000, 1..=100_000);
    harness.run_steps(4);
    let shown = laid_out(&harness);
    assert!(
        !shown.is_empty() && shown.len() < 60,
        "{} entries laid out for a 600-point window",
        shown.len()
    );
    assert!(
        shown.iter().any(|t| t.starts_with("entry 100000")),
        "the newest entry is in view: {shown:?}"
    );
    assert!(!shown.iter().any(|t| t.starts_with("entry 000001")));
    // Far up: still only a window's worth, and the heights measured on the way are kept.
    for _ in 0..20 {
        wheel(&mut harness, 5_000.0);
    }
    let shown = laid_out(&harness);
    assert!(shown.len() < 60, "{} entries laid out", shown.len());
    assert!(!harness.state().model.timeline.at_bottom);
    assert!(
        !shown.iter().any(|t| t.starts_with("entry 100000")),
        "scrolled away from the newest: {shown:?}"
    );
    let measured = harness
        .state()
        .model
        .timeline
        .entries
        .iter()
        .filter(|e| e.measured)
        .count();
    assert!(
        measured < 5_000,
        "{measured} of 100,000 entries were laid out"
    );
    // Shown at a given entry (a search result opens there): it is at the top of the view.
    settle(&mut harness);
    let timeline = &mut harness.state_mut().model.timeline;
    timeline.anchor = Some((50_000, 0.0));
    timeline.at_bottom = false;
    harness.run_steps(3);
    let shown = laid_out(&harness);
    assert!(
        shown.first().is_some_and(|t| t.starts_with("entry 050000")),
        "the entry asked for is at the top: {shown:?}"
    );
}

#[test]
fn older_pages_load_near_the_top_without_moving_what_is_read() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut harness = timeline_window(&dir.path().join("absent"), 1_000, 801..=1_000);
    harness.run_steps(4);
    assert!(
        !harness.state().model.timeline.loading_older,
        "at the bottom, far from the top"
    );
    // Up towards the oldest entry loaded: the page before it is asked for.
    for _ in 0..40 {
        wheel(&mut harness, 600.0);
        if harness.state().model.timeline.loading_older {
            break;
        }
    }
    assert!(
        harness.state().model.timeline.loading_older,
        "the page before was asked for"
    );
    settle(&mut harness);
    let before = harness
        .state()
        .model
        .timeline
        .anchor
        .expect("an entry at the top");
    let top_text = laid_out(&harness)
        .first()
        .cloned()
        .expect("entries in view");

    // The page arrives: older entries go above, and the view stays on what it showed.
    use relais_client::{HistoryEntry, HistoryPage, ReceivedMessage};
    let older = (601..=800)
        .map(|n| HistoryEntry {
            position: n,
            message_id: format!("{n:x}"),
            message: ReceivedMessage {
                conversation: "ops".into(),
                sender: "bob@x".into(),
                sent_at_ms: n * 1_000,
                text: format!("entry {n:06} {}", "long ".repeat((n % 90) as usize)),
                event: false,
            },
        })
        .collect();
    harness
        .state_mut()
        .model
        .apply(relais_desktop::backend::Update::History {
            group_id: "01".repeat(16),
            before: Some(801),
            page: HistoryPage {
                entries: older,
                total: 1_000,
            },
        });
    harness.run_steps(4);
    let timeline = &harness.state().model.timeline;
    assert_eq!(timeline.entries.len(), 400);
    assert_eq!(timeline.entries.front().map(|e| e.position), Some(601));
    let after = timeline.anchor.expect("an entry at the top");
    assert_eq!(after.0, before.0, "the same entry at the top");
    assert!(
        (after.1 - before.1).abs() < 1.0,
        "at the same place: {before:?} then {after:?}"
    );
    assert_eq!(laid_out(&harness).first(), Some(&top_text));
}

#[test]
fn the_arrow_keys_walk_a_long_conversation_list_and_keep_the_selection_in_view() {
    use relais_client::ConversationSummary;
    use relais_desktop::backend::Update;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut model = relais_desktop::model::Model::new(Lang::Fr, 0);
    model.apply(Update::Started {
        user: "alice@x".into(),
    });
    let list = (0..300u32)
        .map(|n| ConversationSummary {
            name: format!("groupe-{n:03}"),
            group_id: format!("{n:032x}"),
            kind: "group".into(),
            unread: 0,
            after_read_mark: 0,
            last: None,
        })
        .collect();
    model.apply(Update::Conversations(list));
    let window = Window {
        model,
        tr: relais_desktop::i18n::I18n::new(Lang::Fr),
        backend: relais_desktop::backend::Backend::start(dir.path().join("absent")),
    };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(320.0, 600.0))
        .build_ui_state(
            |ui, w: &mut Window| {
                let mut cx = relais_desktop::views::Cx {
                    model: &mut w.model,
                    tr: &w.tr,
                    backend: &w.backend,
                };
                relais_desktop::views::conversations::show(ui, &mut cx);
            },
            window,
        );
    // Only what fits is laid out.
    assert!(harness.query_by_label_contains("groupe-000").is_some());
    assert!(harness.query_by_label_contains("groupe-150").is_none());
    harness.get_by_label_contains("groupe-000").focus();
    harness.run_steps(2);
    for _ in 0..150 {
        harness.key_press(egui::Key::ArrowDown);
        harness.step();
    }
    harness.run_steps(2);
    assert_eq!(
        harness.state().model.selected,
        None,
        "walking the list opens nothing (opening would mark it read)"
    );
    let row = harness.get_by_label_contains("groupe-150");
    assert!(row.is_focused(), "150 rows down, with the keyboard focus");
    assert!(
        harness.query_by_label_contains("groupe-000").is_none(),
        "scrolled with it"
    );
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert_eq!(
        harness.state().model.selected.as_deref(),
        Some(format!("{:032x}", 150).as_str()),
        "Enter opens the focused row"
    );
    harness.key_press(egui::Key::ArrowUp);
    harness.run_steps(2);
    assert!(harness.get_by_label_contains("groupe-149").is_focused());
    assert_eq!(
        harness.state().model.selected.as_deref(),
        Some(format!("{:032x}", 150).as_str()),
        "still the one opened"
    );
}

#[test]
fn the_timeline_scrolls_from_the_keyboard() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut harness = timeline_window(&dir.path().join("absent"), 100_000, 1..=100_000);
    harness.run_steps(4);
    assert!(harness.state().model.timeline.at_bottom);
    let bottom = harness.state().model.timeline.last_offset;
    // Nothing has the focus: the keys are the timeline's.
    harness.key_press(egui::Key::PageUp);
    settle(&mut harness);
    let up = harness.state().model.timeline.last_offset;
    assert!(
        (bottom - up - 600.0 * 0.9).abs() < 60.0,
        "a screen up: from {bottom} to {up}"
    );
    assert!(!harness.state().model.timeline.at_bottom);
    harness.key_press(egui::Key::PageDown);
    settle(&mut harness);
    assert!(
        harness.state().model.timeline.at_bottom,
        "back at the newest"
    );
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Home);
    settle(&mut harness);
    let shown = laid_out(&harness);
    assert!(
        harness.state().model.timeline.last_offset < 1.0,
        "at the top: {shown:?}"
    );
    assert!(!shown.iter().any(|t| t.starts_with("entry 100000")));
    harness.key_press(egui::Key::End);
    settle(&mut harness);
    assert!(harness.state().model.timeline.at_bottom);
    assert!(
        laid_out(&harness)
            .iter()
            .any(|t| t.starts_with("entry 100000")),
        "the newest entry in view again"
    );
}

#[test]
fn closing_the_window_does_not_wait_for_a_relay_that_never_answers() {
    use relais_desktop::backend::{Backend, Request};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("temporary directory");
    let home = dir.path().join("relais");
    std::fs::create_dir(&home).expect("home");
    let link = relais_client::EnrollLink::new(
        &format!("127.0.0.1:{port}"),
        "alice@interieur.gouv.fr",
        "ABCD-EFGH-JKMN-PQRS",
        &format!("sha256:{}", "A".repeat(43)),
    )
    .expect("a well-formed link");
    let backend = Backend::start(home);
    backend.request(Request::Enroll {
        link: link.to_uri(),
        passphrase: None,
    });
    // The relay takes the connection and says nothing: the enrollment hangs in its TLS
    // handshake.
    let deadline = Instant::now() + DEADLINE;
    let _held = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the backend never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let closing = Instant::now();
    drop(backend);
    let waited = closing.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "closing waited {waited:?} for the stuck enrollment"
    );
}
