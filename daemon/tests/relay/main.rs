//! relaisd's integration tests, one module per area, in one binary so that the harness
//! (`relais-testkit`) and every dependency are compiled and linked once. Each test starts
//! the real `relaisd` binary with a generated configuration and drives it from outside:
//! the client library over real TLS, raw WebSocket frames, the admin socket, the command
//! line. Operations (packaging, Ansible, systemd, monitoring, the image) are tested in
//! `operations/`.
//!
//! A new module is compiled only once it is named here.

mod at_rest;
mod cli;
mod cli_reference;
mod client_edges;
mod crash;
mod devices;
mod enroll_link;
mod enroll_lock;
mod governance;
mod hardening;
mod hostile_frames;
mod key_sources;
mod lifecycle;
mod messaging;
mod metrics;
mod operations;
mod operations_clients;
mod postgres;
mod sealed_keys;
mod security_connections;
mod security_limiter;
mod security_quotas;
mod security_trust;
mod session;
mod tls_scan;
