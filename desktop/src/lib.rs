//! The Relais desktop app for officials (D15): egui on the client library's `Session`.
//!
//! Layers, each using only those below it: [`app`] (the frame, the screens, the shortcuts)
//! over `views` (one module per part of the window, each `show(ui, cx)`) over [`model`]
//! (what is shown, changed only by [`model::Model::apply`] and the views) over [`backend`]
//! (a thread that owns the session; the window never waits for it) over the client
//! library, which alone holds keys. Every string comes from [`i18n`]'s catalogues.
//!
//! Tests drive the real app headlessly: build an [`App`] with [`app::Options`] and run
//! `egui_kittest::Harness::new_ui_state(|ui, app| app.show(ui), app)`, then find widgets by
//! their accessible names.

pub mod app;
pub mod backend;
pub mod i18n;
pub mod model;
pub mod notify;
pub mod qr;
pub mod timings;
pub mod views;

pub use app::{App, Options};
