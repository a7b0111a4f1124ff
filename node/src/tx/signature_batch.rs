//! Signature verification in batches.
//!
//! ed25519 batch verification checks n signatures for roughly half the cost
//! of n single checks. It only says whether *all* are valid, so on failure
//! we bisect the batch to find the bad ones: a batch with one forgery costs
//! about 2·log2(n) extra batch checks, not n single ones. dalek's batch
//! check derives its random coefficients from a transcript of the inputs,
//! so the answer is deterministic for the same transactions.

use ed25519_dalek::{Signature, VerifyingKey};

use super::envelope::VerifiedTx;

/// Below this size single verification is as cheap as batching.
const SINGLE_CHECK_BELOW: usize = 4;

/// Returns, for each transaction, whether its signature verifies.
pub fn verify(txs: &[VerifiedTx]) -> Vec<bool> {
    let mut valid = vec![false; txs.len()];
    verify_range(txs, 0, &mut valid);
    valid
}

fn verify_range(txs: &[VerifiedTx], offset: usize, valid: &mut [bool]) {
    if txs.is_empty() {
        return;
    }
    if txs.len() < SINGLE_CHECK_BELOW {
        for (i, tx) in txs.iter().enumerate() {
            valid[offset + i] = tx
                .sender
                .verify_strict(&tx.signed.body, &tx.signature)
                .is_ok();
        }
        return;
    }
    if batch_ok(txs) {
        valid[offset..offset + txs.len()].fill(true);
        return;
    }
    let mid = txs.len() / 2;
    verify_range(&txs[..mid], offset, valid);
    verify_range(&txs[mid..], offset + mid, valid);
}

fn batch_ok(txs: &[VerifiedTx]) -> bool {
    let messages: Vec<&[u8]> = txs.iter().map(|t| t.signed.body.as_ref()).collect();
    let signatures: Vec<Signature> = txs.iter().map(|t| t.signature).collect();
    let keys: Vec<VerifyingKey> = txs.iter().map(|t| t.sender).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::envelope::{decode, put, sign, TxLimits};
    use ed25519_dalek::SigningKey;

    const LIMITS: TxLimits = TxLimits {
        max_tx_bytes: 4096,
        max_key_bytes: 64,
        max_value_bytes: 1024,
    };

    fn txs(n: usize) -> Vec<VerifiedTx> {
        (0..n)
            .map(|i| {
                let key = SigningKey::from_bytes(&[(i % 7) as u8 + 1; 32]);
                decode(
                    sign(&key, "c", i as u64, 1, put(format!("k{i}"), "v")),
                    "c",
                    &LIMITS,
                )
                .expect("valid")
            })
            .collect()
    }

    #[test]
    fn a_good_batch_verifies() {
        assert!(verify(&txs(64)).iter().all(|ok| *ok));
        assert!(verify(&[]).is_empty());
    }

    #[test]
    fn finds_the_one_bad_signature_in_a_batch() {
        for bad in [0, 17, 63] {
            let mut batch = txs(64);
            // Sign a different body with the right key: a valid signature, wrong message.
            let other = sign(
                &SigningKey::from_bytes(&[1; 32]),
                "c",
                999,
                1,
                put("x", "y"),
            );
            batch[bad].signature = Signature::from_slice(&other.signature).expect("64 bytes");
            let result = verify(&batch);
            for (i, ok) in result.iter().enumerate() {
                assert_eq!(*ok, i != bad, "index {i}, bad {bad}");
            }
        }
    }

    #[test]
    fn finds_several_bad_signatures_in_small_batches() {
        let mut batch = txs(5);
        batch[1].signature = Signature::from_bytes(&[0u8; 64]);
        batch[4].signature = Signature::from_bytes(&[0u8; 64]);
        assert_eq!(verify(&batch), vec![true, false, true, true, false]);
    }
}
