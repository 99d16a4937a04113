//! The app: the model, the catalogue and the backend, and the frame that draws the screen
//! the model is on (welcome, unlock, or the main window with its pages).
//!
//! [`App::show`] draws one frame into a [`egui::Ui`], so a test drives the real app with
//! `egui_kittest::Harness::new_ui_state(|ui, app| app.show(ui), app)`; the binary runs it
//! through [`eframe::App`].

use std::path::PathBuf;

use egui::{Key, KeyboardShortcut, Modifiers};
use relais_client::ConnectionState;
use zeroize::Zeroizing;

use crate::backend::{Backend, SETTINGS_FILE, Update};
use crate::i18n::{I18n, Lang};
use crate::model::{Model, Page, Screen};
use crate::notify::{self, Notifier};
use crate::timings::{self, Timings};
use crate::views::{self, Cx};

/// How the app starts.
#[derive(Clone)]
pub struct Options {
    /// The device's home directory (as `relais --home`).
    pub home: PathBuf,
    /// An enrollment link given on the command line (or by the desktop's link handler): a
    /// secret, wiped from memory when dropped and never shown by `Debug`.
    pub link: Option<Zeroizing<String>>,
    pub lang: Lang,
    /// The time zone's offset from UTC, for the times shown (`main` reads it at start;
    /// tests give 0 so that screenshots do not depend on the machine).
    pub utc_offset_seconds: i32,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("home", &self.home)
            .field("link", &self.link.as_ref().map(|_| "…"))
            .field("lang", &self.lang)
            .field("utc_offset_seconds", &self.utc_offset_seconds)
            .finish()
    }
}

/// The running app.
pub struct App {
    model: Model,
    tr: I18n,
    backend: Backend,
    /// The window title last set, so that it is sent only when it changes.
    title: String,
    /// The benchmark's hook (`RELAIS_DESKTOP_TIMINGS`), absent otherwise.
    timings: Option<Timings>,
    /// Desktop notifications of new messages while the window is not in front.
    notifier: Notifier,
    /// The settings file, named in the warning when it cannot be used.
    settings_path: PathBuf,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// The toolbar's pages with their keyboard shortcuts (Ctrl+digit, in the toolbar's order).
const PAGE_KEYS: [(Page, Key); 6] = [
    (Page::Conversation, Key::Num1),
    (Page::Contact, Key::Num2),
    (Page::Devices, Key::Num3),
    (Page::Group, Key::Num4),
    (Page::Search, Key::Num5),
    (Page::Settings, Key::Num6),
];

impl App {
    /// Starts the backend on the home, which opens it; the first frames show the screen
    /// the home calls for.
    pub fn new(options: Options) -> App {
        let mut model = Model::new(options.lang, options.utc_offset_seconds);
        if let Some(link) = options.link {
            model.enroll.link = Zeroizing::new(link.trim().to_owned());
        }
        App {
            settings_path: options.home.join(SETTINGS_FILE),
            tr: I18n::new(model.lang),
            backend: Backend::start(options.home),
            model,
            title: String::new(),
            timings: Timings::from_env(),
            notifier: Notifier::session(),
        }
    }

    /// What the window shows, for tests that look past the accessibility tree.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, for tests that set what the window shows without a relay (the
    /// screenshots' fixed content): they apply the backend's own updates to it.
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Takes what the backend sent and does what it calls for.
    fn take_updates(&mut self, ctx: &egui::Context) {
        // Unknown (no window system said) counts as in front: no notification.
        let in_front = ctx.input(|i| i.viewport().focused).unwrap_or(true);
        // Back in front: the open conversation, if the user is at its bottom, is read now.
        if let Some(request) = self.model.set_in_front(in_front) {
            self.backend.request(request);
        }
        for update in self.backend.poll() {
            // The settings file is the settings page's to read (the model is below it).
            let update = match update {
                Update::SettingsFile(file) => {
                    views::settings::load_into(&mut self.model, &self.settings_path, file);
                    continue;
                }
                update => update,
            };
            let arrived = notify::arrived(&update, self.model.user.as_deref());
            for request in self.model.apply(update) {
                self.backend.request(request);
            }
            if let Some(arrived) = arrived
                && !in_front
            {
                self.notifier.announce(&self.model, &self.tr, &arrived);
            }
        }
        if let Some(warning) = self.notifier.take_warning() {
            // Once per run at most; a desktop session keeps a program's standard error.
            eprintln!("relais-desktop: {warning}");
        }
    }

    /// Draws one frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.backend.set_repaint(ui.ctx());
        self.take_updates(ui.ctx());
        if self.model.lang != self.tr.lang() {
            self.tr = I18n::new(self.model.lang);
        }
        self.set_title(ui.ctx());
        let mut cx = Cx {
            model: &mut self.model,
            tr: &self.tr,
            backend: &self.backend,
        };
        match cx.model.screen {
            Screen::Starting => starting(ui, &cx),
            Screen::Enroll => centred(ui, |ui| views::enroll::show(ui, &mut cx)),
            Screen::Unlock => centred(ui, |ui| views::unlock::show(ui, &mut cx)),
            Screen::Main => main_window(ui, &mut cx),
        }
        // A link for a new device is kept only while its page shows it, whatever took the
        // window elsewhere (a shortcut, a search result, the session's end).
        if cx.model.screen != Screen::Main || cx.model.page != Page::Devices {
            views::devices::left(ui.ctx(), cx.model);
        }
    }

    /// The window title: the app's name, and the unread count (the desktop's badge).
    fn set_title(&mut self, ctx: &egui::Context) {
        let unread = self.model.unread_total();
        let title = if unread == 0 {
            self.tr.t("window-title")
        } else {
            self.tr
                .t_args("window-title-unread", &[("count", unread.into())])
        };
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }
}

impl eframe::App for App {
    /// Runs even while the window is hidden, so results and events keep flowing in.
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.backend.set_repaint(ctx);
        self.take_updates(ctx);
        self.set_title(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.show(ui);
        if self.timings.is_some() {
            self.time_frame(ui.ctx(), frame.info().cpu_usage);
        }
    }

    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        if let Some(timings) = &mut self.timings {
            timings.before_frame(raw_input);
        }
    }
}

impl App {
    /// Tells the benchmark's hook what the frame showed, and opens the conversation its
    /// script asks for.
    fn time_frame(&mut self, ctx: &egui::Context, cpu_usage: Option<f32>) {
        let Some(timings) = &mut self.timings else {
            return;
        };
        let screen = timings::Screen {
            usable: self.model.screen == Screen::Main && !self.model.conversations.is_empty(),
            conversation_open: self.model.selected.is_some(),
            timeline_rows: self.model.timeline.entries.len(),
        };
        if timings.after_frame(ctx, cpu_usage, screen) == timings::Wish::OpenFirstConversation
            && let Some(first) = self.model.conversations.first().map(|c| c.group_id.clone())
        {
            for request in self.model.open(&first) {
                self.backend.request(request);
            }
        }
    }
}

fn starting(ui: &mut egui::Ui, cx: &Cx<'_>) {
    egui::CentralPanel::default().show(ui, |ui| {
        ui.centered_and_justified(|ui| {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(cx.tr.t("starting"));
            });
        });
    });
}

/// A screen of its own (welcome, unlock): a column in the middle of the window.
fn centred(ui: &mut egui::Ui, add: impl FnOnce(&mut egui::Ui)) {
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.vertical_centered(|ui| {
                ui.set_max_width(560.0);
                ui.add_space(24.0);
                add(ui);
            });
        });
    });
}

/// The main window: toolbar and connection on top, conversations on the left, the page in
/// the centre.
fn main_window(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    shortcuts(ui, cx);
    egui::Panel::top("toolbar").show(ui, |ui| toolbar(ui, cx));
    egui::Panel::left("conversations")
        .default_size(280.0)
        .min_size(200.0)
        .show(ui, |ui| views::conversations::show(ui, cx));
    egui::CentralPanel::default().show(ui, |ui| {
        problems(ui, cx);
        match cx.model.page {
            Page::Conversation => conversation_page(ui, cx),
            Page::Contact => views::contact::show(ui, cx),
            Page::Devices => views::devices::show(ui, cx),
            Page::Group => views::group::show(ui, cx),
            Page::Search => views::search::show(ui, cx),
            Page::Settings => views::settings::show(ui, cx),
        }
    });
}

/// The open conversation: its banners, its timeline, and the composer under it.
fn conversation_page(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    if cx.model.composing_key().is_none() {
        ui.centered_and_justified(|ui| ui.label(cx.tr.t("conversation-none-open")));
        return;
    }
    views::banner::show(ui, cx);
    egui::Panel::bottom("composer")
        .resizable(false)
        .show(ui, |ui| views::composer::show(ui, cx));
    egui::CentralPanel::default().show(ui, |ui| views::timeline::show(ui, cx));
}

/// Ctrl+1 to Ctrl+6 open the pages, Escape goes back to the conversation.
fn shortcuts(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    for (page, key) in PAGE_KEYS {
        let shortcut = KeyboardShortcut::new(Modifiers::COMMAND, key);
        if ui.input_mut(|i| i.consume_shortcut(&shortcut)) {
            cx.model.page = page;
        }
    }
    // A dialog open on the page takes Escape for itself (it closes the dialog).
    if cx.model.page != Page::Conversation
        && ui.memory(|m| m.top_modal_layer().is_none())
        && ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape))
    {
        cx.model.page = Page::Conversation;
    }
}

/// The pages, each a button with its shortcut in its tooltip, and the connection's state.
fn toolbar(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    ui.horizontal(|ui| {
        for (index, (page, _)) in PAGE_KEYS.iter().enumerate() {
            let name = cx.tr.t(page_message(*page));
            let selected = cx.model.page == *page;
            let button = ui.selectable_label(selected, &name).on_hover_text(
                cx.tr
                    .t_args("toolbar-shortcut", &[("key", (index + 1).into())]),
            );
            if button.clicked() {
                cx.model.page = *page;
            }
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            connection(ui, cx);
        });
    });
}

fn page_message(page: Page) -> &'static str {
    match page {
        Page::Conversation => "page-conversation",
        Page::Contact => "page-contact",
        Page::Devices => "page-devices",
        Page::Group => "page-group",
        Page::Search => "page-search",
        Page::Settings => "page-settings",
    }
}

/// Connected, reconnecting in N s, or ended with the reason.
fn connection(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let c = &cx.model.connection;
    let (text, colour) = match c.state {
        _ if cx.model.ended.is_some() => (ended_text(cx), ui.visuals().error_fg_color),
        None => (
            cx.tr.t("connection-connecting"),
            ui.visuals().weak_text_color(),
        ),
        Some(ConnectionState::Connected) => (
            cx.tr.t("connection-connected"),
            egui::Color32::from_rgb(0x1b, 0x7f, 0x3b),
        ),
        Some(ConnectionState::Disconnected) => (
            cx.tr.t("connection-disconnected"),
            ui.visuals().warn_fg_color,
        ),
        Some(ConnectionState::Reconnecting) => {
            let seconds = c.retry_at.map_or(0, |at| {
                at.saturating_duration_since(std::time::Instant::now())
                    .as_secs()
            });
            // Counting down needs a frame each second.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(500));
            (
                cx.tr.t_args(
                    "connection-reconnecting",
                    &[("seconds", (seconds + 1).into())],
                ),
                ui.visuals().warn_fg_color,
            )
        }
        Some(ConnectionState::Ended) => (ended_text(cx), ui.visuals().error_fg_color),
    };
    ui.label(egui::RichText::new(text).color(colour));
}

/// Why the session ended, in words that say what to do.
fn ended_text(cx: &Cx<'_>) -> String {
    match cx.model.connection.code.as_deref() {
        Some("DEVICE_REVOKED") => cx.tr.t("connection-ended-revoked"),
        Some("ACCOUNT_SUSPENDED") | Some("ACCOUNT_EXPIRED") => cx.tr.t("connection-ended-account"),
        Some("REPLACED") => cx.tr.t("connection-ended-replaced"),
        _ => cx.tr.t("connection-ended"),
    }
}

/// The errors waiting to be read, each with a button to dismiss it.
fn problems(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let mut dismissed = None;
    for (index, problem) in cx.model.problems.iter().enumerate() {
        egui::Frame::new()
            .fill(ui.visuals().extreme_bg_color)
            .inner_margin(6.0)
            .show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    views::banner::problem_label(ui, cx.tr, problem);
                    if ui.button(cx.tr.t("problem-dismiss")).clicked() {
                        dismissed = Some(index);
                    }
                });
            });
    }
    if let Some(index) = dismissed {
        cx.model.problems.remove(index);
    }
}
