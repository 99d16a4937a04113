//! The desktop app's Debian package (`cargo deb -p relais-desktop`, D15): the binary, the
//! desktop entry that also opens `relais://` enrollment links, the AppStream metadata, the
//! icons and the manual page, each where a Debian 12 desktop looks for it; lintian passes it;
//! the entry and the metadata pass their own validators; and the icon's PNG is what its SVG
//! renders to, so that the committed PNG cannot drift from the drawing.
//!
//! These tests need `cargo-deb`, `dpkg-deb`, `lintian`, `desktop-file-validate`
//! (desktop-file-utils), `appstreamcli` (appstream) and `rsvg-convert` (librsvg2-bin):
//! `scripts/test` installs them; without them a test is skipped, and fails under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relais_testkit::packaging::text;

/// The package's name, and its binary's.
const PACKAGE: &str = "relais-desktop";
/// The application's id: the desktop entry's, the metadata's, the icon's and the window's.
const APP_ID: &str = "fr.gouv.relais";

#[test]
fn the_desktop_package_installs_the_app_its_entry_icons_metadata_and_manual() {
    if !relais_testkit::system_component(&["cargo-deb", "dpkg-deb"], "building the desktop package")
    {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(out_dir.path(), false);

    let contents = dpkg_deb(&["--contents"], &deb);
    for path in [
        "./usr/bin/relais-desktop".to_owned(),
        format!("./usr/share/applications/{APP_ID}.desktop"),
        format!("./usr/share/metainfo/{APP_ID}.metainfo.xml"),
        format!("./usr/share/icons/hicolor/scalable/apps/{APP_ID}.svg"),
        format!("./usr/share/icons/hicolor/256x256/apps/{APP_ID}.png"),
        "./usr/share/doc/relais-desktop/copyright".to_owned(),
        "./usr/share/doc/relais-desktop/changelog.Debian.gz".to_owned(),
    ] {
        assert!(
            contents.lines().any(|line| line.ends_with(&path)),
            "{path} is not in the package:\n{contents}"
        );
    }
    // cargo-deb may compress the manual page; either form is found by man.
    assert!(
        contents
            .lines()
            .any(|line| line.contains("./usr/share/man/man1/relais-desktop.1")),
        "the manual page is not in the package:\n{contents}"
    );
    assert!(
        contents.lines().any(|line| {
            (line.starts_with("-rwxr-xr-x 0/0") || line.starts_with("-rwxr-xr-x root/root"))
                && line.ends_with("./usr/bin/relais-desktop")
        }),
        "the binary is not root's and executable:\n{contents}"
    );
    // A desktop app runs as its user and starts no service: no maintainer script, no
    // conffile (dpkg's triggers refresh the desktop and icon caches).
    let control = dpkg_deb(&["--info"], &deb);
    for absent in ["postinst", "prerm", "postrm", "preinst", "conffiles"] {
        assert!(!control.contains(absent), "{absent} in:\n{control}");
    }
    assert!(
        control.contains(&format!("Package: {PACKAGE}")),
        "{control}"
    );
    the_package_names_the_libraries_eframe_opens(&control);

    let unpacked = out_dir.path().join("unpacked");
    let out = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&unpacked)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "{}", text(&out));
    let entry =
        std::fs::read_to_string(unpacked.join(format!("usr/share/applications/{APP_ID}.desktop")))
            .expect("the desktop entry");
    the_entry_opens_enrollment_links_in_french_and_english(&entry);
}

#[test]
fn the_desktop_package_passes_lintian() {
    if !relais_testkit::system_component(&["cargo-deb", "lintian"], "checking the desktop package")
    {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    // Stripped, as a release is: the debug information goes to the .ddeb beside it.
    let deb = build_deb(out_dir.path(), true);
    let out = Command::new("lintian")
        .arg("--display-info")
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = text(&out);
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .collect();
    assert!(
        findings.is_empty() && out.status.success(),
        "lintian on the desktop package:\n{report}"
    );
    // Informational tags are allowed, but not the ones that mean a file is missing.
    for tag in ["no-md5sums-control-file", "no-manual-page", "desktop-entry"] {
        assert!(!report.contains(tag), "{tag}:\n{report}");
    }
}

#[test]
fn the_desktop_entry_and_the_metadata_pass_their_validators() {
    if !relais_testkit::system_component(
        &["desktop-file-validate", "appstreamcli"],
        "validating the desktop entry and the AppStream metadata",
    ) {
        return;
    }
    let entry = assets().join(format!("{APP_ID}.desktop"));
    let out = Command::new("desktop-file-validate")
        .arg(&entry)
        .output()
        .expect("desktop-file-validate");
    // It exits 0 with hints printed; any line is a finding.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "desktop-file-validate: {}",
        text(&out)
    );
    let metainfo = assets().join(format!("{APP_ID}.metainfo.xml"));
    let out = Command::new("appstreamcli")
        .args(["validate", "--no-net", "--pedantic", "--no-color"])
        .arg(&metainfo)
        .output()
        .expect("appstreamcli");
    let report = text(&out);
    assert!(out.status.success(), "appstreamcli validate: {report}");
    // Pedantic hints and infos are findings too: `I:`, `P:`, `W:` and `E:` lines.
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| line.len() > 2 && line.as_bytes()[1] == b':')
        .collect();
    assert!(findings.is_empty(), "appstreamcli validate: {report}");
    let metadata = std::fs::read_to_string(&metainfo).expect("metainfo");
    for needle in [
        format!("<id>{APP_ID}</id>"),
        format!("<launchable type=\"desktop-id\">{APP_ID}.desktop</launchable>"),
        "<binary>relais-desktop</binary>".to_owned(),
        "<mediatype>x-scheme-handler/relais</mediatype>".to_owned(),
        "<summary xml:lang=\"en\">".to_owned(),
    ] {
        assert!(metadata.contains(&needle), "{needle} not in the metadata");
    }
}

#[test]
fn the_icon_png_is_what_its_svg_renders_to() {
    if !relais_testkit::system_component(&["rsvg-convert"], "rendering the icon") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The script renders beside the SVG: run it on a copy, so the checkout stays as it is.
    for file in [format!("{APP_ID}.svg"), "render-icon".to_owned()] {
        std::fs::copy(assets().join(&file), dir.path().join(&file)).expect("copy the icon");
    }
    let out = Command::new(dir.path().join("render-icon"))
        .output()
        .expect("desktop/assets/render-icon");
    assert!(out.status.success(), "render-icon: {}", text(&out));
    let rendered = std::fs::read(dir.path().join(format!("{APP_ID}.png"))).expect("rendered");
    let committed = std::fs::read(assets().join(format!("{APP_ID}.png"))).expect("committed");
    assert!(
        rendered == committed,
        "desktop/assets/{APP_ID}.png is not what its SVG renders to: run desktop/assets/render-icon"
    );
    // A PNG's IHDR gives its width and height first, big-endian, at bytes 16 to 24.
    assert_eq!(&committed[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let size = |at: usize| u32::from_be_bytes(committed[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((size(16), size(20)), (256, 256), "the icon is 256×256");
}

// ------------------------------------------------------------------------------- helpers

/// eframe opens the window system's and OpenGL's libraries at run time, where dpkg's
/// shlibdeps cannot see them: the package must name them (X11 and GLX, Wayland and EGL).
fn the_package_names_the_libraries_eframe_opens(control: &str) {
    let depends = control
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{control}"));
    let depends: BTreeSet<&str> = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    for library in [
        "libc6",
        "libegl1",
        "libgl1",
        "libxkbcommon0",
        "libxkbcommon-x11-0",
        "libx11-6",
        "libx11-xcb1",
        "libxcursor1",
        "libxi6",
        "libwayland-client0",
        "libwayland-egl1",
    ] {
        assert!(
            depends.contains(library),
            "{library} not in Depends: {depends:?}"
        );
    }
}

/// What the entry must say for a desktop to offer the app and to hand it `relais://` links:
/// the program with the link as its argument, the scheme as a MIME type, the icon by the
/// application's id, and its name and comment in French (the default) and in English.
fn the_entry_opens_enrollment_links_in_french_and_english(entry: &str) {
    let keys: Vec<(&str, &str)> = entry
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let value = |key: &str| {
        keys.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {key} in the desktop entry:\n{entry}"))
    };
    assert_eq!(value("Exec"), "relais-desktop %u");
    assert_eq!(value("MimeType"), "x-scheme-handler/relais;");
    assert_eq!(value("Icon"), APP_ID);
    assert_eq!(value("StartupWMClass"), APP_ID);
    assert!(value("Comment").contains("chiffrée"), "French by default");
    assert!(value("Comment[en]").contains("encrypted"), "English too");
    assert!(!value("GenericName[en]").is_empty());
}

/// `desktop/assets/`: the entry, the metadata and the icon.
fn assets() -> PathBuf {
    relais_testkit::repository().join("desktop/assets")
}

/// Builds the package into `out_dir` from the `relais-desktop` the tests' build made
/// (`cargo build --workspace --bins`), then adds its md5sums with relaisd's
/// `daemon/debian/add-md5sums`, which works on any package. `strip` as a release is built.
fn build_deb(out_dir: &Path, strip: bool) -> PathBuf {
    let binary = relais_testkit::relaisd().with_file_name(PACKAGE);
    assert!(
        binary.is_file(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        binary.display()
    );
    let deb = out_dir.join(format!("{PACKAGE}_0.1.0-1_amd64.deb"));
    let target_dir = relais_testkit::target_dir();
    // cargo-deb stages its files under the target directory: one package build at a time,
    // under the lock relaisd's package tests take too.
    let lock = std::fs::File::create(target_dir.join("relais-test-cargo-deb.lock")).expect("lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the package build");
    let out = Command::new("cargo")
        .args(["deb", "-p", PACKAGE, "--no-build", "--fast"])
        .args(if strip { &[][..] } else { &["--no-strip"][..] })
        .args(["--profile", "dev", "--deb-version", "0.1.0-1", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(relais_testkit::repository().join("desktop"))
        .output()
        .expect("cargo deb");
    assert!(out.status.success(), "cargo deb failed:\n{}", text(&out));
    let out = Command::new(relais_testkit::repository().join("daemon/debian/add-md5sums"))
        .arg(&deb)
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1")
        .output()
        .expect("daemon/debian/add-md5sums (dpkg-deb)");
    assert!(out.status.success(), "add-md5sums failed:\n{}", text(&out));
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out: Output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
