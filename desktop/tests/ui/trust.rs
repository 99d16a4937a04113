//! Trust on screen (D14): the official compares the safety number the app shows for a
//! contact with the one the contact's own device shows (`relais verify`), marks the contact
//! verified, and when a device the contact never showed them joins (an operator issued a
//! code in the contact's name: a ghost device), the conversation says so in a banner and
//! the contact page says the verification no longer holds.

use super::support::*;

#[test]
fn an_official_verifies_a_contact_then_sees_the_banner_when_a_ghost_device_joins() {
    let relay = Relay::start();
    let bob = relay.cli_user("bob");
    let mut alice = Official::enroll(&relay, "alice");
    let tr = fr();
    let contact = [("contact", "bob@localhost".into())];

    bob.run(&["send", "alice", "Bonjour, vérifions nos numéros."]);
    alice.open_conversation("bob@localhost");

    // The contact page (Ctrl+2) of the open conversation's contact shows the number the
    // contact's device computes too.
    alice
        .window
        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Num2);
    let number_label = tr.t_args("contact-safety-number-label", &contact);
    run_until(&mut alice.window, WAIT, "bob's safety number", |w| {
        shown_number(w, &number_label).is_some()
    });
    let shown = shown_number(&alice.window, &number_label).expect("the number");
    assert_eq!(
        shown,
        bob.safety_number("alice"),
        "the app shows the number bob's own device shows"
    );
    assert!(
        has_label(&alice.window, &tr.t_args("contact-qr-label", &contact)),
        "the number's QR code is there, by its name"
    );
    assert!(has_label(&alice.window, &tr.t("contact-status-unverified")));

    press(&mut alice.window, &tr.t("contact-mark-verified"));
    wait_for_label(&mut alice.window, &tr.t("contact-status-verified"));
    // The library agrees: alice's device lists bob as verified (the CLI of bob's side
    // cannot see it; the app's own model is the library's answer).

    // A device bob never had: an operator issues a code in his name and it is enrolled.
    // bob's own device adds it to his conversations when it next connects.
    let _ghost = relay.cli_device("bob", "bob-ghost");
    bob.run(&["recv", "--wait", "3"]);
    let banner = tr.t_args("banner-new-device", &contact);
    alice.window.key_press(egui::Key::Escape);
    run_until(
        &mut alice.window,
        WAIT,
        "the new-device banner in the conversation with bob",
        |w| has_label(w, &banner),
    );
    // The banner leads to the contact page, which says the verification no longer holds.
    press(
        &mut alice.window,
        &tr.t_args("banner-open-contact", &contact),
    );
    wait_for_label(&mut alice.window, &tr.t("contact-status-changed"));
    // And the number changed with bob's devices: his first device shows the new one.
    let number_now = bob.safety_number("alice");
    run_until(&mut alice.window, WAIT, "bob's new safety number", |w| {
        shown_number(w, &number_label).is_some_and(|n| n == number_now)
    });
    assert_ne!(number_now, shown, "a new device changes the number");
}

/// The 60 digits of the safety number in the node named `label`: its text, drawn in groups
/// over lines (the runs of text inside it), if it is on screen.
fn shown_number(window: &Window, label: &str) -> Option<String> {
    let node = window.query_all_by_label(label).next()?;
    let text: String = node
        .children_recursive()
        .filter_map(|run| run.accesskit_node().value())
        .collect();
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let only_digits = text
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_whitespace());
    (only_digits && digits.len() == 60).then_some(digits)
}
