//! The audit log: append-only, an HMAC chain under a key only the server holds, with a
//! head that records how far the chain reaches, so that changed, inserted, deleted and
//! truncated entries all show.
//!
//! Each entry's MAC covers its fields and the previous entry's MAC; the head row (updated
//! in the same transaction as every append) carries its own MAC over the last entry, the
//! number of entries and where the entries from before keyed chaining end. Without the key,
//! which is derived from the server's sealed enrollment-code secret, nobody with write
//! access to the database can forge an entry or move the head back. Whoever kept an older
//! copy of the head row could put it back after deleting the entries since: `audit verify`
//! prints the head for the operator to keep off the box, and `--expect` compares with it.
//!
//! Entries written before keyed chaining (plain SHA-256, `keyed = 0`) are checked as
//! before; they may only come first, and the head seals where they end.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::{Store, StoreError};

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

/// The key the chain is computed under; zeroed on drop.
pub struct AuditKey(Zeroizing<[u8; 32]>);

impl AuditKey {
    /// Derives the audit key from the server's enrollment-code secret (sealed to the TPM on
    /// an appliance), under a label of its own so the two uses never share a MAC.
    pub fn derive(code_secret: &[u8]) -> AuditKey {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac(code_secret, &[b"relais-audit-key-v1"]));
        AuditKey(key)
    }
}

/// Where the chain ends, as the head row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub entries: u64,
    pub last_id: i64,
    /// The last entry's MAC (or hash, for a chain of old entries only).
    pub last_hash: Vec<u8>,
}

impl AuditHead {
    /// The form operators keep off the box and give back to `audit verify --expect`:
    /// the number of entries and the first 16 bytes of the last MAC, in hex.
    pub fn exported(&self) -> String {
        format!(
            "{}:{}",
            self.entries,
            hex::encode(&self.last_hash[..self.last_hash.len().min(16)])
        )
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    Intact {
        head: AuditHead,
    },
    /// The first entry whose MAC does not match its contents and predecessor.
    BrokenAt {
        id: i64,
    },
    /// The chain is shorter than its head records: entries at its end were deleted.
    Truncated {
        recorded: u64,
        found: u64,
    },
    /// The head row is missing or its MAC does not match: it was deleted or rewritten.
    HeadTampered,
    /// The chain does not reach a head exported earlier (`--expect`): entries were deleted
    /// and an older head put back, or the database was replaced by an older copy.
    Behind {
        expected: String,
    },
}

/// The hash the chain starts from.
const GENESIS: [u8; 32] = [0; 32];

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The fields of an entry, length-prefixed, so no two different entries serialise alike.
fn fields(at_ms: i64, event: &AuditEvent<'_>) -> Vec<u8> {
    let mut out = at_ms.to_be_bytes().to_vec();
    for field in [
        event.actor,
        event.action,
        event.subject,
        event.outcome,
        event.detail,
    ] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// An entry's MAC under the audit key.
fn entry_mac(key: &AuditKey, prev: &[u8], at_ms: i64, event: &AuditEvent<'_>) -> Vec<u8> {
    mac(
        &key.0[..],
        &[b"relais-audit-v2", prev, &fields(at_ms, event)],
    )
}

/// The hash of an entry written before keyed chaining.
fn legacy_hash(prev: &[u8], at_ms: i64, event: &AuditEvent<'_>) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"relais-audit-v1");
    hasher.update(prev);
    hasher.update(fields(at_ms, event));
    hasher.finalize().to_vec()
}

fn head_mac(key: &AuditKey, legacy_last_id: i64, head: &AuditHead) -> Vec<u8> {
    mac(
        &key.0[..],
        &[
            b"relais-audit-head-v1",
            &legacy_last_id.to_be_bytes(),
            &head.last_id.to_be_bytes(),
            &head.entries.to_be_bytes(),
            &head.last_hash,
        ],
    )
}

/// The head row: where old entries end, the head, and its MAC.
struct HeadRow {
    legacy_last_id: i64,
    head: AuditHead,
    mac: Vec<u8>,
}

async fn head_row(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
) -> Result<Option<HeadRow>, StoreError> {
    let row = sqlx::query(
        "SELECT legacy_last_id, last_id, entries, last_hash, mac FROM audit_head WHERE id = 1",
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| HeadRow {
        legacy_last_id: r.get(0),
        head: AuditHead {
            last_id: r.get(1),
            entries: r.get::<i64, _>(2).max(0) as u64,
            last_hash: r.get(3),
        },
        mac: r.get(4),
    }))
}

impl Store {
    /// Seals the audit log at start-up: a log without a head (new, or written before keyed
    /// chaining) gets one, after its old entries are checked. A log with keyed entries and
    /// no head has lost its head, and is left for `audit verify` to report.
    pub async fn seal_audit(&self, key: &AuditKey) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        if head_row(&mut *tx).await?.is_some() {
            return Ok(());
        }
        let keyed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE keyed <> 0")
            .fetch_one(&mut *tx)
            .await?;
        let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&mut *tx)
            .await?;
        // Every account was added through an audited command: accounts beside an empty log
        // mean the log was emptied, and a new head would make that look intact.
        let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if keyed > 0 || (entries == 0 && accounts > 0) {
            tracing::error!(
                "the audit log's head is missing: run `relaisd admin audit verify` and treat the log as tampered with"
            );
            return Ok(());
        }
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| (r.get(0), r.get(1)));
        let (last_id, last_hash) = last.unwrap_or((0, GENESIS.to_vec()));
        let head = AuditHead {
            entries: entries as u64,
            last_id,
            last_hash,
        };
        write_head(&mut tx, key, last_id, &head, true).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an entry and moves the head, in one transaction that excludes all others.
    pub async fn audit(
        &self,
        key: &AuditKey,
        at_ms: i64,
        event: AuditEvent<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        let row = head_row(&mut *tx).await?;
        let (legacy_last_id, prev, entries) = match &row {
            Some(row) => (
                row.legacy_last_id,
                row.head.last_hash.clone(),
                row.head.entries,
            ),
            // A lost head is reported by `verify`, and never made anew here, which would
            // make the loss look intact; the log goes on from its last entry.
            None => {
                let prev: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await?;
                (0, prev.unwrap_or_else(|| GENESIS.to_vec()), 0)
            }
        };
        let hash = entry_mac(key, &prev, at_ms, &event);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at_ms, actor, action, subject, outcome, detail, prev_hash, hash, keyed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) RETURNING id",
        )
        .bind(at_ms)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.subject)
        .bind(event.outcome)
        .bind(event.detail)
        .bind(&prev)
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await?;
        let head = AuditHead {
            entries: entries + 1,
            last_id: id,
            last_hash: hash,
        };
        if row.is_some() {
            write_head(&mut tx, key, legacy_last_id, &head, false).await?;
        }
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

    /// Recomputes the whole chain, compares its end with the head (and with `expected`, a
    /// head exported earlier), and reports the first thing that does not match.
    pub async fn verify_audit(
        &self,
        key: &AuditKey,
        expected: Option<&str>,
    ) -> Result<ChainStatus, StoreError> {
        let Some(row) = head_row(&self.pool).await? else {
            return Ok(ChainStatus::HeadTampered);
        };
        if head_mac(key, row.legacy_last_id, &row.head) != row.mac {
            return Ok(ChainStatus::HeadTampered);
        }
        let mut prev = GENESIS.to_vec();
        let mut after = 0i64;
        let mut entries = 0u64;
        let expected = expected.map(str::to_ascii_lowercase);
        let expected = expected.as_deref();
        let mut reached_expected = expected.is_none();
        loop {
            // Up to the head only: entries appended while this runs are the next verify's,
            // and one written past the head by anyone else breaks the chain at the next
            // append, whose predecessor is the head's entry.
            let rows = sqlx::query(
                "SELECT id, at_ms, actor, action, subject, outcome, detail, prev_hash, hash, keyed
                 FROM audit_log WHERE id > $1 AND id <= $2 ORDER BY id LIMIT 1000",
            )
            .bind(after)
            .bind(row.head.last_id)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
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
                let keyed = r.get::<i64, _>(9) != 0;
                let computed = if keyed {
                    entry_mac(key, &prev, r.get(1), &event)
                } else if id <= row.legacy_last_id {
                    legacy_hash(&prev, r.get(1), &event)
                } else {
                    // An unkeyed entry after the sealed ones was written by someone else.
                    return Ok(ChainStatus::BrokenAt { id });
                };
                if stored_prev != prev || computed != stored_hash {
                    return Ok(ChainStatus::BrokenAt { id });
                }
                prev = stored_hash;
                after = id;
                entries += 1;
                if let Some(expected) = expected
                    && !reached_expected
                {
                    let here = AuditHead {
                        entries,
                        last_id: id,
                        last_hash: prev.clone(),
                    };
                    reached_expected = here.exported() == expected;
                }
            }
        }
        if entries < row.head.entries || (entries == row.head.entries && after != row.head.last_id)
        {
            return Ok(ChainStatus::Truncated {
                recorded: row.head.entries,
                found: entries,
            });
        }
        if entries > row.head.entries || prev != row.head.last_hash {
            // More entries up to the head than it counts, or another last entry: inserted.
            return Ok(ChainStatus::BrokenAt {
                id: row.head.last_id,
            });
        }
        if !reached_expected {
            return Ok(ChainStatus::Behind {
                expected: expected.unwrap_or_default().to_owned(),
            });
        }
        Ok(ChainStatus::Intact { head: row.head })
    }
}

async fn write_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &AuditKey,
    legacy_last_id: i64,
    head: &AuditHead,
    insert: bool,
) -> Result<(), StoreError> {
    let statement = if insert {
        "INSERT INTO audit_head (id, legacy_last_id, last_id, entries, last_hash, mac)
         VALUES (1, $1, $2, $3, $4, $5)"
    } else {
        "UPDATE audit_head SET legacy_last_id = $1, last_id = $2, entries = $3, last_hash = $4,
         mac = $5 WHERE id = 1"
    };
    sqlx::query(statement)
        .bind(legacy_last_id)
        .bind(head.last_id)
        .bind(head.entries as i64)
        .bind(&head.last_hash)
        .bind(head_mac(key, legacy_last_id, head))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_macs_are_separated_by_label() {
        let key = AuditKey::derive(&[7u8; 32]);
        assert_ne!(&key.0[..], &[7u8; 32][..]);
        assert_ne!(
            &key.0[..],
            &AuditKey::derive(&[8u8; 32]).0[..],
            "another secret, another key"
        );
        let event = AuditEvent {
            actor: "uid:0",
            action: "user_add",
            subject: "alice@localhost",
            outcome: "ok",
            detail: "",
        };
        let keyed = entry_mac(&key, &GENESIS, 1, &event);
        assert_ne!(keyed, legacy_hash(&GENESIS, 1, &event));
        assert_ne!(
            keyed,
            entry_mac(&AuditKey::derive(&[8u8; 32]), &GENESIS, 1, &event)
        );
        let moved = AuditEvent {
            actor: "uid:0u",
            action: "ser_add",
            ..event.clone()
        };
        assert_ne!(
            keyed,
            entry_mac(&key, &GENESIS, 1, &moved),
            "length-prefixed"
        );
    }
}
