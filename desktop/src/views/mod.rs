//! The app's views: each draws one part of the window from the [`Model`] and asks the
//! [`Backend`] for work, never waiting for it.
//!
//! Every view is `pub fn show(ui: &mut egui::Ui, cx: &mut Cx<'_>)`. The strings it shows
//! come from the catalogue (`cx.tr`), and every interactive widget it adds has an
//! accessible name, so that screen readers and the UI tests find it by that name.

pub mod banner;
pub mod composer;
pub mod contact;
pub mod conversations;
pub mod devices;
pub mod enroll;
pub mod group;
pub mod search;
pub mod settings;
pub mod timeline;
pub mod unlock;

use crate::backend::Backend;
use crate::i18n::I18n;
use crate::model::Model;
pub use crate::model::Page;

/// What a view works with: the model it shows and changes, the catalogue, and the backend
/// it hands work to.
pub struct Cx<'a> {
    pub model: &'a mut Model,
    pub tr: &'a I18n,
    pub backend: &'a Backend,
}

/// When something happened, as a timeline shows it: the time of day for today, the date
/// and time otherwise, in the user's zone (`utc_offset_seconds`, read at start).
pub fn when(tr: &I18n, utc_offset_seconds: i32, at_ms: i64, now_ms: i64) -> String {
    stamp(tr, utc_offset_seconds, at_ms, now_ms, true)
}

/// When something happened, as the conversation list shows it: the time of day for today,
/// the date alone otherwise.
pub fn day_or_time(tr: &I18n, utc_offset_seconds: i32, at_ms: i64, now_ms: i64) -> String {
    stamp(tr, utc_offset_seconds, at_ms, now_ms, false)
}

fn stamp(tr: &I18n, utc_offset_seconds: i32, at_ms: i64, now_ms: i64, time: bool) -> String {
    let offset =
        time::UtcOffset::from_whole_seconds(utc_offset_seconds).unwrap_or(time::UtcOffset::UTC);
    let civil = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .ok()
            .map(|t| t.to_offset(offset))
    };
    let (Some(at), Some(now)) = (civil(at_ms), civil(now_ms)) else {
        return String::new();
    };
    // The numbers go to the catalogue as text: Fluent would group a year's digits.
    let two = |n: u8| format!("{n:02}");
    let clock = tr.t_args(
        "time-of-day",
        &[
            ("hour", two(at.hour()).into()),
            ("minute", two(at.minute()).into()),
        ],
    );
    if at.date() == now.date() {
        return clock;
    }
    let date = tr.t_args(
        "date-day",
        &[
            ("day", two(at.day()).into()),
            ("month", two(u8::from(at.month())).into()),
            ("year", at.year().to_string().into()),
        ],
    );
    if !time {
        return date;
    }
    tr.t_args(
        "date-and-time",
        &[("date", date.into()), ("time", clock.into())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    #[test]
    fn times_are_shown_in_the_users_zone_and_language() {
        // 2 March 2026, 09:42 UTC; "now" is the same day at 18:00 UTC.
        let at = 1_772_444_520_000;
        let now = at + 8 * 3_600_000;
        let (fr, en) = (I18n::new(Lang::Fr), I18n::new(Lang::En));
        assert_eq!(when(&fr, 0, at, now), "09:42");
        assert_eq!(when(&fr, 3_600, at, now), "10:42", "Paris in winter");
        let next_week = now + 7 * 86_400_000;
        assert_eq!(when(&fr, 0, at, next_week), "02/03/2026 09:42");
        assert_eq!(when(&en, 0, at, next_week), "2026-03-02 09:42");
        assert_eq!(day_or_time(&fr, 0, at, next_week), "02/03/2026");
        assert_eq!(day_or_time(&fr, 0, at, now), "09:42");
        // 22:00 UTC is 23:00 in Paris: still today half an hour later, yesterday after
        // midnight there, though not yet in UTC.
        let late = 1_772_488_800_000; // 2 March 2026, 22:00 UTC
        assert_eq!(day_or_time(&fr, 3_600, late, late + 1_800_000), "23:00");
        assert_eq!(
            day_or_time(&fr, 3_600, late, late + 3_600_000),
            "02/03/2026"
        );
        assert_eq!(day_or_time(&fr, 0, late, late + 3_600_000), "22:00");
    }
}
