//! The audit log: append-only, hash-chained, and checkable.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub outcome: String,
    pub detail: String,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    Intact {
        entries: u64,
    },
    /// The first entry whose hash does not match its contents and predecessor.
    BrokenAt {
        id: i64,
    },
}

/// The hash the chain starts from.
const GENESIS: [u8; 32] = [0; 32];

fn entry_hash(prev: &[u8], at_ms: i64, event: &AuditEvent<'_>) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"relais-audit-v1");
    hasher.update(prev);
    hasher.update(at_ms.to_be_bytes());
    // Length-prefixed, so no two different entries serialise alike.
    for field in [
        event.actor,
        event.action,
        event.subject,
        event.outcome,
        event.detail,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.finalize().to_vec()
}

impl Store {
    /// Appends an entry; concurrent appends are serialised by an immediate transaction.
    pub async fn audit(&self, at_ms: i64, event: AuditEvent<'_>) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        let prev: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let prev = prev.unwrap_or_else(|| GENESIS.to_vec());
        let hash = entry_hash(&prev, at_ms, &event);
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, subject, outcome, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(at_ms)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.subject)
        .bind(event.outcome)
        .bind(event.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries at or after `since_ms`, oldest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        since_ms: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, subject, outcome, detail, hash FROM audit_log
             WHERE at_ms >= $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(since_ms)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                subject: r.get(4),
                outcome: r.get(5),
                detail: r.get(6),
                hash: r.get(7),
            })
            .collect())
    }

    /// Recomputes the whole chain and reports the first entry that does not match.
    pub async fn verify_audit(&self) -> Result<ChainStatus, StoreError> {
        let mut prev = GENESIS.to_vec();
        let mut after = 0i64;
        let mut entries = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT id, at_ms, actor, action, subject, outcome, detail, prev_hash, hash
                 FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000",
            )
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(ChainStatus::Intact { entries });
            }
            for r in &rows {
                let id: i64 = r.get(0);
                let (actor, action, subject, outcome, detail): (
                    String,
                    String,
                    String,
                    String,
                    String,
                ) = (r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
                let event = AuditEvent {
                    actor: &actor,
                    action: &action,
                    subject: &subject,
                    outcome: &outcome,
                    detail: &detail,
                };
                let stored_prev: Vec<u8> = r.get(7);
                let stored_hash: Vec<u8> = r.get(8);
                if stored_prev != prev || entry_hash(&prev, r.get(1), &event) != stored_hash {
                    return Ok(ChainStatus::BrokenAt { id });
                }
                prev = stored_hash;
                after = id;
                entries += 1;
            }
        }
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}
