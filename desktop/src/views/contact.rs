//! A contact's page (D14): their devices, the safety number the user compares with them
//! out of band (large, in groups of five digits) and its QR code, whether they are
//! verified, verified once but changed devices since, or never verified, and the button
//! that marks them verified once the user has compared.
//!
//! The contact is the open direct conversation's, one picked from the list of direct
//! conversations, or one typed by name. Marking verified sends the number shown back to
//! the library, which refuses it if the contact's devices changed meanwhile; the page then
//! shows the new number to compare.

use egui::RichText;
use relais_client::SafetyNumber;

use super::Cx;
use super::banner::{VERIFIED, Visit, notice_label, problem_label, visit};
use crate::backend::Request;
use crate::model::{Kind, Loaded};
use crate::qr;

/// The contact field's id, for its label and its memory.
const FIELD_ID: &str = "contact-field";
/// Direct conversations offered as a quick choice, at most.
const CHOICES_MAX: usize = 30;
/// The safety number's digits, in points: large enough to read aloud from across a desk.
const DIGITS_SIZE: f32 = 24.0;
/// Groups of five digits per line: twelve groups in three lines of four.
const GROUPS_PER_LINE: usize = 4;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    if visit(ui, "contact") != Visit::Staying {
        // What another page did is not this page's to say.
        cx.model.pages.notice = None;
        default_contact(cx);
    }
    egui::ScrollArea::vertical()
        .id_salt("contact-page")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            choose(ui, cx);
            ui.separator();
            let contact = cx.model.pages.contact.clone();
            if contact.is_empty() {
                ui.label(RichText::new(cx.tr.t("contact-choose-hint")).weak());
                return;
            }
            if cx
                .model
                .user
                .as_deref()
                .is_some_and(|me| same_user(me, &contact))
            {
                ui.label(cx.tr.t("contact-error-yourself"));
                return;
            }
            number_page(ui, cx, &contact);
        });
}

/// Arriving on the page: the open direct conversation's contact, if one is open.
fn default_contact(cx: &mut Cx<'_>) {
    let Some(c) = cx.model.selected_conversation() else {
        return;
    };
    if c.kind == Kind::Direct && c.name != cx.model.pages.contact {
        let contact = c.name.clone();
        choose_contact(cx, contact);
    }
}

fn choose_contact(cx: &mut Cx<'_>, contact: String) {
    let pages = &mut cx.model.pages;
    pages.contact = contact;
    pages.safety_number = Loaded::Nothing;
    pages.confirming = false;
    pages.notice = None;
}

/// The contact field, and the direct conversations' contacts as quick choices.
fn choose(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    let id = egui::Id::unique(FIELD_ID);
    let mut typed = ui.data_mut(|d| d.get_temp::<String>(id).unwrap_or_default());
    let mut chosen = None;
    ui.horizontal(|ui| {
        let label = ui.label(tr.t("contact-field"));
        let field = ui
            .add(
                egui::TextEdit::singleline(&mut typed)
                    .id_salt(FIELD_ID)
                    .hint_text(tr.t("contact-field-hint")),
            )
            .labelled_by(label.id);
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if (ui.button(tr.t("contact-show")).clicked() || entered) && !typed.trim().is_empty() {
            chosen = Some(typed.trim().to_owned());
        }
    });
    let direct: Vec<String> = cx
        .model
        .conversations
        .iter()
        .filter(|c| c.kind == Kind::Direct)
        .take(CHOICES_MAX)
        .map(|c| c.name.clone())
        .collect();
    if !direct.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new(tr.t("contact-choices")).weak());
            for name in direct {
                let current = name == cx.model.pages.contact;
                if ui.selectable_label(current, &name).clicked() {
                    chosen = Some(name);
                }
            }
        });
    }
    ui.data_mut(|d| d.insert_temp(id, typed));
    if let Some(contact) = chosen
        && contact != cx.model.pages.contact
    {
        choose_contact(cx, contact);
    }
}

/// The contact's safety number, loaded if it is not yet.
fn number_page(ui: &mut egui::Ui, cx: &mut Cx<'_>, contact: &str) {
    let tr = cx.tr;
    ui.heading(tr.t_args("contact-title", &[("contact", contact.into())]));
    match &cx.model.pages.safety_number {
        Loaded::Nothing => {
            cx.model.pages.safety_number = Loaded::Loading;
            cx.backend.request(Request::SafetyNumber {
                contact: contact.to_owned(),
                confirm: None,
            });
        }
        Loaded::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("contact-loading"));
            });
        }
        Loaded::Failed(problem) => {
            problem_label(ui, tr, problem);
            if ui.button(tr.t("contact-reload")).clicked() {
                cx.model.pages.safety_number = Loaded::Nothing;
            }
        }
        Loaded::Ready(number) => {
            let number = number.clone();
            verified_page(ui, cx, &number);
        }
    }
}

fn verified_page(ui: &mut egui::Ui, cx: &mut Cx<'_>, number: &SafetyNumber) {
    let tr = cx.tr;
    let contact = number.contact.as_str();
    status(ui, tr, number);
    if let Some(notice) = &cx.model.pages.notice {
        notice_label(ui, tr, notice);
    }
    ui.add_space(10.0);
    ui.label(RichText::new(tr.t("contact-safety-heading")).strong());
    let name = tr.t_args(
        "contact-safety-number-label",
        &[("contact", contact.into())],
    );
    ui.horizontal_wrapped(|ui| {
        digits(ui, number, name);
        ui.add_space(24.0);
        let label = tr.t_args("contact-qr-label", &[("contact", contact.into())]);
        qr::show(ui, "contact", &number.qr_payload, &label, qr::SIDE_POINTS);
    });
    ui.add_space(6.0);
    ui.label(tr.t_args("contact-compare-explained", &[("contact", contact.into())]));
    ui.add_space(6.0);
    let confirming = cx.model.pages.confirming;
    let mark = ui.add_enabled(
        !number.verified && !confirming,
        egui::Button::new(tr.t("contact-mark-verified")),
    );
    if confirming {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(tr.t("contact-confirming"));
        });
    }
    if mark.clicked() {
        cx.model.pages.confirming = true;
        cx.model.pages.notice = None;
        cx.backend.request(Request::SafetyNumber {
            contact: cx.model.pages.contact.clone(),
            confirm: Some(number.number.clone()),
        });
    }
    ui.add_space(12.0);
    ui.label(RichText::new(tr.t("contact-devices-heading")).strong());
    for key in &number.devices {
        ui.label(
            RichText::new(tr.t_args("contact-device", &[("key", key.as_str().into())])).monospace(),
        );
    }
}

/// Verified, no longer verified (a device came or went since), or never verified.
fn status(ui: &mut egui::Ui, tr: &crate::i18n::I18n, number: &SafetyNumber) {
    let contact = number.contact.as_str();
    let (badge, detail, colour) = if number.verified {
        (
            "contact-status-verified",
            "contact-status-verified-detail",
            VERIFIED,
        )
    } else if number.changed_since_verified {
        (
            "contact-status-changed",
            "contact-status-changed-detail",
            ui.visuals().warn_fg_color,
        )
    } else {
        (
            "contact-status-unverified",
            "contact-status-unverified-detail",
            ui.visuals().weak_text_color(),
        )
    };
    ui.horizontal_wrapped(|ui| {
        egui::Frame::new()
            .stroke(egui::Stroke::new(1.5, colour))
            .corner_radius(10.0)
            .inner_margin(egui::Margin::symmetric(8, 2))
            .show(ui, |ui| {
                ui.label(RichText::new(tr.t(badge)).color(colour).strong());
            });
        ui.label(tr.t_args(detail, &[("contact", contact.into())]));
    });
}

/// The 60 digits in twelve groups of five, three lines of four, large and monospaced. For
/// screen readers it is read-only text named `name` whose value is the number on one line,
/// group by group (a label's name would be its text, so it is not one).
fn digits(ui: &mut egui::Ui, number: &SafetyNumber, name: String) {
    let groups: Vec<&str> = number
        .number
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let lines: Vec<String> = groups
        .chunks(GROUPS_PER_LINE)
        .map(|line| line.join("  "))
        .collect();
    let text = RichText::new(lines.join("\n"))
        .monospace()
        .size(DIGITS_SIZE);
    let response = ui.label(text);
    let spoken = relais_client::grouped_safety_number(&number.number);
    response.widget_info(|| {
        let mut info = egui::WidgetInfo::labeled(egui::Role::TextInput, true, &name);
        info.current_text_value = Some(spoken.clone());
        info
    });
    ui.ctx()
        .accesskit_node_builder(response.id, |node| node.set_read_only());
}

/// Whether `typed` names the user `name` (`bob` or `bob@domain` for `bob@domain`).
fn same_user(name: &str, typed: &str) -> bool {
    name == typed
        || name
            .split_once('@')
            .is_some_and(|(local, _)| local == typed)
}
