//! The open conversation's new-device banner, and the confirmation before sending.
//!
//! A contact the user verified who then gets a new device (or loses one) is unverified
//! again until the user compares safety numbers anew (D14): every conversation with them
//! says so at its top, with a button to the contact's page. The list is the library's
//! (`unverified_contacts`), loaded when a conversation opens and again after every
//! verification or membership change.
//!
//! With the setting "require verified contacts" on, the composer asks
//! [`hold_before_send`] before it sends: the draft waits while the backend looks the
//! contacts up, goes at once if none changed devices, and otherwise only once the user
//! confirms in a dialog that names them (Escape or "do not send" keeps it in the composer).

use egui::{Color32, RichText};
use relais_client::Event;

use super::{Cx, Page};
use crate::backend::{Problem, Request};
use crate::i18n::I18n;
use crate::model::{Loaded, Notice, SendCheck};

/// The dialog's id; its safe choice takes the focus when it opens.
const DIALOG_ID: &str = "send-confirm";

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let Some(conversation) = cx.model.selected_conversation() else {
        // A new direct conversation: nobody in it was verified yet.
        return;
    };
    let (group_id, name) = (conversation.group_id.clone(), conversation.name.clone());
    let pages = &mut cx.model.pages;
    if pages.unverified_for != group_id {
        pages.unverified_for = group_id.clone();
        pages.unverified = Loaded::Loading;
        cx.backend.request(Request::Unverified {
            group_id: group_id.clone(),
            conversation: name,
            then_send: false,
        });
    }
    let contacts = cx
        .model
        .pages
        .unverified
        .ready()
        .cloned()
        .unwrap_or_default();
    for contact in contacts {
        banner(ui, cx, &contact);
    }
    if cx.model.pages.send_check
        == Some(SendCheck::Checking {
            group_id: group_id.clone(),
        })
    {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(cx.tr.t("banner-checking"));
        });
    }
    confirm(ui, cx, &group_id);
}

/// Whether the composer must hold its draft back rather than send it now: with "require
/// verified contacts" on, the conversation's contacts are looked up first, and the draft is
/// sent when the answer comes (at once if nobody changed devices, after the user confirms
/// otherwise). A new direct conversation and an empty draft go through.
pub fn hold_before_send(cx: &mut Cx<'_>) -> bool {
    if !cx.model.require_verified() {
        return false;
    }
    let Some(conversation) = cx.model.selected_conversation() else {
        return false;
    };
    let empty = cx
        .model
        .drafts
        .get(&conversation.group_id)
        .is_none_or(|draft| draft.trim().is_empty());
    if empty || conversation.left {
        return false;
    }
    let (group_id, name) = (conversation.group_id.clone(), conversation.name.clone());
    if matches!(cx.model.pages.send_check, Some(SendCheck::Confirm { .. })) {
        // The dialog asks the user.
        return true;
    }
    // Asked again while the answer is on its way: asked again of the backend too, in case
    // the first request was refused for want of room.
    cx.model.pages.send_check = Some(SendCheck::Checking {
        group_id: group_id.clone(),
    });
    cx.backend.request(Request::Unverified {
        group_id,
        conversation: name,
        then_send: true,
    });
    true
}

/// One contact's banner: what happened, and the way to their page.
fn banner(ui: &mut egui::Ui, cx: &mut Cx<'_>, contact: &str) {
    let tr = cx.tr;
    let text = if got_a_device(&cx.model.trust_events, contact) {
        tr.t_args("banner-new-device", &[("contact", contact.into())])
    } else {
        tr.t_args("banner-changed-devices", &[("contact", contact.into())])
    };
    let mut open = false;
    egui::Frame::new()
        .fill(warning_fill(ui))
        .stroke(egui::Stroke::new(1.0, ui.visuals().warn_fg_color))
        .inner_margin(8.0)
        .corner_radius(4.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(text).strong());
                let verify = tr.t_args("banner-open-contact", &[("contact", contact.into())]);
                open = ui.button(verify).clicked();
            });
        });
    if open {
        let pages = &mut cx.model.pages;
        pages.contact = contact.to_owned();
        pages.safety_number = Loaded::Nothing;
        pages.notice = None;
        cx.model.page = Page::Contact;
    }
}

/// Whether this session saw a device of `contact` come into a conversation.
fn got_a_device(events: &std::collections::VecDeque<Event>, contact: &str) -> bool {
    events.iter().any(|event| match event {
        Event::Membership { added, .. } => added.iter().any(|m| m.user == contact),
        _ => false,
    })
}

/// The dialog that asks whether to send anyway, while the draft waits for it.
fn confirm(ui: &mut egui::Ui, cx: &mut Cx<'_>, group_id: &str) {
    let Some(SendCheck::Confirm {
        group_id: waiting,
        contacts,
    }) = cx.model.pages.send_check.clone()
    else {
        return;
    };
    if waiting != group_id {
        // The user opened another conversation: the draft stays where it was written.
        cx.model.pages.send_check = None;
        return;
    }
    let tr = cx.tr;
    let mut choice = None;
    let focused_id = egui::Id::unique((DIALOG_ID, "focused"));
    let modal = egui::Modal::new(egui::Id::unique(DIALOG_ID)).show(ui.ctx(), |ui| {
        ui.set_max_width(440.0);
        ui.heading(tr.t("banner-confirm-title"));
        ui.add_space(6.0);
        let body = tr.t_args(
            "banner-confirm-body",
            &[
                ("contacts", contacts.join(", ").into()),
                ("count", contacts.len().into()),
            ],
        );
        ui.label(body);
        ui.add_space(10.0);
        ui.horizontal(|ui| {
            let cancel = ui.button(tr.t("banner-confirm-cancel"));
            // The safe choice has the focus when the dialog opens: Enter keeps the draft.
            if !ui.data(|d| d.get_temp::<bool>(focused_id).unwrap_or(false)) {
                cancel.request_focus();
                ui.data_mut(|d| d.insert_temp(focused_id, true));
            }
            if cancel.clicked() {
                choice = Some(false);
            }
            if ui.button(tr.t("banner-confirm-send")).clicked() {
                choice = Some(true);
            }
        });
    });
    if modal.should_close() && choice.is_none() {
        choice = Some(false);
    }
    if choice.is_some() {
        ui.data_mut(|d| d.remove::<bool>(focused_id));
    }
    match choice {
        Some(true) => {
            cx.model.pages.send_check = None;
            for request in cx.model.send_checked(&waiting, contacts.clone()) {
                cx.backend.request(request);
            }
        }
        Some(false) => cx.model.pages.send_check = None,
        None => {}
    }
}

/// A pale fill in the warning's colour, readable in light and dark themes.
fn warning_fill(ui: &egui::Ui) -> Color32 {
    let warn = ui.visuals().warn_fg_color;
    Color32::from_rgba_unmultiplied(warn.r(), warn.g(), warn.b(), 28)
}

/// What a page just did ("device revoked"), in the user's language.
pub fn notice_label(ui: &mut egui::Ui, tr: &I18n, notice: &Notice) {
    let args: Vec<(&str, fluent_bundle::FluentValue<'_>)> = notice
        .args
        .iter()
        .map(|(name, value)| (*name, value.as_str().into()))
        .collect();
    ui.label(RichText::new(tr.t_args(notice.id, &args)).color(VERIFIED));
}

/// Why something a page asked for failed, in the user's language, and the library's own
/// words under it when there are some.
pub fn problem_label(ui: &mut egui::Ui, tr: &I18n, problem: &Problem) {
    let args: Vec<(&str, fluent_bundle::FluentValue<'_>)> = problem
        .args
        .iter()
        .map(|(name, value)| (*name, value.as_str().into()))
        .collect();
    ui.label(RichText::new(tr.t_args(problem.id, &args)).color(ui.visuals().error_fg_color));
    if let Some(detail) = &problem.detail {
        ui.label(RichText::new(detail).small().weak());
    }
}

/// How a page is being drawn, for pages that load again what may have changed while the
/// user was elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// The first time since the app started.
    First,
    /// Again, after frames without it: the user went elsewhere and came back.
    Again,
    /// As in the frame before.
    Staying,
}

/// How `page` is being drawn this frame (see [`Visit`]).
pub fn visit(ui: &egui::Ui, page: &str) -> Visit {
    let id = egui::Id::unique(("page-drawn-at", page));
    let pass = ui.ctx().cumulative_pass_nr();
    let last = ui.data_mut(|d| {
        let last = d.get_temp::<u64>(id);
        d.insert_temp(id, pass);
        last
    });
    match last {
        None => Visit::First,
        Some(last) if pass > last + 1 => Visit::Again,
        Some(_) => Visit::Staying,
    }
}

/// A green that reads as "done" or "verified" on light and dark backgrounds.
pub const VERIFIED: Color32 = Color32::from_rgb(0x1b, 0x7f, 0x3b);
