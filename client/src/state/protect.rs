//! What protects a home's database: the `at_rest` header that unlocks it, the one
//! transaction that seals every value of an unencrypted home, a new passphrase for an
//! encrypted one, and the scrubbing of what SQLite leaves behind in free pages and the WAL.

use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};
use zeroize::Zeroizing;

use super::{CLEAR_META, Sealing, State, Tx, home_of, rows};
use crate::ClientError;
use crate::at_rest::{DataKey, Header, Keys, Secret, SecretKind, Unwrap};

/// History entries sealed per statement batch while a home is encrypted: the history is
/// the one table that can be long, and is never held whole.
const HISTORY_BATCH: i64 = 1_000;

/// The meta key of the device key in an encrypted home (whose value is sealed like any
/// other).
const DEVICE_KEY: &str = "device_key";

/// Unlocks an encrypted home's keys with `secret`; an unencrypted home needs none.
pub(super) async fn unlock(
    pool: &SqlitePool,
    path: &Path,
    secret: Option<&Secret>,
) -> Result<Option<Sealing>, ClientError> {
    let Some(header) = read_header(pool, path).await? else {
        return Ok(None);
    };
    let (home, kind) = (home_of(path), header.kind);
    let Some(secret) = secret else {
        return Err(ClientError::Locked { home, kind });
    };
    let secret = secret.clone();
    // Argon2id is half a second of work: off the runtime's threads.
    let unwrapped = tokio::task::spawn_blocking(move || header.unwrap(&secret))
        .await
        .map_err(|e| ClientError::State(format!("unlocking {}: {e}", home.display())))?;
    match unwrapped {
        Ok(data_key) => Ok(Some(Sealing {
            keys: data_key.keys(),
            data_key,
            kind,
        })),
        Err(Unwrap::OtherKind) => Err(ClientError::Locked { home, kind }),
        Err(Unwrap::Wrong) => Err(ClientError::WrongSecret { home, kind }),
        Err(Unwrap::Damaged(why)) => Err(damaged_header(path, &why)),
    }
}

impl State {
    /// Seals every value of this unencrypted home, and `device_key` beside them, under a
    /// new data key wrapped by `secret`, in one transaction: interrupted, it leaves the
    /// home as it was. Returns the state of the now encrypted home; what the unencrypted
    /// one left in free pages and the WAL is gone only after [`State::scrub`].
    pub async fn encrypt(
        self,
        secret: &Secret,
        device_key: &[u8; 32],
    ) -> Result<State, ClientError> {
        if self.sealing.is_some() {
            return Err(ClientError::Usage(
                "this home is already encrypted; change its passphrase with `relais passphrase change`"
                    .into(),
            ));
        }
        secret.check_new()?;
        let (header, data_key) = wrap(secret, DataKey::generate()).await?;
        let sealing = Sealing {
            keys: data_key.keys(),
            data_key,
            kind: secret.kind(),
        };
        let mut tx = self.begin().await?;
        seal_all(&mut tx, &sealing.keys).await?;
        let sealed = State {
            pool: self.pool.clone(),
            sealing: Some(Arc::new(sealing)),
        };
        let mut tx = Tx {
            inner: tx.inner,
            sealing: sealed.sealing.clone(),
        };
        State::put_meta(&mut tx, DEVICE_KEY, device_key).await?;
        write_header(&mut tx, &header).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    /// Wraps this encrypted home's data key anew under `secret`, with a new salt and
    /// today's Argon2id parameters; the values stay sealed as they are.
    pub async fn rewrap(&self, secret: &Secret) -> Result<(), ClientError> {
        let Some(sealing) = &self.sealing else {
            return Err(ClientError::Usage(
                "this home is not encrypted; protect it with `relais passphrase set`".into(),
            ));
        };
        secret.check_new()?;
        let (header, _) = wrap(secret, sealing.data_key.clone()).await?;
        let mut tx = self.begin().await?;
        write_header(&mut tx, &header).await?;
        tx.commit().await
    }

    /// Rewrites the database so that nothing it held before is left anywhere in its files:
    /// the WAL is checkpointed and emptied, and VACUUM rebuilds the database over itself.
    pub async fn scrub(&self) -> Result<(), ClientError> {
        self.checkpoint().await?;
        sqlx::query("VACUUM").execute(&self.pool).await?;
        self.checkpoint().await
    }

    async fn checkpoint(&self) -> Result<(), ClientError> {
        let result = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        let busy: i64 = result.try_get(0)?;
        if busy != 0 {
            return Err(ClientError::State(
                "the database is in use by another program; close it and try again".into(),
            ));
        }
        Ok(())
    }

    /// The device key an encrypted home keeps sealed.
    pub async fn device_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, ClientError> {
        let Some(stored) = self.meta(DEVICE_KEY).await? else {
            return Ok(None);
        };
        let stored = Zeroizing::new(stored);
        let key: [u8; 32] = stored[..].try_into().map_err(|_| {
            ClientError::State(
                "the stored device key is not 32 bytes; enroll this device again".into(),
            )
        })?;
        Ok(Some(Zeroizing::new(key)))
    }
}

/// A header wrapping `data_key` under `secret`, computed off the runtime's threads.
async fn wrap(secret: &Secret, data_key: DataKey) -> Result<(Header, DataKey), ClientError> {
    let secret = secret.clone();
    tokio::task::spawn_blocking(move || Header::wrap(&secret, &data_key).map(|h| (h, data_key)))
        .await
        .map_err(|e| ClientError::State(format!("deriving a key: {e}")))?
}

/// Seals, inside `tx`, every value of an unencrypted home that `rows` seals.
async fn seal_all(tx: &mut Tx, keys: &Keys) -> Result<(), ClientError> {
    let conn: &mut SqliteConnection = tx;
    seal_meta(conn, keys).await?;
    seal_mls(conn, keys).await?;
    seal_conversations(conn, keys).await?;
    seal_history(conn, keys).await?;
    seal_outbox(conn, keys).await
}

async fn seal_meta(conn: &mut SqliteConnection, keys: &Keys) -> Result<(), ClientError> {
    let clear = format!("'{}'", CLEAR_META.join("', '"));
    let entries = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT key, value FROM meta WHERE key NOT IN ({clear})"
    )))
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM meta WHERE key NOT IN ({clear})"
    )))
    .execute(&mut *conn)
    .await?;
    for entry in &entries {
        let (key, value): (String, Vec<u8>) = (entry.try_get(0)?, entry.try_get(1)?);
        let stored_key = rows::meta_key(Some(keys), &key);
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
            .bind(&stored_key)
            .bind(rows::meta_value(Some(keys), &stored_key, &key, &value))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn seal_mls(conn: &mut SqliteConnection, keys: &Keys) -> Result<(), ClientError> {
    let entries = sqlx::query("SELECT key, value FROM mls_kv")
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM mls_kv")
        .execute(&mut *conn)
        .await?;
    for entry in &entries {
        let (key, value): (Vec<u8>, Vec<u8>) = (entry.try_get(0)?, entry.try_get(1)?);
        let stored_key = rows::mls_key(Some(keys), &key);
        sqlx::query("INSERT INTO mls_kv (key, value) VALUES (?, ?)")
            .bind(&stored_key)
            .bind(rows::mls_value(Some(keys), &stored_key, &key, &value))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn seal_conversations(conn: &mut SqliteConnection, keys: &Keys) -> Result<(), ClientError> {
    let stored = sqlx::query("SELECT group_id, kind, title FROM conversations")
        .fetch_all(&mut *conn)
        .await?;
    for row in &stored {
        let c = rows::open_conversation(None, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)?;
        let (kind, title) = rows::conversation_columns(Some(keys), &c);
        sqlx::query("UPDATE conversations SET kind = ?, title = ? WHERE group_id = ?")
            .bind(kind)
            .bind(title)
            .bind(&c.group_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn seal_history(conn: &mut SqliteConnection, keys: &Keys) -> Result<(), ClientError> {
    let mut after = i64::MIN;
    loop {
        let batch = sqlx::query(
            "SELECT group_id, sender, message_id, sent_at_ms, text, id FROM history
             WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(HISTORY_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.try_get(5)?;
        for row in &batch {
            let entry = rows::open_history(None, row)?;
            let message_id: Vec<u8> = row.try_get(2)?;
            let (sender, text) = rows::history_columns(
                Some(keys),
                &entry.group_id,
                &entry.sender,
                &message_id,
                &entry.text,
            );
            sqlx::query("UPDATE history SET sender = ?, text = ? WHERE id = ?")
                .bind(sender)
                .bind(text)
                .bind(row.try_get::<i64, _>(5)?)
                .execute(&mut *conn)
                .await?;
        }
    }
}

async fn seal_outbox(conn: &mut SqliteConnection, keys: &Keys) -> Result<(), ClientError> {
    let stored = sqlx::query("SELECT id, group_id, message_id, kind, body, welcome FROM outbox")
        .fetch_all(&mut *conn)
        .await?;
    for row in &stored {
        let kind = match row.try_get::<String, _>(3)?.as_str() {
            "commit" => super::OutboxKind::Commit,
            "message" => super::OutboxKind::Message,
            other => {
                return Err(ClientError::State(format!(
                    "unknown outbox entry kind {other:?}; was this home used by a newer relais?"
                )));
            }
        };
        let (group_id, message_id): (Vec<u8>, Vec<u8>) = (row.try_get(1)?, row.try_get(2)?);
        let seal = |column, index| -> Result<Vec<u8>, ClientError> {
            let value: Vec<u8> = row.try_get(index)?;
            Ok(rows::outbox_value(
                Some(keys),
                column,
                &group_id,
                &message_id,
                kind,
                &value,
            ))
        };
        sqlx::query("UPDATE outbox SET body = ?, welcome = ? WHERE id = ?")
            .bind(seal("body", 4)?)
            .bind(seal("welcome", 5)?)
            .bind(row.try_get::<i64, _>(0)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn read_header(pool: &SqlitePool, path: &Path) -> Result<Option<Header>, ClientError> {
    let Some(row) = sqlx::query(
        "SELECT protection, memory_kib, iterations, parallelism, salt, wrapped_key
         FROM at_rest WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let name: String = row.try_get(0)?;
    let kind = SecretKind::from_stored_name(&name).ok_or_else(|| {
        ClientError::State(format!(
            "{} is protected by {name:?}, which this relais does not know; use a newer relais",
            home_of(path).display()
        ))
    })?;
    let parameter = |index: usize| -> Result<u32, ClientError> {
        let value: i64 = row.try_get(index)?;
        u32::try_from(value).map_err(|_| damaged_header(path, "a parameter is out of range"))
    };
    Ok(Some(Header {
        kind,
        memory_kib: parameter(1)?,
        iterations: parameter(2)?,
        parallelism: parameter(3)?,
        salt: row.try_get(4)?,
        wrapped_key: row.try_get(5)?,
    }))
}

async fn write_header(tx: &mut Tx, header: &Header) -> Result<(), ClientError> {
    sqlx::query(
        "INSERT OR REPLACE INTO at_rest
           (id, protection, memory_kib, iterations, parallelism, salt, wrapped_key)
         VALUES (1, ?, ?, ?, ?, ?, ?)",
    )
    .bind(header.kind.stored_name())
    .bind(i64::from(header.memory_kib))
    .bind(i64::from(header.iterations))
    .bind(i64::from(header.parallelism))
    .bind(&header.salt)
    .bind(&header.wrapped_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn damaged_header(path: &Path, why: &str) -> ClientError {
    ClientError::State(format!(
        "the encryption header of {} is damaged ({why}); restore the home from a backup",
        home_of(path).display()
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::state::{Conversation, OutboxKind};

    const MARKER: &str = "marker-at-rest-7f3a";
    const DEVICE_KEY_BYTES: [u8; 32] = [0xA5; 32];

    fn passphrase() -> Secret {
        Secret::passphrase("twelve chars or more")
    }

    /// A state holding the marker in every place that seals it.
    async fn fill(state: &State) {
        let mut tx = state.begin().await.expect("begin");
        let group = vec![1; 16];
        let conversation = Conversation {
            group_id: group.clone(),
            kind: "group".into(),
            title: format!("{MARKER}-title"),
        };
        State::put_conversation(&mut tx, &conversation, 5)
            .await
            .expect("put");
        State::add_history(
            &mut tx,
            &group,
            &format!("{MARKER}-bob"),
            &[1],
            10,
            &format!("hello {MARKER}"),
            11,
        )
        .await
        .expect("add");
        State::add_own_history(
            &mut tx,
            &group,
            "alice@x",
            &[2],
            12,
            &format!("reply {MARKER}"),
        )
        .await
        .expect("own");
        let mls: HashMap<Vec<u8>, Vec<u8>> = [(
            format!("{MARKER}-key").into_bytes(),
            format!("{MARKER}-secret").into_bytes(),
        )]
        .into();
        State::save_mls(&mut tx, &HashMap::new(), &mls)
            .await
            .expect("mls");
        State::put_outbox(
            &mut tx,
            &group,
            &[3],
            OutboxKind::Message,
            MARKER.as_bytes(),
            b"",
        )
        .await
        .expect("outbox");
        State::put_meta(&mut tx, &format!("verified:{MARKER}@x"), MARKER.as_bytes())
            .await
            .expect("meta");
        State::count_failed_delivery(&mut tx).await.expect("count");
        tx.commit().await.expect("commit");
    }

    /// Everything `fill` stored reads back.
    async fn check(state: &State) {
        let conversations = state.conversations().await.expect("conversations");
        assert_eq!(conversations[0].title, format!("{MARKER}-title"));
        assert_eq!(conversations[0].kind, "group");
        let history = state.history(&[1; 16], 10).await.expect("history");
        let texts: Vec<_> = history
            .iter()
            .map(|h| (h.sender.as_str(), h.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (
                    format!("{MARKER}-bob").as_str(),
                    format!("hello {MARKER}").as_str()
                ),
                ("alice@x", format!("reply {MARKER}").as_str())
            ]
        );
        let found = state.search("REPLY", 10).await.expect("search");
        assert_eq!(found.len(), 1);
        assert_eq!(
            state.search(MARKER, 1).await.expect("search").len(),
            1,
            "bounded by limit"
        );
        let summaries = state.summaries().await.expect("summaries");
        assert_eq!(summaries[&vec![1; 16]].0, 1, "one unread");
        let mls = state.mls_values().await.expect("mls");
        assert_eq!(
            mls[format!("{MARKER}-key").as_bytes()],
            format!("{MARKER}-secret").into_bytes()
        );
        let outbox = state.outbox().await.expect("outbox");
        assert_eq!(outbox[0].body, MARKER.as_bytes());
        let verified = state.meta_with_prefix("verified:").await.expect("prefix");
        assert_eq!(verified[&format!("{MARKER}@x")], MARKER);
        assert!(state.failed_deliveries().await.expect("count") >= 1);
    }

    /// Fails if the marker or the device key is in any file of `dir`.
    fn assert_no_plaintext(dir: &Path) {
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let bytes = std::fs::read(entry.path()).expect("read");
            for needle in [MARKER.as_bytes(), &DEVICE_KEY_BYTES[..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "plaintext in {}",
                    entry.path().display()
                );
            }
        }
    }

    #[tokio::test]
    async fn an_unencrypted_state_is_sealed_whole_and_scrubbed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let plain = State::open(&path).await.expect("open");
        fill(&plain).await;
        check(&plain).await;
        let sealed = plain
            .encrypt(&passphrase(), &DEVICE_KEY_BYTES)
            .await
            .expect("encrypt");
        check(&sealed).await;
        sealed.scrub().await.expect("scrub");
        assert_eq!(
            *sealed.device_key().await.expect("key").expect("some"),
            DEVICE_KEY_BYTES
        );
        // Written after the encryption: sealed too.
        fill(&sealed).await;
        sealed.scrub().await.expect("scrub");
        sealed.close().await;
        assert_no_plaintext(dir.path());

        let locked = State::open(&path).await.map(|_| ());
        assert!(
            matches!(
                locked,
                Err(ClientError::Locked {
                    kind: SecretKind::Passphrase,
                    ..
                })
            ),
            "{locked:?}"
        );
        let wrong = State::open_with(&path, Some(&Secret::passphrase("not the passphrase"))).await;
        let Err(ClientError::WrongSecret { home, .. }) = wrong else {
            panic!("a wrong passphrase is refused");
        };
        assert_eq!(home, dir.path());
        let reopened = State::open_with(&path, Some(&passphrase()))
            .await
            .expect("reopen");
        check(&reopened).await;
        assert!(
            reopened
                .encrypt(&passphrase(), &DEVICE_KEY_BYTES)
                .await
                .is_err(),
            "only once"
        );
    }

    #[tokio::test]
    async fn an_encryption_that_fails_midway_leaves_the_home_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let plain = State::open(&path).await.expect("open");
        fill(&plain).await;
        // A history text that is not UTF-8, written after the others: sealing stops there,
        // once everything before it was rewritten inside the transaction.
        sqlx::query(
            "INSERT INTO history (group_id, sender, message_id, sent_at_ms, received_at_ms, text)
             VALUES (x'02', 'eve', x'09', 0, 0, CAST(x'ff' AS TEXT))",
        )
        .execute(&plain.pool)
        .await
        .expect("insert");
        let failed = plain.encrypt(&passphrase(), &DEVICE_KEY_BYTES).await;
        assert!(failed.is_err());
        let again = State::open(&path).await.expect("still unencrypted");
        assert_eq!(again.protection(), None);
        let eve: String = sqlx::query_scalar("SELECT sender FROM history WHERE message_id = x'09'")
            .fetch_one(&again.pool)
            .await
            .expect("the damaged entry is as it was");
        assert_eq!(eve, "eve");
        sqlx::query("DELETE FROM history WHERE message_id = x'09'")
            .execute(&again.pool)
            .await
            .expect("delete");
        check(&again).await;
    }

    #[tokio::test]
    async fn a_new_passphrase_replaces_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let sealed = State::open(&path)
            .await
            .expect("open")
            .encrypt(&passphrase(), &DEVICE_KEY_BYTES)
            .await
            .expect("encrypt");
        fill(&sealed).await;
        assert!(sealed.rewrap(&Secret::passphrase("short")).await.is_err());
        let key_file = Secret::read_key_file(&{
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join("key");
            std::fs::write(&file, [9; 32]).expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            file
        })
        .expect("key file");
        sealed.rewrap(&key_file).await.expect("rewrap");
        sealed.scrub().await.expect("scrub");
        sealed.close().await;
        let old = State::open_with(&path, Some(&passphrase()))
            .await
            .map(|_| ());
        assert!(
            matches!(
                old,
                Err(ClientError::Locked {
                    kind: SecretKind::KeyFile,
                    ..
                })
            ),
            "{old:?}"
        );
        let reopened = State::open_with(&path, Some(&key_file)).await.expect("new");
        check(&reopened).await;
    }
}
