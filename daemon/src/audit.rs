//! The audit log as the daemon writes it: every entry goes to storage's keyed chain and is
//! mirrored to the system log with one stable message id, so journald queries select them.

use relais_store::{AuditEvent, AuditKey, Store};

/// Records an audit entry; a failure to store it is logged, never returned: the action it
/// records has already happened.
pub async fn record(store: &Store, key: &AuditKey, event: AuditEvent<'_>) {
    tracing::info!(
        target: "relais::audit",
        message_id = "5f2c7b1e9a4d4c39b1c3d0e6a8f47215",
        actor = event.actor,
        action = event.action,
        subject = event.subject,
        outcome = event.outcome,
        detail = event.detail,
        "audit"
    );
    if let Err(e) = store.audit(key, crate::now_ms(), event).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}
