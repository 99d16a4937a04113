//! The delivery service's stored view of an MLS group: openmls's public-group state,
//! kept in a per-group in-memory store and persisted as one length-prefixed blob.

use std::collections::HashMap;

use openmls::prelude::{GroupId, PublicGroup};
use openmls_rust_crypto::MemoryStorage;

/// Largest state blob accepted from storage; far above a 10,000-member tree.
const STATE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a stored group state could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("stored group state is truncated or corrupt")]
    Corrupt,
    #[error("stored group state is incomplete")]
    Incomplete,
}

/// A group's public state in a private in-memory store.
pub struct GroupState {
    pub storage: MemoryStorage,
    pub group: PublicGroup,
}

impl GroupState {
    /// Reads back a group serialized by [`encode`].
    pub fn decode(group_id: &[u8], bytes: &[u8]) -> Result<GroupState, StateError> {
        let storage = decode_storage(bytes)?;
        let group = PublicGroup::load(&storage, &GroupId::from_slice(group_id))
            .map_err(|_| StateError::Corrupt)?
            .ok_or(StateError::Incomplete)?;
        Ok(GroupState { storage, group })
    }
}

/// Serializes every value of a store: count, then (key length, value length, key, value).
pub fn encode(storage: &MemoryStorage) -> Vec<u8> {
    // A poisoned lock means a panic elsewhere mid-write; the data is still what was written.
    let values = storage.values.read().unwrap_or_else(|e| e.into_inner());
    let mut entries: Vec<_> = values.iter().collect();
    // Sorted so that the same state always gives the same bytes.
    entries.sort();
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (key, value) in entries {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

fn decode_storage(bytes: &[u8]) -> Result<MemoryStorage, StateError> {
    if bytes.len() > STATE_BYTES_MAX {
        return Err(StateError::Corrupt);
    }
    let mut rest = bytes;
    let count = take_u32(&mut rest)?;
    let mut values = HashMap::new();
    for _ in 0..count {
        let key_len = take_u32(&mut rest)? as usize;
        let value_len = take_u32(&mut rest)? as usize;
        let key = take(&mut rest, key_len)?.to_vec();
        let value = take(&mut rest, value_len)?.to_vec();
        values.insert(key, value);
    }
    if !rest.is_empty() {
        return Err(StateError::Corrupt);
    }
    let storage = MemoryStorage::default();
    *storage.values.write().unwrap_or_else(|e| e.into_inner()) = values;
    Ok(storage)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], StateError> {
    if rest.len() < n {
        return Err(StateError::Corrupt);
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, StateError> {
    let bytes = take(rest, 4)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_round_trips_and_rejects_truncation() {
        let storage = MemoryStorage::default();
        storage
            .values
            .write()
            .expect("lock")
            .insert(b"k1".to_vec(), b"value".to_vec());
        storage
            .values
            .write()
            .expect("lock")
            .insert(b"k2".to_vec(), Vec::new());
        let bytes = encode(&storage);
        let back = decode_storage(&bytes).expect("decodes");
        assert_eq!(
            *back.values.read().expect("lock"),
            *storage.values.read().expect("lock")
        );
        for cut in 0..bytes.len() {
            assert!(decode_storage(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_storage(&longer).is_err());
    }
}
