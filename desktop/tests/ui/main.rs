//! The desktop app driven as its users meet it: the real `relais_desktop::App` in an
//! `egui_kittest::Harness`, against a real relaisd over real TLS started by
//! `relais-testkit`, with the other users and devices played by the `relais` command line.
//! Widgets are found by their accessible names, as a screen reader finds them, and used with
//! the keyboard (Tab, Enter, Space, Escape) where an official without a mouse would.
//!
//! One module per flow; `support` is what they share (the relay and its users, the app in
//! its harness, waiting for the app with a deadline). `screenshots` renders the three
//! pictures in `docs/desktop/` and compares each run with them.
//!
//! They run the binaries `cargo build --workspace --bins` built (relaisd, relais).

mod support;

mod bad_input;
mod devices;
mod enroll;
mod groups;
mod messaging;
mod screenshots;
mod trust;
