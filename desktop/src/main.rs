//! `relais-desktop [--home DIR] [LINK]`: the officials' window on the client library.
//!
//! The home defaults to the `relais` command's (`RELAIS_HOME`, else `$HOME/.relais`); a
//! `relais://enroll?…` link given as the argument (as the desktop's link handler passes it)
//! fills the welcome screen. Exit codes as the other programs': 64 for a bad command line,
//! 69 when no window can be opened.

use std::path::PathBuf;
use std::process::ExitCode;

use relais_desktop::i18n::Lang;
use relais_desktop::{App, Options};
use zeroize::Zeroizing;

/// The app's id: the desktop file's and the notifications' name (`fr.gouv.relais.desktop`).
const APP_ID: &str = "fr.gouv.relais";

/// The app's icon, as the package installs it (`desktop/assets/`).
const ICON_PNG: &[u8] = include_bytes!("../assets/fr.gouv.relais.png");

const USAGE: &str = "usage: relais-desktop [--home DIR] [relais://enroll?…]";

fn main() -> ExitCode {
    // Read while this is the only thread: the C library's time zone functions are safe to
    // call only then.
    let utc_offset_seconds =
        time::UtcOffset::current_local_offset().map_or(0, |offset| offset.whole_seconds());
    let options = match parse(std::env::args_os().skip(1)) {
        Ok(Some(options)) => Options {
            utc_offset_seconds,
            ..options
        },
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("relais-desktop: {message}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let mut viewport = egui::ViewportBuilder::default()
        .with_app_id(APP_ID)
        .with_title("Relais")
        .with_inner_size([1100.0, 720.0])
        .with_min_inner_size([640.0, 420.0])
        .with_drag_and_drop(true);
    // The packaged icon, for desktops that take it from the window rather than from the
    // `.desktop` file; a broken one is only a missing icon.
    if let Ok(icon) = eframe::icon_data::from_png_bytes(ICON_PNG) {
        viewport = viewport.with_icon(icon);
    }
    let native = eframe::NativeOptions {
        viewport,
        ..eframe::NativeOptions::default()
    };
    let started = eframe::run_native(
        APP_ID,
        native,
        Box::new(move |_| Ok(Box::new(App::new(options)))),
    );
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais-desktop: cannot open a window: {e}");
            ExitCode::from(69)
        }
    }
}

/// The command line; `None` for `--help`.
fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<Options>, String> {
    let mut home = None;
    let mut link = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--help" | "-h") => return Ok(None),
            Some("--home") => {
                let dir = args.next().ok_or("--home needs a directory")?;
                home = Some(PathBuf::from(dir));
            }
            Some(text) if text.starts_with("--home=") => {
                home = Some(PathBuf::from(&text["--home=".len()..]));
            }
            Some(text) if text.starts_with('-') => return Err(format!("unknown option {text}")),
            Some(text) if link.is_none() => link = Some(Zeroizing::new(text.to_owned())),
            _ => return Err("give at most one link".into()),
        }
    }
    let home = home
        .or_else(|| std::env::var_os("RELAIS_HOME").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(relais_client::cli::DEFAULT_HOME))
        })
        .ok_or("no home directory: give --home DIR, or set HOME")?;
    Ok(Some(Options {
        home,
        link,
        lang: Lang::from_env(),
        utc_offset_seconds: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        list.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_command_line_takes_a_home_and_a_link() {
        let options = parse(args(&["--home", "/tmp/h", "relais://enroll?v=1"]))
            .expect("valid")
            .expect("options");
        assert_eq!(options.home, PathBuf::from("/tmp/h"));
        assert_eq!(
            options.link.as_deref().map(String::as_str),
            Some("relais://enroll?v=1")
        );
        assert!(
            !format!("{options:?}").contains("enroll?v=1"),
            "the link is a secret: {options:?}"
        );
        let options = parse(args(&["--home=/tmp/g"]))
            .expect("valid")
            .expect("options");
        assert_eq!(
            (options.home, options.link),
            (PathBuf::from("/tmp/g"), None)
        );
        assert!(parse(args(&["--help"])).expect("valid").is_none());
        for bad in [&["--verbose"][..], &["--home"], &["a", "b"]] {
            assert!(parse(args(bad)).is_err(), "{bad:?} is refused");
        }
    }
}
