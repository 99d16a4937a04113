//! How each table's values are stored: as they are in an unencrypted home; in an encrypted
//! one, sealed with the row's identity as associated data (so that a value moved to another
//! row no longer opens), and looked up by keyed hashes where a table is searched by value.

use sqlx::Sqlite;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use zeroize::Zeroizing;

use super::{Conversation, HistoryRow, OutboxKind};
use crate::ClientError;
use crate::at_rest::Keys;

/// A column's value as stored: text in an unencrypted home (as homes always stored it), a
/// sealed blob in an encrypted one.
pub(super) enum Stored {
    Text(String),
    Bytes(Vec<u8>),
}

impl sqlx::Type<Sqlite> for Stored {
    fn type_info() -> SqliteTypeInfo {
        <Vec<u8> as sqlx::Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <Vec<u8> as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Stored {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Stored::Text(text) => <String as Encode<Sqlite>>::encode_by_ref(text, buf),
            Stored::Bytes(bytes) => <Vec<u8> as Encode<Sqlite>>::encode_by_ref(bytes, buf),
        }
    }

    fn produces(&self) -> Option<SqliteTypeInfo> {
        Some(match self {
            Stored::Text(_) => <String as sqlx::Type<Sqlite>>::type_info(),
            Stored::Bytes(_) => <Vec<u8> as sqlx::Type<Sqlite>>::type_info(),
        })
    }
}

/// A meta key as stored: in an encrypted home, its namespace (up to its first `:`, so that
/// the entries of one namespace can be listed) and a keyed hash of the whole key.
pub(super) fn meta_key(keys: Option<&Keys>, key: &str) -> String {
    match keys {
        None => key.to_owned(),
        Some(keys) => {
            let namespace = key.find(':').map_or("", |i| &key[..=i]);
            format!(
                "{namespace}{}",
                hex::encode(keys.lookup(&[b"meta", key.as_bytes()]))
            )
        }
    }
}

pub(super) fn meta_value(
    keys: Option<&Keys>,
    stored_key: &str,
    key: &str,
    value: &[u8],
) -> Vec<u8> {
    match keys {
        None => value.to_vec(),
        Some(keys) => keys.seal(
            &[b"meta", stored_key.as_bytes()],
            &pack(&[key.as_bytes(), value]),
        ),
    }
}

/// A stored meta entry's key and value.
pub(super) fn open_meta(
    keys: Option<&Keys>,
    stored_key: &str,
    value: Vec<u8>,
) -> Result<(String, Vec<u8>), ClientError> {
    let Some(keys) = keys else {
        return Ok((stored_key.to_owned(), value));
    };
    let plain = keys.open(&[b"meta", stored_key.as_bytes()], &value)?;
    let [key, value] = unpack(&plain, "meta")?;
    Ok((text(key, "meta")?, value.to_vec()))
}

/// An MLS storage key as stored: a keyed hash in an encrypted home.
pub(super) fn mls_key(keys: Option<&Keys>, key: &[u8]) -> Vec<u8> {
    match keys {
        None => key.to_vec(),
        Some(keys) => keys.lookup(&[b"mls_kv", key]).to_vec(),
    }
}

pub(super) fn mls_value(
    keys: Option<&Keys>,
    stored_key: &[u8],
    key: &[u8],
    value: &[u8],
) -> Vec<u8> {
    match keys {
        None => value.to_vec(),
        Some(keys) => keys.seal(&[b"mls_kv", stored_key], &pack(&[key, value])),
    }
}

/// A stored MLS entry's key and value.
pub(super) fn open_mls(
    keys: Option<&Keys>,
    stored_key: Vec<u8>,
    value: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let Some(keys) = keys else {
        return Ok((stored_key, value));
    };
    let plain = keys.open(&[b"mls_kv", &stored_key], &value)?;
    let [key, value] = unpack(&plain, "mls_kv")?;
    Ok((key.to_vec(), value.to_vec()))
}

/// A conversation's `kind` and `title` columns: in an encrypted home the kind is empty and
/// both travel sealed in the title, bound to the group.
pub(super) fn conversation_columns(keys: Option<&Keys>, c: &Conversation) -> (String, Stored) {
    match keys {
        None => (c.kind.clone(), Stored::Text(c.title.clone())),
        Some(keys) => (
            String::new(),
            Stored::Bytes(keys.seal(
                &[b"conversations", &c.group_id],
                &pack(&[c.kind.as_bytes(), c.title.as_bytes()]),
            )),
        ),
    }
}

pub(super) fn open_conversation(
    keys: Option<&Keys>,
    group_id: Vec<u8>,
    kind: String,
    title: Vec<u8>,
) -> Result<Conversation, ClientError> {
    let Some(keys) = keys else {
        let title = text(&title, "conversations")?;
        return Ok(Conversation {
            group_id,
            kind,
            title,
        });
    };
    let plain = keys.open(&[b"conversations", &group_id], &title)?;
    let [kind, title] = unpack(&plain, "conversations")?;
    Ok(Conversation {
        kind: text(kind, "conversations")?,
        title: text(title, "conversations")?,
        group_id,
    })
}

/// A history entry's `sender` and `text` columns. In an encrypted home the sender column
/// is a keyed hash of the sender and the message id (so that a second copy of a message is
/// still recognised, while entries from one sender do not look alike), and the sender and
/// the text travel sealed, bound to the group, that hash and the message id.
pub(super) fn history_columns(
    keys: Option<&Keys>,
    group_id: &[u8],
    sender: &str,
    message_id: &[u8],
    text: &str,
) -> (String, Stored) {
    match keys {
        None => (sender.to_owned(), Stored::Text(text.to_owned())),
        Some(keys) => {
            let sender_column =
                hex::encode(keys.lookup(&[b"history sender", sender.as_bytes(), message_id]));
            let sealed = keys.seal(
                &[b"history", group_id, sender_column.as_bytes(), message_id],
                &pack(&[sender.as_bytes(), text.as_bytes()]),
            );
            (sender_column, Stored::Bytes(sealed))
        }
    }
}

/// A history entry from a row of `group_id, sender, message_id, sent_at_ms, text`, the
/// columns every history query selects first, in this order.
pub(super) fn open_history(
    keys: Option<&Keys>,
    row: &sqlx::sqlite::SqliteRow,
) -> Result<HistoryRow, ClientError> {
    use sqlx::Row as _;
    let group_id: Vec<u8> = row.try_get(0)?;
    let sender: String = row.try_get(1)?;
    let message_id: Vec<u8> = row.try_get(2)?;
    let sent_at_ms: i64 = row.try_get(3)?;
    let stored: Vec<u8> = row.try_get(4)?;
    let Some(keys) = keys else {
        return Ok(HistoryRow {
            group_id,
            sender,
            message_id,
            sent_at_ms,
            text: text(&stored, "history")?,
        });
    };
    let plain = keys.open(
        &[b"history", &group_id, sender.as_bytes(), &message_id],
        &stored,
    )?;
    let [sender, body] = unpack(&plain, "history")?;
    Ok(HistoryRow {
        sender: text(sender, "history")?,
        text: text(body, "history")?,
        group_id,
        message_id,
        sent_at_ms,
    })
}

/// An outbox entry's body or Welcome as stored: sealed, bound to its group, message id,
/// kind and column.
pub(super) fn outbox_value(
    keys: Option<&Keys>,
    column: &str,
    group_id: &[u8],
    message_id: &[u8],
    kind: OutboxKind,
    value: &[u8],
) -> Vec<u8> {
    match keys {
        None => value.to_vec(),
        Some(keys) => keys.seal(&outbox_place(column, group_id, message_id, kind), value),
    }
}

pub(super) fn open_outbox_value(
    keys: Option<&Keys>,
    column: &str,
    group_id: &[u8],
    message_id: &[u8],
    kind: OutboxKind,
    stored: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    match keys {
        None => Ok(stored),
        Some(keys) => Ok(keys
            .open(&outbox_place(column, group_id, message_id, kind), &stored)?
            .to_vec()),
    }
}

fn outbox_place<'a>(
    column: &'a str,
    group_id: &'a [u8],
    message_id: &'a [u8],
    kind: OutboxKind,
) -> [&'a [u8]; 5] {
    [
        b"outbox",
        column.as_bytes(),
        group_id,
        message_id,
        kind.stored_name().as_bytes(),
    ]
}

/// Parts, each after its length in four bytes: the plaintext of a sealed value that holds
/// more than one field.
fn pack(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for part in parts {
        let len = u32::try_from(part.len()).expect("a stored field is far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The `N` parts of a value made by [`pack`]; anything else is damage (the value opened, so
/// only a bug or a newer format could make it).
fn unpack<'a, const N: usize>(
    mut bytes: &'a [u8],
    table: &str,
) -> Result<[&'a [u8]; N], ClientError> {
    let malformed = || {
        ClientError::State(format!(
            "a stored {table} value has an unknown layout; was this home used by a newer relais?"
        ))
    };
    let mut parts = [&[][..]; N];
    for part in &mut parts {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| malformed())?;
        if rest.len() < len {
            return Err(malformed());
        }
        (*part, bytes) = rest.split_at(len);
    }
    if bytes.is_empty() {
        Ok(parts)
    } else {
        Err(malformed())
    }
}

fn text(bytes: &[u8], table: &str) -> Result<String, ClientError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ClientError::State(format!(
            "a stored {table} text is not UTF-8: the database was damaged; restore the home \
             from a backup"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at_rest::DataKey;

    #[test]
    fn packed_fields_round_trip_and_bad_layouts_are_refused() {
        let packed = pack(&[b"alice@x", b"", b"hello"]);
        let [a, b, c] = unpack::<3>(&packed, "t").expect("unpack");
        assert_eq!((a, b, c), (&b"alice@x"[..], &b""[..], &b"hello"[..]));
        assert!(unpack::<2>(&packed, "t").is_err(), "extra bytes");
        assert!(unpack::<4>(&packed, "t").is_err(), "missing part");
        assert!(unpack::<1>(&[0, 0, 0, 9, 1], "t").is_err(), "short part");
    }

    #[test]
    fn a_sealed_value_moved_to_another_row_is_refused() {
        let keys = DataKey::generate().keys();
        let keys = Some(&keys);
        let one = Conversation {
            group_id: vec![1; 16],
            kind: "group".into(),
            title: "crisis cell".into(),
        };
        let (_, Stored::Bytes(title)) = conversation_columns(keys, &one) else {
            panic!("sealed in an encrypted home");
        };
        let opened = open_conversation(keys, one.group_id.clone(), String::new(), title.clone())
            .expect("open");
        assert_eq!(opened, one);
        // The same sealed title under another group: refused.
        assert!(open_conversation(keys, vec![2; 16], String::new(), title).is_err());

        let stored = meta_key(keys, "verified:bob@x");
        assert!(stored.starts_with("verified:") && !stored.contains("bob"));
        let value = meta_value(keys, &stored, "verified:bob@x", b"keys");
        let other = meta_key(keys, "verified:carol@x");
        assert!(open_meta(keys, &other, value.clone()).is_err());
        assert_eq!(
            open_meta(keys, &stored, value).expect("open"),
            ("verified:bob@x".to_owned(), b"keys".to_vec())
        );

        let body = outbox_value(keys, "body", &[1], &[2], OutboxKind::Message, b"ct");
        assert!(
            open_outbox_value(
                keys,
                "welcome",
                &[1],
                &[2],
                OutboxKind::Message,
                body.clone()
            )
            .is_err()
        );
        assert!(
            open_outbox_value(keys, "body", &[1], &[3], OutboxKind::Message, body.clone()).is_err()
        );
        assert!(open_outbox_value(keys, "body", &[1], &[2], OutboxKind::Commit, body).is_err());
    }
}
