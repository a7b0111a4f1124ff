//! Decoded sender keys, cached by their bytes.
//!
//! Decoding an ed25519 public key decompresses a curve point (a field
//! square root), which costs about as much as a third of a batched
//! signature check, and every replica decodes every transaction's sender
//! at admission and again in the proposal check. A consortium has few
//! client identities, so a bounded cache of decoded keys turns nearly all
//! of those decompressions into a lookup. Only valid, non-weak keys are
//! kept; decoding the same bytes always gives the same key, so the cache
//! never changes an answer.

use std::sync::OnceLock;

use ed25519_dalek::VerifyingKey;
use quick_cache::sync::Cache;

/// Distinct senders kept (about 250 bytes each).
const CAPACITY: usize = 16_384;

fn cache() -> &'static Cache<[u8; 32], VerifyingKey> {
    static CACHE: OnceLock<Cache<[u8; 32], VerifyingKey>> = OnceLock::new();
    CACHE.get_or_init(|| Cache::new(CAPACITY))
}

/// The sender key for `bytes`, or `None` if it is not a valid ed25519
/// public key or is of small order.
pub fn decode(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    if let Some(key) = cache().get(bytes) {
        return Some(key);
    }
    let key = VerifyingKey::from_bytes(bytes)
        .ok()
        .filter(|k| !k.is_weak())?;
    cache().insert(*bytes, key);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn a_cached_key_is_the_key_and_bad_keys_stay_refused() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let bytes = key.to_bytes();
        assert_eq!(decode(&bytes), Some(key));
        assert_eq!(decode(&bytes), Some(key), "second lookup, from the cache");
        // The identity point is a valid encoding but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(decode(&identity), None);
        assert_eq!(decode(&identity), None);
        // Every answer matches an uncached decode, valid or not, first
        // time and from the cache.
        for b in 0..=255u8 {
            let bytes = [b; 32];
            let fresh = VerifyingKey::from_bytes(&bytes)
                .ok()
                .filter(|k| !k.is_weak());
            assert_eq!(decode(&bytes), fresh);
            assert_eq!(decode(&bytes), fresh);
        }
    }
}
