//! A colleague on another device (the `relais` command line) writes; the conversation
//! appears in the official's list with its unread count and preview; the official opens it
//! and replies from the keyboard, and the colleague receives the reply.

use super::support::*;

#[test]
fn a_conversation_appears_when_a_colleague_writes_and_the_official_replies() {
    let relay = Relay::start();
    let bob = relay.cli_user("bob");
    let mut alice = Official::enroll(&relay, "alice");
    let tr = fr();

    let question = "Bonjour Alice, la note pour le préfet est-elle prête ?";
    bob.run(&["send", "alice", question]);
    // The list shows the conversation with one unread entry and the text's beginning, in
    // one accessible name, as a screen reader reads the row.
    let unread = tr.t_args("conversations-unread", &[("count", 1.into())]);
    run_until(
        &mut alice.window,
        WAIT,
        "bob's conversation in the list, unread, with its preview",
        |w| {
            conversation_row(w, "bob@localhost")
                .is_some_and(|name| name.contains(&unread) && name.contains("bob: Bonjour Alice"))
        },
    );
    assert_eq!(alice.window.state().model().unread_total(), 1);

    alice.open_conversation("bob@localhost");
    wait_for_label(&mut alice.window, question);

    let reply = "Oui, je vous l'envoie avant midi.";
    type_into(&mut alice.window, &tr.t("composer-label"), reply);
    alice.window.key_press(egui::Key::Enter);
    // The reply is in the timeline once the relay has it, and reaches bob.
    run_until(
        &mut alice.window,
        WAIT,
        "the reply in the timeline, sent",
        |w| has_label(w, reply) && w.state().model().pending.is_empty(),
    );
    let received = bob.receive_text(reply);
    assert!(
        received
            .lines()
            .any(|l| l.starts_with("alice@localhost\talice@localhost\t")),
        "bob receives it from alice, in their conversation:\n{received}"
    );
    // Read now: the list no longer counts it.
    run_until(&mut alice.window, WAIT, "nothing unread", |w| {
        w.state().model().unread_total() == 0
    });
}
