//! The benchmark's hook: with `RELAIS_DESKTOP_TIMINGS=FILE` in its environment, the app
//! writes to FILE when its first usable frame was drawn and how long each frame took, and
//! scrolls the open conversation's timeline up by itself on a fixed script, so that
//! `relais-bench desktop` can measure the real binary under Xvfb with nobody at the
//! keyboard. Without the variable none of this exists: the app holds `None` and does one
//! branch per frame.
//!
//! The file has one line per event, `EVENT key=value…`, written as they happen:
//!
//! - `start unix_us=T`: the app was built (the window and its OpenGL context exist);
//! - `usable unix_us=T frames=N`: the first usable frame (the main page with the
//!   conversation list loaded) has been drawn, stamped at the start of the frame after it,
//!   so that its painting counts;
//! - `open unix_us=T`: the first conversation of the list was asked to open, for the
//!   scroll (the bench makes the long conversation the most recent);
//! - `frame cpu_us=C interval_us=I rows=R`, once per frame of the scroll: C is the CPU time
//!   eframe measured for the previous frame (the app's UI, tessellation and painting,
//!   without waiting for the display), I the time since the previous frame began, R the
//!   timeline rows the app holds;
//! - `done unix_us=T frames=N`: the scroll is over; the app keeps running until it is
//!   stopped, so that the bench can read its memory as it stands.
//!
//! Times are microseconds of the system clock (`unix_us`), which the bench reads on the same
//! machine, so that start-up is measured from the moment the bench started the process.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the file the timings go to.
pub const TIMINGS_VAR: &str = "RELAIS_DESKTOP_TIMINGS";
/// Frames the scripted scroll lasts: about ten seconds at 60 frames a second.
pub const SCROLL_FRAMES: u32 = 600;
/// Points the timeline is scrolled up by at each frame of the script: a fast flick of a
/// mouse wheel (three notches a frame), so that pages of history keep being loaded.
const SCROLL_POINTS_PER_FRAME: f32 = 150.0;
/// Longest the script waits for the conversation it opened to show rows before it
/// scrolls anyway (what it then measures says so: `rows=0`).
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// The timings of one run of the app, when asked for.
pub struct Timings {
    out: BufWriter<File>,
    phase: Phase,
    /// Frames drawn so far.
    frames: u64,
    /// When the frame being drawn began.
    frame_started: Option<Instant>,
    /// When the previous frame began.
    previous_frame_started: Option<Instant>,
}

/// What the app tells the hook after drawing a frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct Screen {
    /// The main page shows the conversation list, loaded.
    pub usable: bool,
    /// A conversation is open in the central page.
    pub conversation_open: bool,
    /// Rows of the open conversation's timeline the app holds (loaded pages).
    pub timeline_rows: usize,
}

/// What the hook asks of the app after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    Nothing,
    /// Open the first conversation of the list (the most recent).
    OpenFirstConversation,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Until the first usable frame.
    Starting,
    /// The first usable frame was drawn; its painting ends when the next frame begins.
    Drawn,
    /// Waiting for a conversation to be open and show rows, since the instant given;
    /// whether the first was asked to open.
    Opening(Instant, bool),
    /// Scrolling, with the frames left.
    Scrolling(u32),
    Done,
}

impl Timings {
    /// The hook, if `RELAIS_DESKTOP_TIMINGS` names a file; the file is created (truncated if
    /// it exists). A file that cannot be created is said on standard error, which the bench
    /// keeps, and the app runs without the hook: the bench then stops for want of lines.
    pub fn from_env() -> Option<Timings> {
        let path = std::env::var_os(TIMINGS_VAR).map(PathBuf::from)?;
        match Timings::to_file(&path) {
            Ok(timings) => Some(timings),
            Err(e) => {
                eprintln!("relais-desktop: {TIMINGS_VAR}={}: {e}", path.display());
                None
            }
        }
    }

    /// The hook writing to `path`, created (or truncated), its first line written.
    pub fn to_file(path: &Path) -> std::io::Result<Timings> {
        let mut timings = Timings {
            out: BufWriter::new(File::create(path)?),
            phase: Phase::Starting,
            frames: 0,
            frame_started: None,
            previous_frame_started: None,
        };
        timings.line(&format!("start unix_us={}", unix_us()))?;
        Ok(timings)
    }

    /// Before egui runs a frame (`eframe::App::raw_input_hook`): notes when it began, and
    /// during the scroll adds the wheel's turn over the timeline to its input.
    pub fn before_frame(&mut self, raw_input: &mut egui::RawInput) {
        let now = Instant::now();
        self.previous_frame_started = self.frame_started.replace(now);
        if self.phase == Phase::Drawn {
            let line = format!("usable unix_us={} frames={}", unix_us(), self.frames);
            self.write(&line);
            self.phase = Phase::Opening(now, false);
        }
        if let Phase::Scrolling(_) = self.phase {
            // The pointer over the central page (the conversation list is a panel on the
            // left), then the wheel turned towards older messages.
            let screen = raw_input.screen_rect.unwrap_or_else(|| {
                egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1024.0, 768.0))
            });
            let over_timeline = egui::pos2(
                screen.left() + screen.width() * 0.65,
                screen.top() + screen.height() * 0.5,
            );
            raw_input
                .events
                .push(egui::Event::PointerMoved(over_timeline));
            raw_input.events.push(egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, SCROLL_POINTS_PER_FRAME),
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Wheel,
                modifiers: egui::Modifiers::NONE,
            });
        }
    }

    /// After the app drew a frame: records it, and says what the script wants next.
    /// `cpu_usage` is eframe's measure of the previous frame (`frame.info().cpu_usage`).
    pub fn after_frame(
        &mut self,
        ctx: &egui::Context,
        cpu_usage: Option<f32>,
        screen: Screen,
    ) -> Wish {
        self.frames += 1;
        let wish = match self.phase {
            Phase::Starting if screen.usable => {
                self.phase = Phase::Drawn;
                Wish::Nothing
            }
            Phase::Starting | Phase::Drawn | Phase::Done => Wish::Nothing,
            Phase::Opening(since, asked) => {
                let shown = screen.conversation_open && screen.timeline_rows > 0;
                if shown || since.elapsed() > OPEN_WAIT {
                    self.phase = Phase::Scrolling(SCROLL_FRAMES);
                    Wish::Nothing
                } else if screen.conversation_open || asked {
                    Wish::Nothing
                } else {
                    self.write(&format!("open unix_us={}", unix_us()));
                    self.phase = Phase::Opening(since, true);
                    Wish::OpenFirstConversation
                }
            }
            Phase::Scrolling(left) => {
                let interval = self
                    .frame_started
                    .zip(self.previous_frame_started)
                    .map_or(0, |(now, before)| now.duration_since(before).as_micros());
                let cpu = cpu_usage.map_or(0, |seconds| (f64::from(seconds) * 1e6) as u64);
                let line = format!(
                    "frame cpu_us={cpu} interval_us={interval} rows={}",
                    screen.timeline_rows
                );
                self.write(&line);
                self.phase = match left.checked_sub(1) {
                    Some(0) | None => {
                        let line = format!("done unix_us={} frames={}", unix_us(), self.frames);
                        self.write(&line);
                        Phase::Done
                    }
                    Some(left) => Phase::Scrolling(left),
                };
                Wish::Nothing
            }
        };
        // Until the script is over, one frame follows another without waiting for input.
        if self.phase != Phase::Done {
            ctx.request_repaint();
        }
        wish
    }

    /// Writes a line and flushes it: the bench reads the file while the app runs.
    fn line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    /// As [`Timings::line`], for the frames: a failed write ends the timings (the bench then
    /// sees a file that stops short and says so), never the app.
    fn write(&mut self, line: &str) {
        if self.line(line).is_err() {
            self.phase = Phase::Done;
        }
    }
}

/// Microseconds since the Unix epoch, by the system clock.
fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one frame through the hook as the app does, with the screen it reports.
    fn frame(timings: &mut Timings, ctx: &egui::Context, screen: Screen) -> (Wish, usize) {
        let mut input = egui::RawInput::default();
        timings.before_frame(&mut input);
        let wheel = input
            .events
            .iter()
            .filter(|e| matches!(e, egui::Event::MouseWheel { .. }))
            .count();
        (timings.after_frame(ctx, Some(0.002), screen), wheel)
    }

    #[test]
    fn the_script_waits_for_a_usable_window_opens_the_first_conversation_and_scrolls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("timings.txt");
        let mut timings = Timings::to_file(&path).expect("timings file");
        let ctx = egui::Context::default();
        let starting = Screen::default();
        let usable = Screen {
            usable: true,
            ..Screen::default()
        };
        let open = Screen {
            usable: true,
            conversation_open: true,
            timeline_rows: 200,
        };
        // Nothing asked while starting; the usable frame is stamped when the next begins.
        assert_eq!(frame(&mut timings, &ctx, starting), (Wish::Nothing, 0));
        assert_eq!(frame(&mut timings, &ctx, usable), (Wish::Nothing, 0));
        assert_eq!(
            frame(&mut timings, &ctx, usable),
            (Wish::OpenFirstConversation, 0),
            "the first conversation is asked for once usable"
        );
        assert_eq!(
            frame(&mut timings, &ctx, usable),
            (Wish::Nothing, 0),
            "asked once"
        );
        // Open with rows: the scroll starts, one turn of the wheel per frame.
        assert_eq!(frame(&mut timings, &ctx, open), (Wish::Nothing, 0));
        for _ in 0..SCROLL_FRAMES {
            assert_eq!(frame(&mut timings, &ctx, open), (Wish::Nothing, 1));
        }
        // Done: no more wheel, no more lines.
        assert_eq!(frame(&mut timings, &ctx, open), (Wish::Nothing, 0));
        let text = std::fs::read_to_string(&path).expect("timings");
        let events: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(events[..3], ["start", "usable", "open"], "{text}");
        assert_eq!(
            events.iter().filter(|e| **e == "frame").count(),
            SCROLL_FRAMES as usize
        );
        assert_eq!(events.last(), Some(&"done"), "{text}");
        let first_frame = text
            .lines()
            .find(|l| l.starts_with("frame "))
            .expect("a frame");
        assert!(
            first_frame.contains("cpu_us=2000") && first_frame.contains("rows=200"),
            "{first_frame}"
        );
        assert!(
            text.contains("usable unix_us=") && text.contains("frames=2"),
            "{text}"
        );
    }
}
