//! Per-key history: every version of a key with the transaction that wrote
//! it, oldest first, with delete markers.

use crate::ledger::store::{StoreError, CF_HISTORY};
use crate::proto::HistoryEntry;

/// Prefix shared by all history records of `key`.
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + 12);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The history record key of `key`'s version written at (height, index).
pub fn record_key(key: &[u8], height: u64, index: u32) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// Splits the (height, index) suffix off a record key of `key`.
pub fn version_of(record_key: &[u8], key: &[u8]) -> Option<(u64, u32)> {
    let suffix = record_key.get(4 + key.len()..)?;
    if suffix.len() != 12 {
        return None;
    }
    let height = u64::from_be_bytes(suffix[..8].try_into().ok()?);
    let index = u32::from_be_bytes(suffix[8..].try_into().ok()?);
    Some((height, index))
}

/// A history record value: who wrote what, when.
pub fn encode_record(
    tx_id: &[u8; 32],
    timestamp_ms: u64,
    block_timestamp_ms: u64,
    deleted: bool,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(49 + value.len());
    out.extend_from_slice(tx_id);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&block_timestamp_ms.to_be_bytes());
    out.push(u8::from(deleted));
    out.extend_from_slice(value);
    out
}

pub fn decode_record(height: u64, index: u32, bytes: &[u8]) -> Result<HistoryEntry, StoreError> {
    if bytes.len() < 49 {
        return Err(StoreError::Corrupt {
            cf: CF_HISTORY,
            what: format!("history record of {} bytes is too short", bytes.len()),
        });
    }
    let read = |range: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[range]);
        u64::from_be_bytes(b)
    };
    Ok(HistoryEntry {
        tx_id: bytes[..32].to_vec(),
        height,
        tx_index: index,
        timestamp_ms: read(32..40),
        block_timestamp_ms: read(40..48),
        deleted: bytes[48] != 0,
        value: bytes[49..].to_vec(),
    })
}

/// Page token: the (height, index) of the last entry returned.
pub fn encode_page_token(height: u64, index: u32) -> Vec<u8> {
    let mut out = height.to_be_bytes().to_vec();
    out.extend_from_slice(&index.to_be_bytes());
    out
}

pub fn decode_page_token(token: &[u8]) -> Option<(u64, u32)> {
    if token.len() != 12 {
        return None;
    }
    Some((
        u64::from_be_bytes(token[..8].try_into().ok()?),
        u32::from_be_bytes(token[8..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_version_and_never_mix_keys() {
        let mut keys = [
            record_key(b"a", 2, 0),
            record_key(b"ab", 1, 0),
            record_key(b"a", 1, 5),
            record_key(b"a", 10, 0),
            record_key(b"a", 1, 0),
        ];
        keys.sort();
        let a = key_prefix(b"a");
        let versions: Vec<_> = keys
            .iter()
            .filter(|k| k.starts_with(&a) && k.len() == a.len() + 12)
            .map(|k| version_of(k, b"a").expect("version"))
            .collect();
        assert_eq!(versions, vec![(1, 0), (1, 5), (2, 0), (10, 0)]);
        assert!(!record_key(b"ab", 1, 0).starts_with(&a));
    }

    #[test]
    fn records_and_tokens_round_trip() {
        let bytes = encode_record(&[3; 32], 11, 12, true, b"");
        let e = decode_record(4, 2, &bytes).expect("decodes");
        assert!(e.deleted);
        assert_eq!(
            (e.height, e.tx_index, e.timestamp_ms, e.block_timestamp_ms),
            (4, 2, 11, 12)
        );
        assert_eq!(decode_page_token(&encode_page_token(9, 1)), Some((9, 1)));
        assert_eq!(decode_page_token(b"short"), None);
        assert!(decode_record(0, 0, &[1; 10]).is_err());
    }
}
