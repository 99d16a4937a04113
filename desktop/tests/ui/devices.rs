//! My devices: the official's second device (a laptop enrolled with the command line from an
//! operator's code) is listed beside this one; revoking it from the keyboard, through the
//! confirmation that names it, cuts it off at the relay at once.

use super::support::*;

#[test]
fn an_official_revokes_their_own_second_device_from_the_keyboard() {
    let relay = Relay::start();
    let mut alice = Official::enroll(&relay, "alice");
    let laptop = relay.cli_device("alice", "alice-laptop");
    let tr = fr();
    let laptop_id = this_device_id(&laptop);

    alice
        .window
        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Num3);
    let revoke = tr.t_args("devices-revoke", &[("id", laptop_id.clone().into())]);
    // The list is read from the relay when the page opens, so the laptop is in it.
    run_until(
        &mut alice.window,
        WAIT,
        "the laptop in the device list",
        |w| has_label(w, &revoke),
    );
    assert!(
        has_label(&alice.window, &tr.t("devices-this-device")),
        "this device is marked as such"
    );

    press(&mut alice.window, &revoke);
    // The confirmation names the device; Escape would close it, Enter on "revoke" confirms.
    wait_for_label(
        &mut alice.window,
        &tr.t_args("devices-revoke-title", &[("id", laptop_id.clone().into())]),
    );
    press(&mut alice.window, &tr.t("devices-revoke-confirm"));
    wait_for_label(
        &mut alice.window,
        &tr.t_args("devices-revoked", &[("id", laptop_id.clone().into())]),
    );

    // The relay cut it off: the laptop's next command is refused as revoked.
    let out = laptop.run_raw(&["recv", "--wait", "1"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the revoked laptop still works: {said}"
    );
    assert!(said.contains("revoked"), "{said}");
    // The relay's list: the laptop revoked (a time in its last column), this device not.
    let listed = relay.daemon.admin(&["device", "list", "alice"]);
    let revoked = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().last())
            .map(|at| at != "-")
    };
    assert_eq!(revoked(&laptop_id), Some(true), "{laptop_id}:\n{listed}");
    let this_device = listed
        .lines()
        .skip(1)
        .find(|l| !l.starts_with(&laptop_id))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("the app's device");
    assert_eq!(revoked(&this_device), Some(false), "{listed}");
    // The app still runs: revoking another device is not revoking this one.
    assert!(alice.window.state().model().ended.is_none());
}

/// The device id `relais devices` gives for the device it runs on.
fn this_device_id(cli: &Cli) -> String {
    let listed = cli.run(&["devices"]);
    listed
        .lines()
        .find(|line| line.ends_with("\tthis device"))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| panic!("no line for this device in:\n{listed}"))
        .to_owned()
}
