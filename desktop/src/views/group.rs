//! Groups: creating one (a name and members by user name), and managing the open one: its
//! members with their roles, adding members (any member may), and what only an admin may
//! do, removing a member, making one an admin, renaming the group, enabled only for an
//! admin; and leaving it. Removing and leaving ask for a confirmation first.
//!
//! The roles shown are those of the group's MLS state, which the relay enforces on every
//! commit: a refusal (`NOT_GROUP_ADMIN`, the roles having changed meanwhile) is said in
//! words that name the admins to ask, and the members are loaded again.

use std::collections::BTreeMap;

use egui::{RichText, TextEdit};
use relais_client::GroupMember;

use super::Cx;
use super::banner::{Visit, notice_label, problem_label, visit};
use crate::backend::{GroupChange, Request};
use crate::i18n::I18n;
use crate::model::{Kind, Loaded};

/// The confirmation dialog's id; the change it asks about is kept under it.
const CONFIRM_ID: &str = "group-confirm";
/// Group conversations offered as quick choices, at most.
const CHOICES_MAX: usize = 30;
/// Members listed at most: a larger group shows this many and says how many there are
/// (the relay's design target is 10,000 members; a page of buttons for each is no use).
const MEMBERS_SHOWN_MAX: usize = 500;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    if visit(ui, "group") != Visit::Staying {
        // What another page did is not this page's to say.
        cx.model.pages.notice = None;
        default_group(cx);
    }
    egui::ScrollArea::vertical()
        .id_salt("group-page")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            choose(ui, cx);
            ui.separator();
            if let Some(notice) = &cx.model.pages.notice {
                notice_label(ui, cx.tr, notice);
            }
            if cx.model.pages.group.is_empty() {
                create(ui, cx);
            } else {
                manage(ui, cx);
            }
        });
    confirm_dialog(ui, cx);
}

/// Arriving on the page: the open conversation, if it is a group.
fn default_group(cx: &mut Cx<'_>) {
    if cx.model.pages.governing.is_some() {
        return;
    }
    if let Some(c) = cx.model.selected_conversation()
        && c.kind != Kind::Direct
    {
        let group_id = c.group_id.clone();
        select(cx, group_id);
    }
}

fn select(cx: &mut Cx<'_>, group_id: String) {
    let pages = &mut cx.model.pages;
    if pages.group != group_id {
        pages.group = group_id;
        pages.members = Loaded::Nothing;
        pages.notice = None;
    }
}

/// "New group", and the groups this device is in as quick choices.
fn choose(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    let mut chosen = None;
    ui.horizontal_wrapped(|ui| {
        let creating = cx.model.pages.group.is_empty();
        if ui
            .selectable_label(creating, tr.t("group-create-title"))
            .clicked()
        {
            chosen = Some(String::new());
        }
        for c in cx
            .model
            .conversations
            .iter()
            .filter(|c| c.kind == Kind::Group && !c.left)
            .take(CHOICES_MAX)
        {
            let current = c.group_id == cx.model.pages.group;
            if ui.selectable_label(current, &c.name).clicked() {
                chosen = Some(c.group_id.clone());
            }
        }
    });
    if let Some(group_id) = chosen {
        select(cx, group_id);
    }
}

/// The form that creates a group.
fn create(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let tr = cx.tr;
    ui.heading(tr.t("group-create-title"));
    let (name_id, members_id) = (
        egui::Id::unique("group-new-name"),
        egui::Id::unique("group-new-members"),
    );
    let mut name = ui.data(|d| d.get_temp::<String>(name_id).unwrap_or_default());
    let mut members = ui.data(|d| d.get_temp::<String>(members_id).unwrap_or_default());
    let label = ui.label(tr.t("group-name"));
    ui.add(TextEdit::singleline(&mut name).id_salt("group-new-name"))
        .labelled_by(label.id);
    let label = ui.label(tr.t("group-members-field"));
    ui.add(
        TextEdit::singleline(&mut members)
            .id_salt("group-new-members")
            .hint_text(tr.t("group-members-hint"))
            .desired_width(f32::INFINITY),
    )
    .labelled_by(label.id);
    let busy = cx.model.pages.governing.is_some();
    let clicked = ui
        .add_enabled(!busy, egui::Button::new(tr.t("group-create")))
        .clicked();
    if busy {
        working(ui, tr);
    }
    let error_id = egui::Id::unique("group-new-error");
    if clicked {
        let users = user_names(&members);
        let error = if name.trim().is_empty() {
            Some("group-error-name-empty")
        } else if users.is_empty() {
            Some("group-error-members-empty")
        } else {
            None
        };
        match error {
            Some(id) => {
                ui.data_mut(|d| d.insert_temp(error_id, id));
            }
            None => {
                ui.data_mut(|d| d.remove::<&'static str>(error_id));
                let change = GroupChange::Create {
                    name: name.trim().to_owned(),
                    members: users,
                };
                govern(cx, String::new(), String::new(), change);
                name.clear();
                members.clear();
            }
        }
    }
    if let Some(id) = ui.data(|d| d.get_temp::<&'static str>(error_id)) {
        ui.label(RichText::new(tr.t(id)).color(ui.visuals().error_fg_color));
    }
    ui.data_mut(|d| {
        d.insert_temp(name_id, name);
        d.insert_temp(members_id, members);
    });
}

/// The chosen group: its members, and what this user's role allows.
fn manage(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let Some(members) = members(ui, cx) else {
        return;
    };
    let tr = cx.tr;
    let me = cx.model.user.clone().unwrap_or_default();
    let users = by_user(&members);
    let admin = users.get(&me).is_some_and(|(admin, _)| *admin);
    let admins: Vec<&str> = users
        .iter()
        .filter(|(_, (admin, _))| *admin)
        .map(|(user, _)| user.as_str())
        .collect();
    let busy = cx.model.pages.governing.is_some();
    if !admin {
        let hint = tr.t_args("group-admin-only", &[("admins", admins.join(", ").into())]);
        ui.label(RichText::new(hint).weak());
    }
    if busy {
        working(ui, tr);
    }
    ui.add_space(6.0);
    ui.label(RichText::new(tr.t("group-members-heading")).strong());
    let mut asked = None;
    for (user, (is_admin, devices)) in users.iter().take(MEMBERS_SHOWN_MAX) {
        let row = Row {
            user,
            admin: *is_admin,
            devices: *devices,
            me: *user == me,
        };
        asked = asked.or(member(ui, tr, &row, admin && !busy));
    }
    if users.len() > MEMBERS_SHOWN_MAX {
        let more = tr.t_args("group-more-members", &[("count", users.len().into())]);
        ui.label(RichText::new(more).weak());
    }
    ui.add_space(10.0);
    asked = asked.or(forms(ui, cx, admin && !busy, !busy));
    match asked {
        // Removing someone and leaving are confirmed first; the rest goes at once.
        Some(change @ (GroupChange::Remove(_) | GroupChange::Leave)) => {
            ui.data_mut(|d| d.insert_temp(egui::Id::unique(CONFIRM_ID), change));
        }
        Some(change) => {
            let group_id = cx.model.pages.group.clone();
            govern(cx, group_id, name_of(cx), change);
        }
        None => {}
    }
}

/// The group's heading and its members, loaded when the page finds none; `None` while
/// there are none to show (or it is no group).
fn members(ui: &mut egui::Ui, cx: &mut Cx<'_>) -> Option<Vec<GroupMember>> {
    let tr = cx.tr;
    let group_id = cx.model.pages.group.clone();
    let Some(conversation) = cx
        .model
        .conversations
        .iter()
        .find(|c| c.group_id == group_id)
    else {
        cx.model.pages.group.clear();
        return None;
    };
    let name = conversation.name.clone();
    ui.heading(&name);
    if conversation.kind == Kind::Direct {
        ui.label(tr.t("group-not-a-group"));
        return None;
    }
    match &cx.model.pages.members {
        Loaded::Nothing => {
            cx.model.pages.members = Loaded::Loading;
            cx.backend.request(Request::GroupMembers {
                group_id,
                conversation: name,
            });
            None
        }
        Loaded::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(tr.t("group-loading"));
            });
            None
        }
        Loaded::Failed(problem) => {
            problem_label(ui, tr, problem);
            None
        }
        Loaded::Ready(members) => Some(members.clone()),
    }
}

/// A user of the group as its list shows them.
struct Row<'a> {
    user: &'a str,
    admin: bool,
    devices: usize,
    me: bool,
}

/// One user's line, with what an admin may do to them (`may_govern`); returns the change
/// asked for.
fn member(ui: &mut egui::Ui, tr: &I18n, row: &Row<'_>, may_govern: bool) -> Option<GroupChange> {
    let role = tr.t(if row.admin {
        "group-role-admin"
    } else {
        "group-role-member"
    });
    let user = row.user;
    let mut asked = None;
    ui.horizontal_wrapped(|ui| {
        if row.me {
            let you = tr.t_args("group-you", &[("user", user.into()), ("role", role.into())]);
            ui.label(you);
            return;
        }
        let line = tr.t_args(
            "group-member-line",
            &[
                ("user", user.into()),
                ("role", role.into()),
                ("devices", row.devices.into()),
            ],
        );
        ui.label(line);
        let remove = tr.t_args("group-remove", &[("user", user.into())]);
        if ui
            .add_enabled(may_govern, egui::Button::new(remove))
            .clicked()
        {
            asked = Some(GroupChange::Remove(user.to_owned()));
        }
        if !row.admin {
            let promote = tr.t_args("group-promote", &[("user", user.into())]);
            if ui
                .add_enabled(may_govern, egui::Button::new(promote))
                .clicked()
            {
                asked = Some(GroupChange::Promote(user.to_owned()));
            }
        }
    });
    asked
}

/// Adding members, renaming (an admin's right), leaving; returns the change asked for.
fn forms(ui: &mut egui::Ui, cx: &Cx<'_>, may_govern: bool, may_act: bool) -> Option<GroupChange> {
    let tr = cx.tr;
    let mut asked = None;
    let (add_id, rename_id) = (
        egui::Id::unique("group-add"),
        egui::Id::unique("group-rename"),
    );
    let mut add = ui.data(|d| d.get_temp::<String>(add_id).unwrap_or_default());
    let mut rename = ui.data(|d| d.get_temp::<String>(rename_id).unwrap_or_default());
    ui.horizontal(|ui| {
        let label = ui.label(tr.t("group-add-field"));
        ui.add(
            TextEdit::singleline(&mut add)
                .id_salt("group-add")
                .hint_text(tr.t("group-members-hint")),
        )
        .labelled_by(label.id);
        let users = user_names(&add);
        if ui
            .add_enabled(
                may_act && !users.is_empty(),
                egui::Button::new(tr.t("group-add")),
            )
            .clicked()
        {
            asked = Some(GroupChange::Add(users));
            add.clear();
        }
    });
    ui.horizontal(|ui| {
        let label = ui.label(tr.t("group-rename-field"));
        ui.add_enabled(
            may_govern,
            TextEdit::singleline(&mut rename).id_salt("group-rename"),
        )
        .labelled_by(label.id);
        let ready = may_govern && !rename.trim().is_empty();
        if ui
            .add_enabled(ready, egui::Button::new(tr.t("group-rename")))
            .clicked()
        {
            asked = Some(GroupChange::Rename(rename.trim().to_owned()));
            rename.clear();
        }
    });
    ui.add_space(10.0);
    if ui
        .add_enabled(may_act, egui::Button::new(tr.t("group-leave")))
        .clicked()
    {
        asked = Some(GroupChange::Leave);
    }
    ui.data_mut(|d| {
        d.insert_temp(add_id, add);
        d.insert_temp(rename_id, rename);
    });
    asked
}

/// The dialog that confirms removing a member or leaving; Escape or "cancel" closes it.
fn confirm_dialog(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let id = egui::Id::unique(CONFIRM_ID);
    let Some(change) = ui.data(|d| d.get_temp::<GroupChange>(id)) else {
        return;
    };
    let tr = cx.tr;
    let name = name_of(cx);
    let (title, body, confirm) = match &change {
        GroupChange::Remove(user) => (
            tr.t_args(
                "group-remove-title",
                &[
                    ("user", user.as_str().into()),
                    ("name", name.as_str().into()),
                ],
            ),
            tr.t_args("group-remove-body", &[("user", user.as_str().into())]),
            tr.t("group-remove-confirm"),
        ),
        _ => (
            tr.t_args("group-leave-title", &[("name", name.as_str().into())]),
            tr.t("group-leave-body"),
            tr.t("group-leave-confirm"),
        ),
    };
    let mut choice = None;
    let focused_id = id.with("focused");
    let modal = egui::Modal::new(id).show(ui.ctx(), |ui| {
        ui.set_max_width(440.0);
        ui.heading(title);
        ui.add_space(6.0);
        ui.label(body);
        ui.add_space(10.0);
        ui.horizontal(|ui| {
            let cancel = ui.button(tr.t("group-cancel"));
            if !ui.data(|d| d.get_temp::<bool>(focused_id).unwrap_or(false)) {
                cancel.request_focus();
                ui.data_mut(|d| d.insert_temp(focused_id, true));
            }
            if cancel.clicked() {
                choice = Some(false);
            }
            let confirm = RichText::new(confirm).color(ui.visuals().error_fg_color);
            if ui.button(confirm).clicked() {
                choice = Some(true);
            }
        });
    });
    if modal.should_close() && choice.is_none() {
        choice = Some(false);
    }
    let Some(confirmed) = choice else {
        return;
    };
    ui.data_mut(|d| {
        d.remove::<GroupChange>(id);
        d.remove::<bool>(focused_id);
    });
    if confirmed {
        let group_id = cx.model.pages.group.clone();
        govern(cx, group_id, name, change);
    }
}

/// Hands a change to the backend; the page shows it on its way until the answer.
fn govern(cx: &mut Cx<'_>, group_id: String, conversation: String, change: GroupChange) {
    cx.model.pages.governing = Some(change.clone());
    cx.model.pages.notice = None;
    cx.backend.request(Request::Govern {
        group_id,
        conversation,
        change,
    });
}

/// The managed group's current name.
fn name_of(cx: &Cx<'_>) -> String {
    let group_id = &cx.model.pages.group;
    cx.model
        .conversations
        .iter()
        .find(|c| c.group_id == *group_id)
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn working(ui: &mut egui::Ui, tr: &I18n) {
    ui.horizontal(|ui| {
        ui.spinner();
        ui.label(tr.t("group-working"));
    });
}

/// Each user of the group, sorted, with whether they are an admin and how many devices
/// they have in it.
fn by_user(members: &[GroupMember]) -> BTreeMap<String, (bool, usize)> {
    let mut users: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    for member in members {
        let entry = users.entry(member.user.clone()).or_default();
        entry.0 |= member.admin;
        entry.1 += 1;
    }
    users
}

/// The user names in what the user typed: separated by commas, semicolons or spaces.
fn user_names(typed: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in typed.split(|c: char| c == ',' || c == ';' || c.is_whitespace()) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_split_on_commas_and_spaces() {
        assert_eq!(
            user_names(" marie@interieur.gouv.fr, paul ;jean\n\tpaul "),
            ["marie@interieur.gouv.fr", "paul", "jean"]
        );
        assert!(user_names(" , ;").is_empty());
    }

    #[test]
    fn members_are_grouped_by_user_with_their_role() {
        let member = |user: &str, key: &str, admin: bool| GroupMember {
            user: user.into(),
            device_key: key.into(),
            admin,
        };
        let users = by_user(&[
            member("bob@x", "01", false),
            member("alice@x", "02", true),
            member("alice@x", "03", true),
        ]);
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            [
                ("alice@x".to_owned(), (true, 2)),
                ("bob@x".to_owned(), (false, 1))
            ]
        );
    }
}
