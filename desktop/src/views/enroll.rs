//! The welcome screen: the official pastes (or drops, or was given) the `relais://enroll?…`
//! link their administrator sent, chooses the passphrase that protects the messages on this
//! computer, and enrolls.

use egui::{Key, RichText, TextEdit};
use relais_client::{PASSPHRASE_CHARS_MIN, Secret};
use zeroize::Zeroizing;

use super::Cx;
use super::banner::problem_label;
use crate::backend::Request;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    take_dropped(ui, cx);
    ui.heading(cx.tr.t("enroll-title"));
    ui.add_space(8.0);
    ui.label(cx.tr.t("enroll-intro"));
    ui.add_space(16.0);
    let busy = cx.model.enroll.busy;
    ui.add_enabled_ui(!busy, |ui| {
        link_field(ui, cx);
        ui.add_space(16.0);
        passphrase_fields(ui, cx);
    });
    ui.add_space(16.0);
    let ready = readiness(cx);
    if busy {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(cx.tr.t("enroll-busy"));
        });
    } else {
        if let Err(why) = &ready
            && !cx.model.enroll.link.is_empty()
        {
            ui.label(RichText::new(cx.tr.t(why)).weak());
        }
        let button = ui.add_enabled(ready.is_ok(), egui::Button::new(cx.tr.t("enroll-submit")));
        let entered = ui.input(|i| i.key_pressed(Key::Enter)) && ready.is_ok();
        if button.clicked() || entered {
            submit(ui, cx);
        }
    }
    if let Some(problem) = &cx.model.enroll.problem {
        ui.add_space(12.0);
        problem_label(ui, cx.tr, problem);
    }
}

fn link_field(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let label = ui.label(cx.tr.t("enroll-link-label"));
    let hovering = ui.input(|i| !i.raw.hovered_files.is_empty());
    let hint = if hovering {
        cx.tr.t("enroll-link-drop")
    } else {
        "relais://enroll?…".to_owned()
    };
    ui.add(
        TextEdit::singleline(&mut *cx.model.enroll.link)
            .id(egui::Id::unique("enroll-link"))
            .hint_text(hint)
            .desired_width(f32::INFINITY),
    )
    .labelled_by(label.id);
    ui.label(RichText::new(cx.tr.t("enroll-link-help")).small().weak());
}

fn passphrase_fields(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    ui.label(cx.tr.t_args(
        "enroll-passphrase-why",
        &[("min", PASSPHRASE_CHARS_MIN.into())],
    ));
    let form = &mut cx.model.enroll;
    ui.add_enabled_ui(!form.without_passphrase, |ui| {
        let label = ui.label(cx.tr.t("enroll-passphrase-label"));
        ui.add(password(&mut form.passphrase, "enroll-passphrase"))
            .labelled_by(label.id);
        let label = ui.label(cx.tr.t("enroll-confirm-label"));
        ui.add(password(&mut form.confirm, "enroll-confirm"))
            .labelled_by(label.id);
    });
    ui.checkbox(
        &mut form.without_passphrase,
        cx.tr.t("enroll-without-passphrase"),
    );
    if form.without_passphrase {
        ui.label(
            RichText::new(cx.tr.t("enroll-without-passphrase-warning"))
                .color(ui.visuals().warn_fg_color),
        );
    }
}

/// A passphrase field; its text is never shown, and its undo history is dropped once used.
fn password<'t>(text: &'t mut Zeroizing<String>, id: &str) -> TextEdit<'t> {
    TextEdit::singleline(&mut **text)
        .password(true)
        .id(egui::Id::unique(id))
        .desired_width(f32::INFINITY)
}

/// Whether the form can be sent, or the catalogue id of what is missing.
fn readiness(cx: &Cx<'_>) -> Result<(), &'static str> {
    let form = &cx.model.enroll;
    let link = form.link.trim();
    if link.is_empty() {
        return Err("enroll-missing-link");
    }
    if !link.starts_with("relais://") {
        return Err("enroll-error-not-a-link");
    }
    if form.without_passphrase {
        return Ok(());
    }
    if form.passphrase.chars().count() < PASSPHRASE_CHARS_MIN {
        return Err("enroll-passphrase-short");
    }
    if *form.passphrase != *form.confirm {
        return Err("enroll-passphrase-mismatch");
    }
    Ok(())
}

fn submit(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let form = &mut cx.model.enroll;
    let passphrase = (!form.without_passphrase).then(|| Secret::passphrase(&form.passphrase));
    form.busy = true;
    form.problem = None;
    // The fields' undo histories hold copies of what was typed: drop them.
    for id in ["enroll-link", "enroll-passphrase", "enroll-confirm"] {
        let id = egui::Id::unique(id);
        ui.data_mut(|d| d.remove::<egui::text_edit::TextEditState>(id));
    }
    cx.backend.request(Request::Enroll {
        link: Zeroizing::new(form.link.trim().to_owned()),
        passphrase,
    });
}

/// A file dropped on the window: the backend reads it for the link it holds (a `.txt` from
/// the administrator's mail), off this thread, and the model fills the field with it.
fn take_dropped(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let dropped = ui.input(|i| i.raw.dropped_files.clone());
    for file in dropped {
        let path = file.path().to_owned();
        cx.backend.request(Request::ReadDropped { path });
    }
}
