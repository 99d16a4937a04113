//! Creating a group from the keyboard: the group page (Ctrl+4), its name and members typed,
//! Enter on "create"; the group appears in the list, its members have it on their own
//! devices, and a text written in it reaches them.

use super::support::*;

#[test]
fn an_official_creates_a_group_with_the_keyboard_and_its_members_have_it() {
    let relay = Relay::start();
    let bob = relay.cli_user("bob");
    let carol = relay.cli_user("carol");
    let mut alice = Official::enroll(&relay, "alice");
    let tr = fr();
    let group = "Cellule de crise";

    alice
        .window
        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Num4);
    alice.window.step();
    wait_for_label(&mut alice.window, &tr.t("group-create-title"));
    type_into(&mut alice.window, &tr.t("group-name"), group);
    type_into(
        &mut alice.window,
        &tr.t("group-members-field"),
        "bob, carol",
    );
    press(&mut alice.window, &tr.t("group-create"));
    run_until(&mut alice.window, WAIT, "the new group in the list", |w| {
        conversation_row(w, group).is_some()
    });

    // Its members' devices joined it: they list alice, bob and carol.
    for member in [&bob, &carol] {
        member.run(&["recv", "--wait", "2"]);
        let members = member.run(&["group", "members", group]);
        for user in ["alice@localhost", "bob@localhost", "carol@localhost"] {
            assert!(
                members.contains(user),
                "{} sees {user} in the group:\n{members}",
                member.user
            );
        }
    }

    alice.open_conversation(group);
    let text = "Point de situation à 18 h, salle 2.";
    type_into(&mut alice.window, &tr.t("composer-label"), text);
    alice.window.key_press(egui::Key::Enter);
    run_until(
        &mut alice.window,
        WAIT,
        "the text in the group's timeline, sent",
        |w| has_label(w, text) && w.state().model().pending.is_empty(),
    );
    let received = carol.receive_text(text);
    assert!(
        received
            .lines()
            .any(|l| l.starts_with(&format!("{group}\talice@localhost\t"))),
        "carol receives it in the group, from alice:\n{received}"
    );
}
