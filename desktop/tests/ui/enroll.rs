//! Enrolling from a link, as an official does on a new computer: the link their
//! administrator made with `relaisd admin user add NAME --link`, pasted into the welcome
//! screen (or handed to the app as its argument, as the desktop does for a clicked
//! `relais://` link), a passphrase typed twice, Enter; then, at the next start, the
//! passphrase again on the unlock screen.

use super::support::*;

/// Long enough for the library's minimum, and with the accents a French keyboard types.
const PASSPHRASE: &str = "rendez-vous à la préfecture après déjeuner";

#[test]
fn an_official_enrolls_from_a_link_with_the_keyboard_and_unlocks_at_the_next_start() {
    let relay = Relay::start();
    let link = relay.link_for_new_user("alice");
    let home = relay.home("alice-desktop");
    let tr = fr();

    let mut app = window(&home, None);
    enroll_with_keyboard(&mut app, &link, Some(PASSPHRASE));
    assert_eq!(
        app.state().model().user.as_deref(),
        Some("alice@localhost"),
        "the app runs as the user the link named"
    );
    // The relay knows the device the app enrolled, and the home is encrypted: its key is
    // sealed in the database, and neither the passphrase nor the link's code is on disk.
    let devices = relay.daemon.admin(&["device", "list", "alice"]);
    let rows: Vec<&str> = devices
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        rows.len() == 1 && rows[0].ends_with('-'),
        "one device, not revoked:\n{devices}"
    );
    assert!(home.join("state.db").is_file(), "the home holds the device");
    assert!(
        !home.join("device.key").exists(),
        "an encrypted home keeps no key file in the clear"
    );
    let code = link_code(&link);
    drop(app);
    relais_testkit::assert_bytes_absent(
        &[&home],
        &[
            ("the passphrase", PASSPHRASE.as_bytes().to_vec()),
            ("the enrollment code", code.into_bytes()),
        ],
    );

    // Started again on the same home, the app asks for the passphrase, and a wrong one
    // says so in words that say what to do.
    let mut app = window(&home, None);
    run_until(&mut app, WAIT, "the unlock screen", |w| {
        has_label(w, &tr.t("unlock-title"))
    });
    type_into(
        &mut app,
        &tr.t("unlock-passphrase-label"),
        "pas la bonne phrase de passe",
    );
    app.key_press(egui::Key::Enter);
    wait_for_label(&mut app, &tr.t("error-wrong-passphrase"));
    type_into(&mut app, &tr.t("unlock-passphrase-label"), PASSPHRASE);
    app.key_press(egui::Key::Enter);
    wait_for_main(&mut app);
    assert_eq!(app.state().model().user.as_deref(), Some("alice@localhost"));
}

#[test]
fn a_link_given_as_the_argument_fills_the_welcome_screen() {
    let relay = Relay::start();
    let link = relay.link_for_new_user("bruno");
    let home = relay.home("bruno-desktop");
    let tr = fr();

    // As `relais-desktop relais://enroll?…`, which the desktop entry runs for a clicked link.
    let mut app = window(&home, Some(link.clone()));
    let field = tr.t("enroll-link-label");
    run_until(&mut app, WAIT, "the welcome screen with the link", |w| {
        w.query_all_by_label(&field)
            .any(|node| node.value().as_deref() == Some(link.as_str()))
    });
    press(&mut app, &tr.t("enroll-without-passphrase"));
    press(&mut app, &tr.t("enroll-submit"));
    wait_for_main(&mut app);
    assert_eq!(app.state().model().user.as_deref(), Some("bruno@localhost"));
    assert!(
        home.join("device.key").is_file(),
        "without a passphrase, the home keeps its key in a file only its owner reads"
    );
}

/// The enrollment code a link carries (its `code` parameter).
fn link_code(link: &str) -> String {
    let query = link.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {link}"))
        .to_owned()
}
