//! Local search: the texts and history lines on this device that contain what the user
//! typed (the relay cannot read them, so only a device can search), newest first, each
//! with its conversation, sender and date, and a button that opens the conversation with
//! that entry at the top of its timeline.

use egui::{RichText, TextEdit};
use relais_client::ReceivedMessage;

use super::Cx;
use super::banner::problem_label;
use crate::backend::{Request, SEARCH_RESULTS_MAX};
use crate::model::Loaded;

/// The search field's id, for its memory.
const FIELD_ID: &str = "search-field";
/// Characters of an entry's text a result shows: enough to recognise it.
const EXCERPT_CHARS_MAX: usize = 300;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    ui.heading(tr.t("search-title"));
    ui.label(RichText::new(tr.t("search-hint")).weak());
    let id = egui::Id::unique(FIELD_ID);
    let mut typed = ui.data(|d| d.get_temp::<String>(id).unwrap_or_default());
    let mut search = false;
    ui.horizontal(|ui| {
        let label = ui.label(tr.t("search-field"));
        let field = ui
            .add(TextEdit::singleline(&mut typed).id_salt(FIELD_ID))
            .labelled_by(label.id);
        search |= field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        search |= ui.button(tr.t("search-button")).clicked();
    });
    ui.data_mut(|d| d.insert_temp(id, typed.clone()));
    if search && !typed.trim().is_empty() {
        cx.model.pages.search = Loaded::Loading;
        cx.backend.request(Request::Search {
            text: typed.trim().to_owned(),
        });
    }
    ui.add_space(8.0);
    match &cx.model.pages.search {
        Loaded::Nothing => {}
        Loaded::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("search-searching"));
            });
        }
        Loaded::Failed(problem) => problem_label(ui, tr, problem),
        Loaded::Ready((text, found)) => {
            let (text, found) = (text.clone(), found.clone());
            results(ui, cx, &text, &found);
        }
    }
}

fn results(ui: &mut egui::Ui, cx: &mut Cx<'_>, text: &str, found: &[ReceivedMessage]) {
    let tr = cx.tr;
    if found.is_empty() {
        ui.label(tr.t_args("search-none", &[("text", text.into())]));
        return;
    }
    ui.label(tr.t_args("search-results", &[("count", found.len().into())]));
    if found.len() >= SEARCH_RESULTS_MAX as usize {
        ui.label(RichText::new(tr.t_args("search-more", &[("count", found.len().into())])).weak());
    }
    let now = super::conversations::now_ms();
    let mut open = None;
    egui::ScrollArea::vertical()
        .id_salt("search-results")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for (index, entry) in found.iter().enumerate() {
                egui::Frame::new()
                    .fill(ui.visuals().faint_bg_color)
                    .inner_margin(6.0)
                    .corner_radius(4.0)
                    .show(ui, |ui| {
                        ui.set_width(ui.available_width());
                        let sender = if entry.event {
                            tr.t("search-event-sender")
                        } else {
                            entry.sender.clone()
                        };
                        let date =
                            super::when(tr, cx.model.utc_offset_seconds, entry.sent_at_ms, now);
                        let heading = tr.t_args(
                            "search-result",
                            &[
                                ("conversation", entry.conversation.as_str().into()),
                                ("sender", sender.into()),
                                ("date", date.into()),
                            ],
                        );
                        ui.label(RichText::new(heading).strong());
                        ui.label(excerpt(&entry.text));
                        let name = tr.t_args(
                            "search-open",
                            &[("conversation", entry.conversation.as_str().into())],
                        );
                        if ui.button(name).clicked() {
                            open = Some(index);
                        }
                    });
                ui.add_space(4.0);
            }
        });
    if let Some(entry) = open.and_then(|index| found.get(index)) {
        open_at(cx, entry);
    }
}

/// Opens the result's conversation once the backend has found where the entry stands.
fn open_at(cx: &mut Cx<'_>, entry: &ReceivedMessage) {
    let Some(conversation) = cx
        .model
        .conversations
        .iter()
        .find(|c| c.name == entry.conversation)
    else {
        return;
    };
    cx.backend.request(Request::Locate {
        group_id: conversation.group_id.clone(),
        sender: entry.sender.clone(),
        sent_at_ms: entry.sent_at_ms,
        text: entry.text.clone(),
    });
}

/// The start of a text, on as many lines as it has, cut at [`EXCERPT_CHARS_MAX`].
fn excerpt(text: &str) -> String {
    let mut cut: String = text.chars().take(EXCERPT_CHARS_MAX).collect();
    if text.chars().nth(EXCERPT_CHARS_MAX).is_some() {
        cut.push('…');
    }
    cut
}
