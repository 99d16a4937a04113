//! The open conversation's timeline: texts, and the lines the library writes about the
//! conversation (members and devices added or removed, verification changes, renames),
//! drawn apart from texts so they cannot be taken for something someone said.
//!
//! It is virtualised so that a history of 100,000 entries scrolls as smoothly as one of ten:
//! only the entries in view are laid out. Rows have variable heights (a text wraps to the
//! window's width), kept in a height cache: each entry carries its height, estimated from its
//! length until it has been laid out once at the current width, then exact. Every frame
//! computes the entries' tops from the cache (additions only, about a tenth of a
//! millisecond for 100,000) and lays out the rows that meet the viewport. A change of width
//! re-estimates every entry from its length, in one pass.
//!
//! So that what the user reads does not jump when older pages arrive above it or an
//! estimate becomes exact, the view keeps an anchor: the entry at the top of the view and
//! how far into it the view starts; the next frame scrolls to where that entry now is.
//! At the bottom, the view stays at the bottom as new entries arrive. The entries not loaded
//! yet take one line each above those loaded, so the scroll bar stands for the whole
//! history; when the view comes within a few screens of them, it asks for the page before
//! the oldest entry loaded.
//!
//! The tops are kept in `f64`: 200,000 entries make some 15 million points, where an `f32`
//! is off by a point or more; rows are placed relative to the viewport's top, where the
//! distances are small again.
//!
//! egui's scroll area has no keys of its own: Page Up and Page Down scroll by a screen, and
//! Ctrl+Home and Ctrl+End (Home and End when the composer does not hold the focus, where
//! they move in the text) go to the oldest and newest entries.

use egui::{Align, Key, Layout, Modifiers, RichText, Sense, UiBuilder};
use relais_client::DeliveryState;

use std::collections::BTreeMap;

use super::Cx;
use super::conversations::now_ms;
use crate::i18n::I18n;
use crate::model::{Entry, TIMELINE_ENTRIES_MAX, Timeline};

/// Space between entries.
const GAP: f32 = 6.0;
/// How close to the top of what is loaded the view may come before the page before it is
/// asked for: a few screens, so that a steady scroll never waits for it.
const PREFETCH_PX: f32 = 2_000.0;
/// The estimate's average character width, in points, for a text not yet laid out.
const CHAR_WIDTH_ESTIMATE: f32 = 7.0;
/// A row's height without its text: the sender's line and the padding.
const HEADER_HEIGHT: f32 = 20.0;
const LINE_HEIGHT: f32 = 18.0;
/// How much of the view Page Up and Page Down scroll: a line of the last screen stays.
const PAGE_FRACTION: f32 = 0.9;

/// Where a key asks the view to go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Jump {
    /// By this many points (negative: up).
    By(f32),
    Oldest,
    Newest,
}

pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>) {
    if placeholder(ui, cx) {
        return;
    }
    status_strip(ui, cx.tr, &cx.model.timeline);
    let width = (ui.available_width() - 16.0).max(120.0);
    let timeline = &mut cx.model.timeline;
    if (timeline.measured_width - width).abs() > 0.5 {
        re_estimate(timeline, width);
    }
    let tops = tops(timeline);
    let jump = jump_key(ui);
    let scrolled = rows(ui, cx, &tops, width, jump);
    follow(ui, cx, &tops, &scrolled);
}

/// What the view shows without entries: a new conversation, or one loading or empty.
/// Returns whether it showed that.
fn placeholder(ui: &mut egui::Ui, cx: &Cx<'_>) -> bool {
    let timeline = &cx.model.timeline;
    let key = if timeline.group_id.is_empty() {
        "timeline-new" // a new direct conversation: nothing yet
    } else if !timeline.entries.is_empty() {
        return false;
    } else if timeline.refreshing {
        "timeline-loading"
    } else {
        "timeline-empty"
    };
    ui.centered_and_justified(|ui| ui.label(RichText::new(cx.tr.t(key)).weak()));
    true
}

/// A strip of fixed height above the entries (so that the view does not move when it
/// fills or empties): older entries on their way, or the bound reached.
fn status_strip(ui: &mut egui::Ui, tr: &I18n, timeline: &Timeline) {
    ui.allocate_ui(egui::vec2(ui.available_width(), LINE_HEIGHT), |ui| {
        ui.set_min_height(LINE_HEIGHT);
        if timeline.loading_older {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(RichText::new(tr.t("timeline-loading-older")).small().weak());
            });
        } else if !timeline.has_older() && (timeline.entries.len() as u64) < timeline.total {
            ui.label(RichText::new(tr.t("timeline-older-limit")).small().weak());
        }
    });
}

/// The scrolling key pressed this frame, if any: the timeline's whether the composer has
/// the focus or nothing has (a field elsewhere keeps its keys).
fn jump_key(ui: &mut egui::Ui) -> Option<Jump> {
    let focus = ui.memory(|m| m.focused());
    let composer = egui::Id::unique(super::composer::TEXT_ID);
    if focus.is_some_and(|id| id != composer) {
        return None;
    }
    let page = ui.available_height() * PAGE_FRACTION;
    let plain_home_end = focus.is_none();
    ui.input_mut(|i| {
        let mut pressed = |modifiers, key| i.consume_key(modifiers, key);
        if pressed(Modifiers::NONE, Key::PageUp) {
            Some(Jump::By(-page))
        } else if pressed(Modifiers::NONE, Key::PageDown) {
            Some(Jump::By(page))
        } else if pressed(Modifiers::COMMAND, Key::Home)
            || (plain_home_end && pressed(Modifiers::NONE, Key::Home))
        {
            Some(Jump::Oldest)
        } else if pressed(Modifiers::COMMAND, Key::End)
            || (plain_home_end && pressed(Modifiers::NONE, Key::End))
        {
            Some(Jump::Newest)
        } else {
            None
        }
    })
}

/// Where the view stands after a frame.
struct Scrolled {
    viewport: egui::Rect,
    offset: f32,
    at_bottom: bool,
    /// The view was to start at the newest entry and is not there yet: a new scroll area
    /// cannot be placed beyond the content it had at the previous pass.
    unplaced: bool,
}

/// The scroll area, laying out only the entries that meet its viewport and measuring
/// them into the height cache.
fn rows(
    ui: &mut egui::Ui,
    cx: &mut Cx<'_>,
    tops: &[f64],
    width: f32,
    jump: Option<Jump>,
) -> Scrolled {
    let timeline = &mut cx.model.timeline;
    let total_height = tops.last().copied().unwrap_or(0.0);
    let bottom = (total_height - f64::from(ui.available_height())).max(0.0) as f32;
    let jumped_to = jump.map(|jump| match jump {
        Jump::By(by) => (timeline.last_offset + by).clamp(0.0, bottom),
        Jump::Oldest => 0.0,
        Jump::Newest => bottom,
    });
    if let Some(to) = jumped_to {
        timeline.at_bottom = to >= bottom;
    }
    let mut area = egui::ScrollArea::vertical()
        .id_salt(("timeline", &timeline.group_id))
        .auto_shrink([false, false])
        // Without a margin, the scroll offset is where the view's top is among the rows.
        .content_margin(0.0)
        .stick_to_bottom(timeline.at_bottom);
    // A timeline shown for the first time (or replaced) starts at its newest entry.
    let placing = timeline.anchor.is_none();
    if placing {
        area = area.vertical_scroll_offset(bottom);
    } else if let Some(to) = jumped_to {
        area = area.vertical_scroll_offset(to);
    }
    // Only when something above the anchor changed height: forcing the offset otherwise
    // would fight the scroll animation.
    else if !timeline.at_bottom
        && let Some(offset) = anchored_offset(timeline, tops)
        && (offset - f64::from(timeline.last_offset)).abs() > 0.5
    {
        area = area.vertical_scroll_offset(offset as f32);
    }
    let look = Look {
        tr: cx.tr,
        me: cx.model.user.as_deref().unwrap_or_default(),
        deliveries: &cx.model.deliveries,
        offset_seconds: cx.model.utc_offset_seconds,
        now_ms: now_ms(),
    };
    let output = area.show_viewport(ui, |ui, viewport| {
        ui.set_height(total_height as f32);
        // Rows are placed from the viewport's top on screen, in small distances.
        let (view_top, view_bottom) = (f64::from(viewport.min.y), f64::from(viewport.max.y));
        let screen_top = egui::pos2(ui.max_rect().min.x, ui.clip_rect().min.y);
        let first = tops
            .partition_point(|top| *top <= view_top)
            .saturating_sub(1);
        let mut changed = false;
        let rows = timeline.entries.iter_mut().zip(tops).skip(first);
        for (entry, top) in rows.take_while(|(_, top)| **top <= view_bottom) {
            let at = screen_top + egui::vec2(0.0, (*top - view_top) as f32);
            let rect = egui::Rect::from_min_size(at, egui::vec2(width, f32::INFINITY));
            let layout = Layout::top_down(Align::Min);
            let mut row = ui.new_child(UiBuilder::new().max_rect(rect).layout(layout));
            draw(&mut row, &look, entry);
            let height = row.min_rect().height() + GAP;
            changed |= (entry.height - height).abs() > 0.5;
            entry.height = height;
            entry.measured = true;
        }
        if changed && placing {
            // The first look at a conversation: measured, its rows are laid out again at
            // once rather than shown a frame off.
            ui.ctx()
                .request_discard("the timeline's first rows were measured");
        }
        if changed {
            ui.ctx().request_repaint();
        }
        viewport
    });
    let max_offset = (output.content_size.y - output.inner_rect.height()).max(0.0);
    let offset = output.state.clamped_offset().y;
    let at_bottom = offset >= max_offset - 4.0;
    Scrolled {
        viewport: output.inner,
        offset,
        at_bottom,
        unplaced: placing && !at_bottom,
    }
}

/// After a frame: the anchor for the next, the read mark when the view came back to the
/// bottom, and the page before the oldest entry when the view nears it.
fn follow(ui: &egui::Ui, cx: &mut Cx<'_>, tops: &[f64], scrolled: &Scrolled) {
    if scrolled.unplaced {
        // This pass shows the oldest entries loaded: not shown, it is done again at once,
        // when the scroll area knows its content's height.
        ui.ctx()
            .request_discard("the timeline starts at its newest entry");
        ui.ctx().request_repaint();
    }
    if scrolled.unplaced || ui.ctx().will_discard() {
        return; // a pass nobody sees changes nothing
    }
    keep_anchor(&mut cx.model.timeline, tops, scrolled.offset);
    if scrolled.at_bottom && !cx.model.timeline.at_bottom {
        if let Some(request) = cx.model.reached_bottom() {
            cx.backend.request(request);
        }
    } else {
        cx.model.timeline.at_bottom = scrolled.at_bottom;
    }
    let loaded_top = tops.first().copied().unwrap_or(0.0);
    if f64::from(scrolled.viewport.min.y) < loaded_top + f64::from(PREFETCH_PX)
        && let Some(request) = cx.model.timeline.older_request()
    {
        cx.backend.request(request);
    }
}

/// What drawing an entry needs besides the entry.
struct Look<'a> {
    tr: &'a I18n,
    me: &'a str,
    deliveries: &'a BTreeMap<String, (DeliveryState, Option<String>)>,
    offset_seconds: i32,
    now_ms: i64,
}

/// One entry: a text with its sender, time and (for this device's own) delivery state, or
/// a line about the conversation, centred and framed.
fn draw(ui: &mut egui::Ui, look: &Look<'_>, entry: &Entry) {
    let tr = look.tr;
    let when = super::when(tr, look.offset_seconds, entry.at_ms, look.now_ms);
    if entry.is_event() {
        egui::Frame::new()
            .fill(ui.visuals().faint_bg_color)
            .stroke(ui.visuals().widgets.noninteractive.bg_stroke)
            .corner_radius(6.0)
            .inner_margin(egui::Margin::symmetric(10, 4))
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal_wrapped(|ui| {
                    ui.label(
                        RichText::new(tr.t("timeline-event-prefix"))
                            .strong()
                            .small(),
                    );
                    ui.label(RichText::new(&entry.text).italics());
                    ui.label(RichText::new(when).small().weak());
                });
            });
        return;
    }
    let own = entry.sender == look.me;
    ui.horizontal(|ui| {
        let sender = if own {
            tr.t("timeline-you")
        } else {
            entry.sender.clone()
        };
        ui.label(RichText::new(sender).strong());
        ui.label(RichText::new(when).small().weak());
        if own && let Some((state, reason)) = look.deliveries.get(&entry.message_id) {
            let (key, colour) = match state {
                DeliveryState::Sent => ("delivery-sent", ui.visuals().weak_text_color()),
                DeliveryState::Pending => ("delivery-pending", ui.visuals().warn_fg_color),
                DeliveryState::Failed => ("delivery-failed", ui.visuals().error_fg_color),
            };
            let label = ui.label(RichText::new(tr.t(key)).small().color(colour));
            if let Some(reason) = reason {
                label.on_hover_text(reason);
            }
        }
    });
    ui.add(
        egui::Label::new(&entry.text)
            .wrap()
            .selectable(true)
            .sense(Sense::hover()),
    );
}

/// Heights become estimates again for a new width.
fn re_estimate(timeline: &mut Timeline, width: f32) {
    timeline.measured_width = width;
    for entry in &mut timeline.entries {
        entry.height = estimate(entry, width);
        entry.measured = false;
    }
}

/// A row's height guessed from its length, before it is laid out.
pub fn estimate(entry: &Entry, width: f32) -> f32 {
    let per_line = (width / CHAR_WIDTH_ESTIMATE).max(10.0);
    let lines = ((entry.text.len() as f32) / per_line).ceil().max(1.0);
    HEADER_HEIGHT + lines * LINE_HEIGHT + GAP
}

/// Each entry's top, and the total height last: from the cache, estimating the rest. The
/// entries not loaded yet (up to the bound) come first, one line each, so that the scroll
/// bar stands for the whole history and a page arriving above changes the height only by
/// how far its entries differ from one line.
fn tops(timeline: &mut Timeline) -> Vec<f64> {
    let width = timeline.measured_width;
    let reachable = timeline.total.min(TIMELINE_ENTRIES_MAX as u64);
    let unloaded = reachable.saturating_sub(timeline.entries.len() as u64);
    let mut tops = Vec::with_capacity(timeline.entries.len() + 1);
    let mut y = unloaded as f64 * f64::from(HEADER_HEIGHT + LINE_HEIGHT + GAP);
    for entry in &mut timeline.entries {
        if entry.height <= 0.0 {
            entry.height = estimate(entry, width);
        }
        tops.push(y);
        y += f64::from(entry.height);
    }
    tops.push(y);
    tops
}

/// Where the view must be for the anchor entry to stay where the user saw it.
fn anchored_offset(timeline: &Timeline, tops: &[f64]) -> Option<f64> {
    let (position, into) = timeline.anchor?;
    let index = timeline
        .entries
        .binary_search_by_key(&position, |e| e.position)
        .ok()?;
    Some(tops[index] + f64::from(into))
}

/// Remembers the entry at the top of the view and how far into it the view starts.
fn keep_anchor(timeline: &mut Timeline, tops: &[f64], offset: f32) {
    timeline.last_offset = offset;
    let offset = f64::from(offset);
    let index = tops.partition_point(|top| *top <= offset).saturating_sub(1);
    timeline.anchor = timeline
        .entries
        .get(index)
        .map(|entry| (entry.position, (offset - tops[index]) as f32));
}
