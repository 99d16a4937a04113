//! The settings page, and the small file that keeps the app's own settings: the language
//! (switched live), notifications and whether they show message texts. "Require verified
//! contacts" is the device's setting, the library's, which refuses to send into a
//! conversation with a contact whose devices changed since the user verified them: the page
//! reads and changes it through the session, and the composer's check follows it.
//!
//! The file, `desktop.toml` in the device's home, holds nothing secret (no name, no text,
//! no key). The backend reads it once as the app starts and writes it whole through a
//! temporary file (0600) and a rename, both off the UI thread, so that a crash leaves the
//! old settings or the new ones. A missing file means the defaults; an unreadable or
//! malformed one means the defaults too, with a warning that says so, and is replaced the
//! next time the user changes a setting.

use serde::{Deserialize, Serialize};

use super::Cx;
use super::banner::problem_label;
use crate::backend::{Problem, Request};
use crate::i18n::Lang;
use crate::model::{Loaded, Model, Settings};

/// The file as written: every key optional, so that a file from an older version (or one
/// edited by hand) keeps the defaults for what it lacks, and unknown keys (a newer
/// version's, or the `require_verified` of earlier builds, now the library's) are ignored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    language: Option<String>,
    notifications: Option<bool>,
    notification_text: Option<bool>,
}

/// Takes the settings file as the backend read it at start (`Update::SettingsFile`): the
/// language chosen there replaces the environment's, and a file that cannot be used is
/// said in a warning that names it.
pub fn load_into(model: &mut Model, path: &std::path::Path, file: Result<Option<String>, Problem>) {
    let parsed = file.and_then(|text| match text {
        None => Ok(Settings::default()),
        Some(text) => parse(&text).map_err(|mut problem| {
            problem.args.push(("path", path.display().to_string()));
            problem
        }),
    });
    match parsed {
        Ok(settings) => {
            if let Some(language) = settings.language {
                model.lang = language;
            }
            model.pages.settings = settings;
        }
        Err(problem) => {
            model.pages.settings = Settings::default();
            model.show_problem(problem);
        }
    }
}

/// The settings in a file's text, or why it cannot be used (a catalogue message, with the
/// TOML parser's own words as its detail).
pub fn parse(text: &str) -> Result<Settings, Problem> {
    let file: File = toml::from_str(text).map_err(|e| {
        let mut problem = Problem::new("settings-bad-file-malformed");
        problem.detail = Some(e.message().to_owned());
        problem
    })?;
    let defaults = Settings::default();
    let language = match file.language.as_deref() {
        None => None,
        Some(tag) => Some(Lang::parse(tag).ok_or_else(|| {
            let mut problem = Problem::new("settings-bad-file-language");
            problem.args.push(("language", tag.to_owned()));
            problem
        })?),
    };
    Ok(Settings {
        language,
        notifications: file.notifications.unwrap_or(defaults.notifications),
        notification_text: file.notification_text.unwrap_or(defaults.notification_text),
    })
}

/// The settings file's text for `settings`.
pub fn to_text(settings: &Settings) -> String {
    let file = File {
        language: settings.language.map(|l| l.code().to_owned()),
        notifications: Some(settings.notifications),
        notification_text: Some(settings.notification_text),
    };
    // Three plain keys always serialise.
    let keys = toml::to_string(&file).unwrap_or_default();
    format!("# Relais desktop settings: nothing secret; rewritten by the app.\n{keys}")
}

/// The settings page: each change applies at once and is saved by the backend (the
/// library's "require verified contacts" by the session).
pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    let before = cx.model.pages.settings;
    let mut settings = before;
    ui.heading(tr.t("settings-title"));
    ui.add_space(8.0);

    ui.label(egui::RichText::new(tr.t("settings-language")).strong());
    let mut lang = cx.model.lang;
    ui.horizontal(|ui| {
        ui.radio_value(&mut lang, Lang::Fr, tr.t("settings-language-fr"));
        ui.radio_value(&mut lang, Lang::En, tr.t("settings-language-en"));
    });
    if lang != cx.model.lang {
        // The app speaks it from the next frame on.
        cx.model.lang = lang;
        settings.language = Some(lang);
    }
    ui.add_space(12.0);

    ui.label(egui::RichText::new(tr.t("settings-notifications-heading")).strong());
    ui.checkbox(&mut settings.notifications, tr.t("settings-notifications"));
    ui.add_enabled_ui(settings.notifications, |ui| {
        ui.checkbox(
            &mut settings.notification_text,
            tr.t("settings-notification-text"),
        );
    });
    ui.label(egui::RichText::new(tr.t("settings-notification-text-hint")).weak());
    ui.add_space(12.0);

    require_verified(ui, cx);

    if settings != before {
        cx.model.pages.settings = settings;
        cx.backend.request(Request::SaveSettings {
            text: to_text(&settings),
        });
    }
}

/// The library's "require verified contacts": read when missing, changed through the
/// session, shown as it is stored (the box follows the answer, not the click).
fn require_verified(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    ui.label(egui::RichText::new(tr.t("settings-trust-heading")).strong());
    let label = tr.t("settings-require-verified");
    let pages = &mut cx.model.pages;
    let set = match &pages.require_verified {
        Loaded::Nothing => {
            pages.require_verified = Loaded::Loading;
            cx.backend.request(Request::RequireVerified { set: None });
            None
        }
        Loaded::Loading => {
            ui.add_enabled(false, egui::Checkbox::new(&mut false, label));
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("settings-require-verified-loading"));
            });
            None
        }
        Loaded::Failed(problem) => {
            problem_label(ui, tr, problem);
            if ui.button(tr.t("settings-require-verified-retry")).clicked() {
                pages.require_verified = Loaded::Nothing;
            }
            None
        }
        Loaded::Ready(on) => {
            let mut on = *on;
            ui.checkbox(&mut on, label).changed().then_some(on)
        }
    };
    ui.label(egui::RichText::new(tr.t("settings-require-verified-hint")).weak());
    if let Some(on) = set {
        pages.require_verified = Loaded::Loading;
        cx.backend
            .request(Request::RequireVerified { set: Some(on) });
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::{Backend, SETTINGS_BYTES_MAX, SETTINGS_FILE, Update};

    /// What the backend read of the settings file as it opened `home`.
    fn read_by_backend(home: &Path) -> Result<Option<String>, Problem> {
        let backend = Backend::start(home.to_owned());
        let started = Instant::now();
        loop {
            for update in backend.poll() {
                if let Update::SettingsFile(file) = update {
                    return file;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never read");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What a model starting on `home` shows: its settings and the warnings.
    fn started_on(home: &Path) -> Model {
        let mut model = Model::new(Lang::Fr, 0);
        let file = read_by_backend(home);
        load_into(&mut model, &home.join(SETTINGS_FILE), file);
        model
    }

    /// The backend writes what the page asks for and reads it back as the app starts: the
    /// same settings, from a file only its owner may read.
    #[test]
    fn settings_survive_a_round_trip_in_a_private_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = dir.path().join("home");
        let model = started_on(&home);
        assert_eq!(
            model.pages.settings,
            Settings::default(),
            "no file: defaults"
        );
        assert!(model.problems.is_empty());
        let defaults = Settings::default();
        assert!(defaults.notifications && !defaults.notification_text);
        assert!(defaults.language.is_none());

        let chosen = Settings {
            language: Some(Lang::En),
            notifications: false,
            notification_text: true,
        };
        let backend = Backend::start(home.clone());
        backend.request(Request::SaveSettings {
            text: to_text(&chosen),
        });
        let path = home.join(SETTINGS_FILE);
        let started = Instant::now();
        while std::fs::read_to_string(&path).map_or(true, |t| parse(&t) != Ok(chosen)) {
            assert!(started.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(backend);
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home), 0o700);
        assert!(!home.join(format!("{SETTINGS_FILE}.new")).exists());

        // Into a model: the language chosen wins over the environment's.
        let model = started_on(&home);
        assert_eq!(model.lang, Lang::En);
        assert_eq!(model.pages.settings, chosen);
        assert!(model.problems.is_empty());
    }

    /// Each way a file can be unusable has its own message in the user's language (the
    /// parser's English words only as a detail), and the defaults apply.
    #[test]
    fn a_bad_file_gives_the_defaults_and_says_why_in_the_catalogue() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(SETTINGS_FILE);
        let written = |bytes: &[u8]| std::fs::write(&path, bytes).expect("written");
        let cases: [(&[u8], &str); 5] = [
            (
                b"notifications = \"maybe\"\n",
                "settings-bad-file-malformed",
            ),
            (b"language = \"de\"\n", "settings-bad-file-language"),
            (b"this is not toml", "settings-bad-file-malformed"),
            (&[0xff, 0xfe, 0x00], "settings-bad-file-not-text"),
            (
                &[b'#'; SETTINGS_BYTES_MAX as usize + 1],
                "settings-bad-file-too-large",
            ),
        ];
        for (bytes, id) in cases {
            written(bytes);
            let model = started_on(dir.path());
            assert_eq!(model.pages.settings, Settings::default(), "{id}");
            assert_eq!(model.problems.len(), 1, "{id}");
            let problem = &model.problems[0];
            assert_eq!(problem.id, id);
            let shown = crate::i18n::I18n::new(Lang::Fr).t_args(
                problem.id,
                &problem
                    .args
                    .iter()
                    .map(|(name, value)| (*name, value.as_str().into()))
                    .collect::<Vec<_>>(),
            );
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(
                !shown.contains("invalid type"),
                "no English in French: {shown}"
            );
        }
        let language = parse("language = \"de\"\n").expect_err("refused");
        assert_eq!(language.args, vec![("language", "de".to_owned())]);
        let malformed = parse("notifications = \"maybe\"\n").expect_err("refused");
        assert!(
            malformed
                .detail
                .expect("the parser's words")
                .contains("invalid type")
        );
    }

    /// A FIFO where the file should be is refused without being opened: opening it would
    /// wait for a writer forever.
    #[test]
    fn a_settings_file_that_is_not_a_regular_file_is_not_waited_on() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(SETTINGS_FILE);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let model = started_on(dir.path());
        assert_eq!(model.problems.len(), 1);
        assert_eq!(model.problems[0].id, "settings-bad-file-not-a-file");
    }

    #[test]
    fn missing_keys_keep_their_defaults_and_unknown_keys_are_ignored() {
        // `require_verified` was this file's in earlier builds: now the library's.
        let text = "notification_text = true\nrequire_verified = true\nfuture_setting = 3\n";
        assert_eq!(
            parse(text),
            Ok(Settings {
                notification_text: true,
                ..Settings::default()
            })
        );
        assert!(!to_text(&Settings::default()).contains("require_verified"));
    }
}
