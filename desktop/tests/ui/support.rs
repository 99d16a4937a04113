//! What the flows share: a relay with enrollment links, its users on the `relais` command
//! line, the app in a kittest harness on a home of its own, and the ways a person (or a
//! screen reader) reaches its widgets: by accessible name, with Tab, Enter and Space.
//!
//! The app's backend works on a thread of its own against the real relay, so nothing it
//! shows comes within a fixed number of frames: [`run_until`] pumps frames until a condition
//! holds or a deadline passes, and then says what it waited for and what the window showed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use egui::accesskit::Role;
pub use egui_kittest::kittest::{NodeT as _, Queryable as _};
use egui_kittest::{Harness, Node};
use relais_desktop::i18n::{I18n, Lang};
use relais_desktop::{App, Options};
use relais_testkit::Daemon;

/// How long a flow waits for the app or the relay before it fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// The window's size in the tests: the app's own default.
pub const WINDOW: egui::Vec2 = egui::vec2(1100.0, 720.0);
/// Most Tab presses a widget may be away from the focus: past it, it is not reachable
/// from the keyboard in any useful sense.
const TABS_MAX: usize = 60;
/// Real time between two frames while waiting: the backend and the relay need it, the
/// harness's own clock does not.
const FRAME_GAP: Duration = Duration::from_millis(15);

/// The app in its harness, as the tests drive it.
pub type Window = Harness<'static, App>;

/// The French catalogue, the app's default: what the tests look widgets up by.
pub fn fr() -> I18n {
    I18n::new(Lang::Fr)
}

/// A relaisd over real TLS whose enrollment links name its real address, and the
/// directory the tests' homes live in.
pub struct Relay {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
}

impl Relay {
    /// Starts a relay listening on a free port of the loopback, which its links name.
    pub fn start() -> Relay {
        let dir = relais_testkit::service_tempdir();
        let port = relais_testkit::free_port();
        let config = format!(
            "[listen]\nclient = \"127.0.0.1:{port}\"\n\n[server]\npublic_address = \"127.0.0.1:{port}\"\n"
        );
        let daemon = Daemon::start(&dir.path().join("relay"), &config);
        Relay { daemon, dir }
    }

    /// A directory for a home (not created: enrolling creates it).
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates `user` and returns the enrollment link `relaisd admin user add --link`
    /// printed for them.
    pub fn link_for_new_user(&self, user: &str) -> String {
        link_in(&self.daemon.admin(&["user", "add", user, "--link"]))
    }

    /// Creates `user` and enrolls a device for them with the command line, in `home`.
    pub fn cli_user(&self, user: &str) -> Cli {
        let code = self.daemon.add_user(user);
        self.cli_enroll(user, &code, &self.home(user))
    }

    /// Enrolls another device of `user` with the command line, from an operator's code: a
    /// device the user may not know about, as a ghost device would be.
    pub fn cli_device(&self, user: &str, home: &str) -> Cli {
        let code = self.daemon.issue_code(user);
        self.cli_enroll(user, &code, &self.home(home))
    }

    fn cli_enroll(&self, user: &str, code: &str, home: &Path) -> Cli {
        let cli = Cli {
            home: home.to_owned(),
            user: format!("{user}@localhost"),
        };
        let ca = self.daemon.ca.to_str().expect("utf-8 path");
        let server = self.daemon.server.as_str();
        let args = [
            "enroll", "--server", server, "--ca", ca, "--user", user, "--code", code,
        ];
        cli.run(&args);
        cli
    }
}

/// The `relais://enroll?…` link in what a command printed.
pub fn link_in(printed: &str) -> String {
    printed
        .split_whitespace()
        .find(|word| word.starts_with("relais://enroll?"))
        .unwrap_or_else(|| panic!("no enrollment link in:\n{printed}"))
        .to_owned()
}

/// A device on the `relais` command line: another user, or another device of the app's.
pub struct Cli {
    pub home: PathBuf,
    /// `name@localhost`.
    pub user: String,
}

impl Cli {
    /// Runs `relais --home HOME ARGS…`, which must succeed; returns what it printed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.run_raw(args);
        assert!(
            out.status.success(),
            "relais {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn run_raw(&self, args: &[&str]) -> Output {
        Command::new(relais_testkit::clients::relais_cli())
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env_remove("RELAIS_PASSPHRASE_FILE")
            .env_remove("RELAIS_KEY_FILE")
            .stdin(Stdio::null())
            .output()
            .expect("run relais")
    }

    /// Receives until a line with `text` arrives (or the wait is over); returns every line
    /// received, which must hold it.
    pub fn receive_text(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut received = String::new();
        while Instant::now() < deadline {
            received.push_str(&self.run(&["recv", "--wait", "2"]));
            if received
                .lines()
                .any(|line| line.ends_with(&format!("\t{text}")))
            {
                return received;
            }
        }
        panic!(
            "{} never received {text:?}; it received:\n{received}",
            self.user
        )
    }

    /// The safety number this device shows for `contact`, digits only.
    pub fn safety_number(&self, contact: &str) -> String {
        let shown = self.run(&["verify", contact]);
        digits_of_number(&shown).unwrap_or_else(|| panic!("no 60-digit safety number in:\n{shown}"))
    }
}

/// The 60 digits of a safety number in a text that shows one (grouped by spaces or not).
pub fn digits_of_number(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let digits: String = line.chars().filter(char::is_ascii_digit).collect();
        let only_digits = line
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_whitespace());
        (only_digits && digits.len() == 60).then_some(digits)
    })
}

/// The app on `home`, in French, in a harness the size of its window.
pub fn window(home: &Path, link: Option<String>) -> Window {
    let app = App::new(Options {
        home: home.to_owned(),
        link: link.map(zeroize::Zeroizing::new),
        lang: Lang::Fr,
        // Times in UTC, whatever the machine's zone: the screenshots depend on it.
        utc_offset_seconds: 0,
    });
    Harness::builder()
        .with_size(WINDOW)
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

/// Pumps frames until `done` holds, for at most `wait`; then fails, saying `what` it waited
/// for and what the window showed. When it holds, every input on screen must have an
/// accessible name (kittest's check), since that is how a screen reader reaches it.
#[track_caller]
pub fn run_until(window: &mut Window, wait: Duration, what: &str, done: impl Fn(&Window) -> bool) {
    let deadline = Instant::now() + wait;
    loop {
        window.step();
        if done(window) {
            window.check_accessibility();
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "waited {wait:?} for {what}; the window showed:\n{}",
                shown(window)
            );
        }
        std::thread::sleep(FRAME_GAP);
    }
}

/// Whether a node labelled exactly `label` is on screen (one or more).
pub fn has_label(window: &Window, label: &str) -> bool {
    window.query_all_by_label(label).next().is_some()
}

/// Waits for a node labelled exactly `label`.
#[track_caller]
pub fn wait_for_label(window: &mut Window, label: &str) {
    run_until(window, WAIT, &format!("{label:?} on screen"), |w| {
        has_label(w, label)
    });
}

/// Presses Tab until the focused widget is the one `matches` picks (`what` in messages),
/// as someone without a mouse moves through the window.
#[track_caller]
pub fn tab_to(window: &mut Window, what: &str, matches: impl Fn(&Node<'_>) -> bool) {
    for _ in 0..TABS_MAX {
        let focused = window.query_by(|node| node.is_focused());
        if focused.is_some_and(|node| matches(&node)) {
            return;
        }
        window.key_press(egui::Key::Tab);
        window.step();
    }
    panic!(
        "{what} was not reached with {TABS_MAX} presses of Tab; the window showed:\n{}",
        shown(window)
    );
}

/// Tabs to the text field named `label` and types `text` into it, in place of what it
/// held (Ctrl+A, Backspace, then the text).
#[track_caller]
pub fn type_into(window: &mut Window, label: &str, text: &str) {
    tab_to(window, &format!("the field {label:?}"), |node| {
        is_text_field(node) && node.accesskit_node().label().as_deref() == Some(label)
    });
    window.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    window.key_press(egui::Key::Backspace);
    window.step();
    window.get_by(|node| node.is_focused()).type_text(text);
    window.step();
}

/// Tabs to the button (or checkbox, or link) named `label` and presses it with the
/// keyboard (Enter for a button, Space for a checkbox).
#[track_caller]
pub fn press(window: &mut Window, label: &str) {
    tab_to(window, &format!("the control {label:?}"), |node| {
        !is_text_field(node) && node.accesskit_node().label().as_deref() == Some(label)
    });
    let role = window
        .get_by(|node| node.is_focused())
        .accesskit_node()
        .role();
    let key = if role == Role::CheckBox {
        egui::Key::Space
    } else {
        egui::Key::Enter
    };
    window.key_press(key);
    window.step();
}

fn is_text_field(node: &Node<'_>) -> bool {
    matches!(
        node.accesskit_node().role(),
        Role::TextInput | Role::MultilineTextInput | Role::PasswordInput | Role::SearchInput
    )
}

/// The window's accessibility tree as a screen reader would read it: each named node's
/// role and name, indented by depth, for failure messages.
pub fn shown(window: &Window) -> String {
    let mut lines = Vec::new();
    for node in window.root().children_recursive() {
        let node = node.accesskit_node();
        let name = node.label().or_else(|| node.value()).unwrap_or_default();
        if name.trim().is_empty() {
            continue;
        }
        let depth = std::iter::successors(node.parent(), |p| p.parent()).count();
        lines.push(format!(
            "{}{:?} {name:?}",
            "  ".repeat(depth.min(12)),
            node.role()
        ));
    }
    lines.join("\n")
}

/// Enrolls the app's device from `link` the way an official does: the link pasted into
/// its field, the passphrase typed twice (or "without a passphrase" ticked), then Enter;
/// waits for the main window.
#[track_caller]
pub fn enroll_with_keyboard(window: &mut Window, link: &str, passphrase: Option<&str>) {
    let tr = fr();
    run_until(window, WAIT, "the welcome screen", |w| {
        has_label(w, &tr.t("enroll-title"))
    });
    type_into(window, &tr.t("enroll-link-label"), link);
    match passphrase {
        Some(passphrase) => {
            type_into(window, &tr.t("enroll-passphrase-label"), passphrase);
            type_into(window, &tr.t("enroll-confirm-label"), passphrase);
        }
        None => press(window, &tr.t("enroll-without-passphrase")),
    }
    press(window, &tr.t("enroll-submit"));
    wait_for_main(window);
}

/// Waits until the main window shows, with its toolbar.
#[track_caller]
pub fn wait_for_main(window: &mut Window) {
    let tr = fr();
    run_until(window, WAIT, "the main window", |w| {
        has_label(w, &tr.t("page-devices")) && w.state().model().user.is_some()
    });
}

/// A user of the app: its window on a home enrolled from a link (without a passphrase: the
/// enrollment test covers one).
pub struct Official {
    pub window: Window,
}

impl Official {
    /// Creates `user` on `relay` and enrolls the app's device from the link.
    pub fn enroll(relay: &Relay, user: &str) -> Official {
        let link = relay.link_for_new_user(user);
        let home = relay.home(&format!("{user}-desktop"));
        let mut window = window(&home, None);
        enroll_with_keyboard(&mut window, &link, None);
        Official { window }
    }

    /// Opens the conversation named `name` from the list, with the keyboard: Tab to its
    /// row, Enter.
    #[track_caller]
    pub fn open_conversation(&mut self, name: &str) {
        run_until(
            &mut self.window,
            WAIT,
            &format!("{name:?} in the list"),
            |w| conversation_row(w, name).is_some(),
        );
        let row = format!("{name}, ");
        tab_to(
            &mut self.window,
            &format!("the conversation {name:?}"),
            |node| {
                node.accesskit_node()
                    .label()
                    .is_some_and(|label| label.starts_with(&row))
            },
        );
        self.window.key_press(egui::Key::Enter);
        run_until(&mut self.window, WAIT, &format!("{name:?} open"), |w| {
            w.state()
                .model()
                .selected_conversation()
                .is_some_and(|c| c.name == name)
        });
    }
}

/// The accessible name of the list's row for the conversation `name` ("name, 1 non lu,
/// bob: Bonjour"), if it is in the list.
pub fn conversation_row(window: &Window, name: &str) -> Option<String> {
    let row = format!("{name}, ");
    window
        .query_all_by(|node| node.label().is_some_and(|label| label.starts_with(&row)))
        .next()
        .and_then(|node| node.accesskit_node().label())
}
