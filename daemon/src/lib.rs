//! relaisd: the Relais relay daemon, the MLS delivery and authentication service.
//!
//! `main.rs` parses the command line and calls [`server::run`]; everything else lives here
//! so that tests can drive it. See `ARCHITECTURE.md` for the map.

pub mod activation;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod cli;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod directory;
pub mod fanout;
pub mod hardening;
pub mod hub;
pub mod keys;
pub mod metrics;
pub mod metrics_listener;
pub mod provision;
pub mod proxy_protocol;
pub mod requests;
pub mod server;
pub mod shared;
pub mod tls;

pub use relais_protocol::time::{format_time_ms, now_ms};
