//! The conversation list: each conversation with its unread count, its last entry and
//! when it came, newest activity first; a field to start a direct conversation by name.
//!
//! Rows have one fixed height (two lines), so the list lays out only the rows in view
//! however many conversations there are. Tab reaches the list; the arrow keys move the
//! keyboard focus up and down without opening anything (opening marks a conversation
//! read); Enter, Space or a click opens a row.

use egui::{Align2, Key, Modifiers, RichText, Role, Sense, TextEdit, WidgetInfo};

use super::Cx;
use crate::model::{Conversation, Kind};

/// A row: the name line, the preview line, and padding.
const ROW_HEIGHT: f32 = 44.0;
/// Where a row keeps its index in egui's memory, for the arrow keys.
const ROW_KEY: &str = "conversation-row";
/// The preview's length at most, in characters, before it is cut with an ellipsis.
const PREVIEW_CHARS_MAX: usize = 80;

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    ui.add_space(4.0);
    ui.heading(cx.tr.t("conversations-title"));
    new_direct(ui, cx);
    ui.separator();
    if cx.model.conversations.is_empty() {
        ui.label(RichText::new(cx.tr.t("conversations-empty")).weak());
        return;
    }
    let moved = arrow_selection(ui, cx);
    let now_ms = now_ms();
    let count = cx.model.conversations.len();
    let mut opened = None;
    let mut area = egui::ScrollArea::vertical()
        .id_salt("conversation-list")
        .auto_shrink([false, false]);
    // The row the arrows selected may be out of view, and then not laid out: scroll to it.
    let view_id = ui.scope_id().with("conversation-list-view");
    if let Some(index) = moved
        && let Some((offset, height)) = ui.data(|d| d.get_temp::<(f32, f32)>(view_id))
    {
        let pitch = ROW_HEIGHT + ui.spacing().item_spacing.y;
        let (top, bottom) = (index as f32 * pitch, index as f32 * pitch + ROW_HEIGHT);
        if top < offset {
            area = area.vertical_scroll_offset(top);
        } else if bottom > offset + height {
            area = area.vertical_scroll_offset(bottom - height);
        }
    }
    let output = area.show_rows(ui, ROW_HEIGHT, count, |ui, rows| {
        for index in rows {
            let conversation = &cx.model.conversations[index];
            let selected = cx.model.selected.as_deref() == Some(&conversation.group_id);
            let response = row(ui, cx, conversation, selected, now_ms);
            ui.data_mut(|d| d.insert_temp(response.id.with(ROW_KEY), index));
            if response.has_focus() {
                // Up and Down are the list's (they select), not egui's focus moves.
                let arrows = egui::EventFilter {
                    vertical_arrows: true,
                    ..Default::default()
                };
                ui.memory_mut(|m| m.set_focus_lock_filter(response.id, arrows));
            }
            if moved == Some(index) {
                response.request_focus();
            }
            if response.clicked() {
                opened = Some(conversation.group_id.clone());
            }
        }
    });
    let view = (output.state.clamped_offset().y, output.inner_rect.height());
    ui.data_mut(|d| d.insert_temp(view_id, view));
    if let Some(group_id) = opened {
        for request in cx.model.open(&group_id) {
            cx.backend.request(request);
        }
    }
}

/// The "new conversation" field: a user's name, Enter or the button opens the direct
/// conversation with them (created by the first text).
fn new_direct(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    let label = ui.label(cx.tr.t("conversations-new-label"));
    let mut go = false;
    ui.horizontal(|ui| {
        let field = ui
            .add(
                TextEdit::singleline(&mut cx.model.new_direct_input)
                    .hint_text(cx.tr.t("conversations-new-hint"))
                    .desired_width(ui.available_width() - 70.0),
            )
            .labelled_by(label.id);
        go |= field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
        go |= ui.button(cx.tr.t("conversations-new-open")).clicked();
    });
    let user = cx.model.new_direct_input.trim().to_owned();
    if go && !user.is_empty() {
        cx.model.new_direct_input.clear();
        for request in cx.model.start_direct(&user) {
            cx.backend.request(request);
        }
    }
}

/// Up and Down move the keyboard focus from the row that has it to the next or previous
/// one, which does not open (Enter does); returns the row that takes the focus.
fn arrow_selection(ui: &mut egui::Ui, cx: &Cx<'_>) -> Option<usize> {
    let focused = ui
        .memory(|m| m.focused())
        .and_then(|id| ui.data(|d| d.get_temp::<usize>(id.with(ROW_KEY))))?;
    let step = if ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::ArrowDown)) {
        1
    } else if ui.input_mut(|i| i.consume_key(Modifiers::NONE, Key::ArrowUp)) {
        -1
    } else {
        return None;
    };
    let last = cx.model.conversations.len().checked_sub(1)?;
    Some(focused.saturating_add_signed(step).min(last))
}

/// One conversation: name and unread badge, then the preview and its time. Its accessible
/// name reads the same, so a screen reader says "bob@…, 2 unread, Bonjour".
fn row(
    ui: &mut egui::Ui,
    cx: &Cx<'_>,
    conversation: &Conversation,
    selected: bool,
    now_ms: i64,
) -> egui::Response {
    let width = ui.available_width();
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, ROW_HEIGHT), Sense::click());
    let name = display_name(cx, conversation);
    let preview = preview(cx, conversation);
    let unread = conversation.unread;
    let spoken = match unread {
        0 => format!("{name}, {preview}"),
        n => format!(
            "{name}, {}, {preview}",
            cx.tr.t_args("conversations-unread", &[("count", n.into())])
        ),
    };
    response.widget_info(|| WidgetInfo::selected(Role::Button, true, selected, &spoken));
    if ui.is_rect_visible(rect) {
        let time = conversation
            .last
            .as_ref()
            .map(|last| super::day_or_time(cx.tr, cx.model.utc_offset_seconds, last.at_ms, now_ms));
        let lines = Lines {
            name,
            preview,
            time,
            unread,
        };
        paint(ui, &response, selected, &lines);
    }
    response
}

/// What a row shows.
struct Lines {
    name: String,
    preview: String,
    time: Option<String>,
    unread: u64,
}

/// Paints a row: its background when selected, hovered or focused (with a ring for the
/// keyboard focus), the unread badge, the name, the time and the preview.
fn paint(ui: &egui::Ui, response: &egui::Response, selected: bool, lines: &Lines) {
    let rect = response.rect;
    let visuals = ui.style().interact_selectable(response, selected);
    let painter = ui.painter_at(rect);
    if selected || response.hovered() || response.has_focus() {
        painter.rect_filled(rect, 4.0, visuals.weak_bg_fill);
    }
    if response.has_focus() {
        let stroke = ui.visuals().selection.stroke;
        painter.rect_stroke(rect.shrink(1.0), 4.0, stroke, egui::StrokeKind::Inside);
    }
    let text = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    let strong = ui.visuals().strong_text_color();
    let small = egui::FontId::proportional(12.0);
    let left = rect.left() + 8.0;
    let mut right = rect.right() - 8.0;
    if lines.unread > 0 {
        let count = lines.unread.min(9_999).to_string();
        let badge = painter.layout_no_wrap(count, small.clone(), strong);
        let size = egui::vec2(badge.size().x + 10.0, 18.0);
        let at = egui::Rect::from_min_size(egui::pos2(right - size.x, rect.top() + 5.0), size);
        painter.rect_filled(at, 9.0, ui.visuals().selection.bg_fill);
        painter.galley(at.center() - badge.size() / 2.0, badge, text);
        right = at.left() - 6.0;
    }
    // The preview stops where the time starts.
    let mut preview_until = rect.right() - 8.0;
    if let Some(time) = &lines.time {
        let time = painter.layout_no_wrap(time.clone(), small.clone(), weak);
        let at = egui::pos2(rect.right() - 8.0 - time.size().x, rect.top() + 25.0);
        preview_until = at.x - 8.0;
        painter.galley(at, time, weak);
    }
    let clip = |until: f32| {
        painter.with_clip_rect(egui::Rect::from_min_max(
            rect.min,
            egui::pos2(until, rect.max.y),
        ))
    };
    let name_colour = if lines.unread > 0 { strong } else { text };
    let name_at = egui::pos2(left, rect.top() + 6.0);
    let font = egui::FontId::proportional(14.0);
    clip(right).text(name_at, Align2::LEFT_TOP, &lines.name, font, name_colour);
    let preview_at = egui::pos2(left, rect.top() + 25.0);
    clip(preview_until).text(preview_at, Align2::LEFT_TOP, &lines.preview, small, weak);
}

/// The name a conversation shows: a group not yet named shows that it is being joined.
fn display_name(cx: &Cx<'_>, conversation: &Conversation) -> String {
    let name = match conversation.kind {
        Kind::Unknown => cx.tr.t("conversations-joining"),
        Kind::Direct | Kind::Group => conversation.name.clone(),
    };
    if conversation.left {
        cx.tr.t_args("conversations-left", &[("name", name.into())])
    } else {
        name
    }
}

/// The last entry in one line: "bob: Bonjour", or a system line as it is.
fn preview(cx: &Cx<'_>, conversation: &Conversation) -> String {
    let Some(last) = &conversation.last else {
        return cx.tr.t("conversations-no-message");
    };
    let line: String = last.text.lines().next().unwrap_or_default().to_owned();
    let mut cut: String = line.chars().take(PREVIEW_CHARS_MAX).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    let own = cx.model.user.as_deref() == Some(last.sender.as_str());
    match last.sender.as_str() {
        "" => cut,
        _ if own => cx
            .tr
            .t_args("conversations-preview-own", &[("text", cut.into())]),
        sender => {
            let short = sender.split('@').next().unwrap_or(sender);
            format!("{short}: {cut}")
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
