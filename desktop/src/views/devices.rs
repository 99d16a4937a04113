//! My devices: this user's devices as the relay lists them (this one marked, when each was
//! enrolled and last connected, the start of its key as membership lines show it),
//! revoking another one after a confirmation that names it, and linking a new one.
//!
//! Linking asks the relay for a single-use enrollment code and shows it as a link and its
//! QR code, for the new device to open; once enrolled, that device gets the history of
//! this user's conversations from their other devices, this one included. The link is a
//! secret: it stays only in memory, only while this page shows it, and is wiped when it is
//! hidden or the user leaves the page.

use egui::{RichText, TextEdit};
use relais_client::OwnDevice;

use super::Cx;
use super::banner::{Visit, notice_label, problem_label, visit};
use crate::backend::Request;
use crate::i18n::I18n;
use crate::model::{Loaded, Model};
use crate::qr;

/// The confirmation dialog's id; the device it is about is kept under it.
const REVOKE_ID: &str = "devices-revoke";
/// The QR code's texture slot (dropped with the link).
const LINK_SLOT: &str = "device-link";
/// Bytes of a device's key shown, in hex: what membership lines ("a new device d2df8e7f…")
/// and `relais devices` show.
const KEY_BYTES_SHOWN: usize = 8;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    came_back(ui, cx);
    let tr = cx.tr;
    egui::ScrollArea::vertical()
        .id_salt("devices-page")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading(tr.t("devices-title"));
                if ui.button(tr.t("devices-refresh")).clicked() {
                    cx.model.pages.devices = Loaded::Nothing;
                }
            });
            if let Some(notice) = &cx.model.pages.notice {
                notice_label(ui, tr, notice);
            }
            list(ui, cx);
            ui.add_space(16.0);
            ui.separator();
            link(ui, cx);
        });
    revoke_dialog(ui, cx);
}

/// The devices, loaded when the page finds none.
fn list(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    let devices = match &cx.model.pages.devices {
        Loaded::Nothing => {
            cx.model.pages.devices = Loaded::Loading;
            cx.backend.request(Request::Devices);
            return;
        }
        Loaded::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("devices-loading"));
            });
            return;
        }
        Loaded::Failed(problem) => {
            problem_label(ui, tr, problem);
            return;
        }
        Loaded::Ready(devices) => devices.clone(),
    };
    let revoking = cx.model.pages.revoking.clone();
    for device in &devices {
        egui::Frame::new()
            .fill(ui.visuals().faint_bg_color)
            .inner_margin(8.0)
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                if row(ui, cx, device, revoking.as_deref()) {
                    let id = egui::Id::unique(REVOKE_ID);
                    ui.data_mut(|d| d.insert_temp(id, device.device_id.clone()));
                }
            });
        ui.add_space(4.0);
    }
}

/// One device; returns whether its revoke button was pressed.
fn row(ui: &mut egui::Ui, cx: &Cx<'_>, device: &OwnDevice, revoking: Option<&str>) -> bool {
    let tr = cx.tr;
    let now = super::conversations::now_ms();
    let when = |at_ms| super::when(tr, cx.model.utc_offset_seconds, at_ms, now);
    let id = device.device_id.as_str();
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new(tr.t_args("devices-device", &[("id", id.into())])).strong());
        if device.this_device {
            ui.label(RichText::new(tr.t("devices-this-device")).color(super::banner::VERIFIED));
        }
    });
    let shown = &device.public_key[..device.public_key.len().min(KEY_BYTES_SHOWN)];
    let key = hex::encode(shown);
    ui.label(RichText::new(tr.t_args("devices-key", &[("key", key.into())])).monospace());
    let enrolled = when(device.enrolled_at_ms);
    ui.label(tr.t_args("devices-enrolled", &[("date", enrolled.into())]));
    match device.last_seen_ms {
        Some(at) => ui.label(tr.t_args("devices-last-seen", &[("date", when(at).into())])),
        None => ui.label(tr.t("devices-never-seen")),
    };
    if device.this_device {
        return false;
    }
    if revoking == Some(id) {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(tr.t("devices-revoking"));
        });
        return false;
    }
    let name = tr.t_args("devices-revoke", &[("id", id.into())]);
    ui.add_enabled(revoking.is_none(), egui::Button::new(name))
        .clicked()
}

/// The dialog that names the device to revoke; Escape or "cancel" closes it.
fn revoke_dialog(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let id = egui::Id::unique(REVOKE_ID);
    let Some(device_id) = ui.data(|d| d.get_temp::<String>(id)) else {
        return;
    };
    let tr = cx.tr;
    let mut choice = None;
    let focused_id = id.with("focused");
    let modal = egui::Modal::new(id).show(ui.ctx(), |ui| {
        ui.set_max_width(440.0);
        ui.heading(tr.t_args("devices-revoke-title", &[("id", device_id.as_str().into())]));
        ui.add_space(6.0);
        ui.label(tr.t("devices-revoke-body"));
        ui.add_space(10.0);
        ui.horizontal(|ui| {
            let cancel = ui.button(tr.t("devices-cancel"));
            if !ui.data(|d| d.get_temp::<bool>(focused_id).unwrap_or(false)) {
                cancel.request_focus();
                ui.data_mut(|d| d.insert_temp(focused_id, true));
            }
            if cancel.clicked() {
                choice = Some(false);
            }
            let revoke =
                RichText::new(tr.t("devices-revoke-confirm")).color(ui.visuals().error_fg_color);
            if ui.button(revoke).clicked() {
                choice = Some(true);
            }
        });
    });
    if modal.should_close() && choice.is_none() {
        choice = Some(false);
    }
    let Some(revoke) = choice else {
        return;
    };
    ui.data_mut(|d| {
        d.remove::<String>(id);
        d.remove::<bool>(focused_id);
    });
    if revoke {
        cx.model.pages.revoking = Some(device_id.clone());
        cx.model.pages.notice = None;
        cx.backend.request(Request::RevokeDevice { device_id });
    }
}

/// Linking a new device: the button, then the link, its QR code, and what to do with them.
fn link(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    ui.label(RichText::new(tr.t("devices-link-heading")).strong());
    ui.label(tr.t("devices-link-explained"));
    let ask = match &cx.model.pages.device_link {
        Loaded::Nothing => ui.button(tr.t("devices-link")).clicked(),
        Loaded::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("devices-linking"));
            });
            false
        }
        Loaded::Failed(problem) => {
            problem_label(ui, tr, problem);
            ui.button(tr.t("devices-link")).clicked()
        }
        Loaded::Ready(link) => {
            if shown_link(ui, tr, link.0.as_str()) {
                forget_link(ui.ctx(), cx.model);
            }
            false
        }
    };
    if ask {
        cx.model.pages.device_link = Loaded::Loading;
        cx.backend.request(Request::LinkDevice);
    }
}

/// The link as a QR code and as text to copy, with the warning that it is a secret;
/// returns whether the user asked to hide it.
fn shown_link(ui: &mut egui::Ui, tr: &I18n, uri: &str) -> bool {
    let copied_id = egui::Id::unique(LINK_SLOT).with("copied");
    ui.label(
        RichText::new(tr.t("devices-link-secret"))
            .color(ui.visuals().warn_fg_color)
            .strong(),
    );
    ui.add_space(6.0);
    let qr_label = tr.t("devices-link-qr-label");
    qr::show(ui, LINK_SLOT, uri, &qr_label, qr::SIDE_POINTS);
    ui.add_space(6.0);
    let label = ui.label(tr.t("devices-link-field"));
    // Read-only: shown so that it can be selected, never edited or kept.
    let mut shown = uri;
    ui.add(
        TextEdit::singleline(&mut shown)
            .id_salt("devices-link-text")
            .desired_width(f32::INFINITY)
            .font(egui::TextStyle::Monospace),
    )
    .labelled_by(label.id);
    let mut hide = false;
    ui.horizontal(|ui| {
        if ui.button(tr.t("devices-link-copy")).clicked() {
            ui.ctx().copy_text(uri.to_owned());
            ui.data_mut(|d| d.insert_temp(copied_id, true));
        }
        hide = ui.button(tr.t("devices-link-hide")).clicked();
    });
    if ui.data(|d| d.get_temp::<bool>(copied_id).unwrap_or(false)) {
        ui.label(tr.t("devices-link-copied"));
    }
    hide
}

/// Coming back to the page: the list is read again (a device may have been added or
/// revoked elsewhere). A link from the last visit is gone already: the app drops it in the
/// first frame that does not show this page ([`left`]), so that a secret does not wait on a
/// page nobody looks at.
fn came_back(ui: &egui::Ui, cx: &mut Cx<'_>) {
    let visit = visit(ui, "devices");
    if visit != Visit::Staying {
        // What another page did is not this page's to say.
        cx.model.pages.notice = None;
    }
    if visit != Visit::Again {
        return;
    }
    if !matches!(cx.model.pages.devices, Loaded::Loading) {
        cx.model.pages.devices = Loaded::Nothing;
    }
}

/// The page is not shown: a link it showed, or one on its way, is forgotten (one that
/// arrives later is dropped by the model).
pub fn left(ctx: &egui::Context, model: &mut Model) {
    if model.pages.device_link != Loaded::Nothing {
        forget_link(ctx, model);
    }
}

fn forget_link(ctx: &egui::Context, model: &mut Model) {
    model.pages.device_link = Loaded::Nothing;
    qr::forget(ctx, LINK_SLOT);
    ctx.data_mut(|d| d.remove::<bool>(egui::Id::unique(LINK_SLOT).with("copied")));
}
