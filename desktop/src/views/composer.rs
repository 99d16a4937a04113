//! The composer: a text box under the timeline. Enter sends, Shift+Enter starts a new
//! line; texts on their way show above it until the relay has them (then they are in the
//! timeline), and a text the relay refused stays there to send again or take back.

use egui::{Key, KeyboardShortcut, Modifiers, RichText, TextEdit};

use super::Cx;
use super::banner::problem_label;
use crate::model::TEXT_BYTES_MAX;

/// The composer's text box, so that the app can give it the focus.
pub const TEXT_ID: &str = "composer-text";

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let Some(key) = cx.model.composing_key() else {
        return;
    };
    ui.add_space(4.0);
    pending(ui, cx, &key);
    let closed =
        cx.model.ended.is_some() || cx.model.selected_conversation().is_some_and(|c| c.left);
    if closed {
        ui.label(RichText::new(cx.tr.t("composer-closed")).weak());
        return;
    }
    let id = egui::Id::unique(TEXT_ID);
    // Enter is taken before the text box sees it: it sends; Shift+Enter is the box's own.
    let focused = ui.memory(|m| m.has_focus(id));
    let mut send = focused && ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Enter));
    let label = ui.label(RichText::new(cx.tr.t("composer-label")).small());
    let draft = cx.model.drafts.entry(key.clone()).or_default();
    ui.horizontal(|ui| {
        let field = TextEdit::multiline(draft)
            .id(id)
            .desired_rows(2)
            .return_key(KeyboardShortcut::new(Modifiers::SHIFT, Key::Enter))
            .hint_text(cx.tr.t("composer-hint"))
            .desired_width(ui.available_width() - 90.0);
        ui.add(field).labelled_by(label.id);
        send |= ui.button(cx.tr.t("composer-send")).clicked();
    });
    let bytes = draft.len();
    if bytes > TEXT_BYTES_MAX * 4 / 5 {
        let colour = if bytes > TEXT_BYTES_MAX {
            ui.visuals().error_fg_color
        } else {
            ui.visuals().weak_text_color()
        };
        let size = cx.tr.t_args(
            "composer-size",
            &[("bytes", bytes.into()), ("max", TEXT_BYTES_MAX.into())],
        );
        ui.label(RichText::new(size).small().color(colour));
    }
    if send && !super::banner::hold_before_send(cx) {
        match cx.model.send_draft() {
            Ok(Some(request)) => {
                cx.model.composer_problem = None;
                cx.backend.request(request);
            }
            Ok(None) => {}
            Err(problem) => cx.model.composer_problem = Some(problem),
        }
        ui.memory_mut(|m| m.request_focus(id));
    }
    if let Some(problem) = &cx.model.composer_problem {
        problem_label(ui, cx.tr, problem);
    }
}

/// Texts of this conversation on their way, or refused: each with what became of it.
fn pending(ui: &mut egui::Ui, cx: &mut Cx<'_>, key: &str) {
    let mut retry = None;
    let mut edit = None;
    for pending in cx.model.pending.iter().filter(|p| p.conversation == key) {
        egui::Frame::new()
            .fill(ui.visuals().faint_bg_color)
            .inner_margin(4.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                let first_line = pending.text.lines().next().unwrap_or_default();
                ui.horizontal_wrapped(|ui| {
                    ui.label(RichText::new(first_line).weak());
                    match &pending.failed {
                        None => {
                            ui.spinner();
                            ui.label(RichText::new(cx.tr.t("composer-sending")).small());
                        }
                        Some(problem) => {
                            problem_label(ui, cx.tr, problem);
                            if ui.button(cx.tr.t("composer-retry")).clicked() {
                                retry = Some(pending.local_id);
                            }
                            if ui.button(cx.tr.t("composer-edit")).clicked() {
                                edit = Some(pending.local_id);
                            }
                        }
                    }
                });
            });
    }
    if let Some(local_id) = retry
        && let Some(request) = cx.model.retry(local_id)
    {
        cx.backend.request(request);
    }
    if let Some(local_id) = edit {
        cx.model.edit_failed(local_id);
    }
}
