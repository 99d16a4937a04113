//! The unlock screen: the passphrase of an encrypted home, asked once when the app starts.

use egui::{Key, RichText, TextEdit};
use relais_client::Secret;

use super::Cx;
use super::banner::problem_label;
use crate::backend::Request;

/// The passphrase field, whose undo history is dropped once the passphrase is sent.
const PASSPHRASE_ID: &str = "unlock-passphrase";

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    ui.heading(cx.tr.t("unlock-title"));
    ui.add_space(8.0);
    let form = &mut cx.model.unlock;
    if form.retry_only {
        // The home could not be opened for another reason (another program holds it).
        if let Some(problem) = &form.problem {
            problem_label(ui, cx.tr, problem);
        }
        ui.add_space(12.0);
        if ui.button(cx.tr.t("unlock-retry")).clicked() {
            form.busy = true;
            form.problem = None;
            cx.backend.request(Request::Open);
        }
        return;
    }
    ui.label(cx.tr.t("unlock-intro"));
    ui.add_space(12.0);
    let label = ui.label(cx.tr.t("unlock-passphrase-label"));
    let field = ui
        .add_enabled(
            !form.busy,
            TextEdit::singleline(&mut *form.passphrase)
                .password(true)
                .id(egui::Id::unique(PASSPHRASE_ID))
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
    if !form.busy && form.problem.is_none() && !field.has_focus() && form.passphrase.is_empty() {
        field.request_focus();
    }
    ui.add_space(12.0);
    if form.busy {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(cx.tr.t("unlock-busy"));
        });
    } else {
        let ready = !form.passphrase.is_empty();
        let button = ui.add_enabled(ready, egui::Button::new(cx.tr.t("unlock-submit")));
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        if ready && (button.clicked() || entered) {
            let passphrase = Secret::passphrase(&form.passphrase);
            form.busy = true;
            form.problem = None;
            let id = egui::Id::unique(PASSPHRASE_ID);
            ui.data_mut(|d| d.remove::<egui::text_edit::TextEditState>(id));
            cx.backend.request(Request::Unlock { passphrase });
        }
    }
    if let Some(problem) = &cx.model.unlock.problem {
        ui.add_space(12.0);
        problem_label(ui, cx.tr, problem);
    }
    ui.add_space(16.0);
    ui.label(RichText::new(cx.tr.t("unlock-forgotten")).small().weak());
}
