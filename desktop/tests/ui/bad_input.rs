//! Bad links and an unreachable relay, as an official meets them: each gives a message in
//! their language that says what to do, and the device's home stays empty, so that the next
//! (good) link starts from nothing. A refused link is never half-used: the relay saw no
//! attempt, and the same user's good link still enrolls afterwards.

use std::path::Path;

use super::support::*;

#[test]
fn bad_links_say_what_to_do_and_leave_the_home_empty() {
    let relay = Relay::start();
    let other = Relay::start();
    let link = relay.link_for_new_user("alice");
    // The same kind of link from another relay, whose certificate authority differs.
    let foreign = other.link_for_new_user("alice");
    let closed_port = format!("127.0.0.1:{}", relais_testkit::free_port());
    let cut = link
        .find("&pin=")
        .map(|at| link[..at].to_owned())
        .expect("a link with a pin");
    let cases = [
        // Copied in part: the mail client cut the line.
        ("malformed", cut, "enroll-error-link-malformed"),
        // Someone added a second code to a link.
        (
            "tampered",
            format!("{link}&code=AAAA-BBBB-CCCC-DDDD"),
            "enroll-error-link-altered",
        ),
        // The link names this relay, but the pin is another relay's: whoever answers at
        // this address is not the relay the administrator meant.
        (
            "pin mismatch",
            with_param(&link, "pin", &param(&foreign, "pin")),
            "enroll-error-pin-mismatch",
        ),
        // Nobody listens at the link's address.
        (
            "unreachable relay",
            with_param(&link, "server", &closed_port),
            "error-relay-unreachable",
        ),
    ];
    let tr = fr();
    for (case, bad, message) in cases {
        let home = relay.home(&format!("home-{}", case.replace(' ', "-")));
        let mut app = window(&home, None);
        run_until(&mut app, WAIT, "the welcome screen", |w| {
            has_label(w, &tr.t("enroll-title"))
        });
        type_into(&mut app, &tr.t("enroll-link-label"), &bad);
        press(&mut app, &tr.t("enroll-without-passphrase"));
        press(&mut app, &tr.t("enroll-submit"));
        let expected = tr.t(message);
        run_until(&mut app, WAIT, &format!("the {case} message"), |w| {
            has_label(w, &expected)
        });
        assert_eq!(
            app.state().model().screen,
            relais_desktop::model::Screen::Enroll,
            "{case}: still on the welcome screen"
        );
        drop(app);
        assert_empty(&home, case);
    }

    // Nothing reached the relay: alice has no device, and her link still enrolls.
    let devices = relay.daemon.admin(&["device", "list", "alice"]);
    assert!(
        devices.lines().skip(1).all(|l| l.trim().is_empty()),
        "no device was enrolled for alice by a bad link:\n{devices}"
    );
    let home = relay.home("home-good");
    let mut app = window(&home, None);
    enroll_with_keyboard(&mut app, &link, None);
}

/// The home is as it was before: absent, or an empty directory.
fn assert_empty(home: &Path, case: &str) {
    let left: Vec<String> = match std::fs::read_dir(home) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{case}: cannot read {}: {e}", home.display()),
    };
    assert!(
        left.is_empty(),
        "{case}: the home holds {left:?} after a failed enrollment"
    );
}

/// The value of the link's parameter `key`.
fn param(link: &str, key: &str) -> String {
    let query = link.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {link}"))
        .to_owned()
}

/// The link with its parameter `key` set to `value`.
fn with_param(link: &str, key: &str, value: &str) -> String {
    let (base, query) = link.split_once('?').expect("a link with parameters");
    let prefix = format!("{key}=");
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    assert!(
        pairs.iter().any(|p| p.starts_with(&prefix)),
        "no {key} in {link}"
    );
    format!("{base}?{}", pairs.join("&"))
}
