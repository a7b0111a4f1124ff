//! Client signature checks: one rule, whether a transaction is checked
//! alone or in a batch.
//!
//! Every replica must reach the same verdict on every transaction, since a
//! backup refuses a block holding one its check rejects. ed25519 checks
//! differ on edge cases (small-order and mixed-order points, non-canonical
//! encodings), and a library's batch check can differ from its own single
//! check: dalek's `verify_strict` refuses a signature whose `R` carries a
//! torsion component, while its cofactorless batch equation accepts it for
//! one choice in eight of the batch coefficients, that is depending on
//! which other transactions share the batch. So an honest primary's block
//! could pass on one backup and fail on another.
//!
//! We check under the ZIP 215 rules (ed25519-zebra): the cofactored
//! equation, a canonical `s`, permissive point decoding. Under them a batch
//! check agrees with single checks on every input; an invalid signature
//! slips through a batch only with probability 2^-128 (the coefficients
//! are random, drawn per batch). Sender keys of small order are refused
//! before this, when the transaction is decoded.
//!
//! Batch verification only says whether *all* signatures are valid, so on
//! failure we bisect the batch to find the bad ones: a batch with one
//! forgery costs about 2·log2(n) extra batch checks, not n single ones.

use ed25519_dalek::{Signature, VerifyingKey};
use ed25519_zebra::{batch, VerificationKey, VerificationKeyBytes};

use super::envelope::VerifiedTx;

/// Below this size single verification is as cheap as batching.
const SINGLE_CHECK_BELOW: usize = 4;

/// Whether `signature` by `sender` over `message` verifies under the
/// chain's rule.
pub fn verify_one(sender: &VerifyingKey, signature: &Signature, message: &[u8]) -> bool {
    VerificationKey::try_from(sender.to_bytes())
        .and_then(|key| key.verify(signature, message))
        .is_ok()
}

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
            valid[offset + i] = verify_one(&tx.sender, &tx.signature, &tx.signed.body);
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
    let mut batch = batch::Verifier::new();
    for tx in txs {
        batch.queue((
            VerificationKeyBytes::from(tx.sender.to_bytes()),
            tx.signature,
            tx.signed.body.as_ref(),
        ));
    }
    batch.verify(rand::thread_rng()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{SignedTransaction, TxBody};
    use crate::tx::envelope::{decode, put, sign, TxLimits};
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use prost::Message as _;
    use sha2::{Digest as _, Sha512};

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

    /// Signatures an attacker can craft without a victim's key, and the
    /// honest one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Craft {
        Honest,
        /// `R` with an order-8 component added.
        MixedOrderR,
        /// A sender key with an order-8 component (not itself small order).
        MixedOrderKey,
        /// `R` of small order, `s = k·a`: only the cofactored equation holds.
        SmallOrderR,
        /// `s + l`: the same scalar, not canonically encoded.
        NonCanonicalS,
        /// A valid signature over another message.
        WrongMessage,
        /// `R` not a point on the curve.
        NotAPoint,
    }

    /// The order of the base point, 2^252 + 27742317777372353535851937790883648493.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    const CRAFTS: [Craft; 7] = [
        Craft::Honest,
        Craft::MixedOrderR,
        Craft::MixedOrderKey,
        Craft::SmallOrderR,
        Craft::NonCanonicalS,
        Craft::WrongMessage,
        Craft::NotAPoint,
    ];

    /// A transaction signed by the scalar `a` (from `seed`) with the crafted
    /// signature.
    fn crafted(craft: Craft, seed: u64) -> VerifiedTx {
        let scalar = |tag: u8| {
            let mut h = Sha512::new();
            h.update([tag]);
            h.update(seed.to_le_bytes());
            Scalar::from_hash(h)
        };
        let (a, r) = (scalar(0), scalar(1));
        let torsion = EIGHT_TORSION[1];
        let b = ED25519_BASEPOINT_POINT;
        let key_point: EdwardsPoint = match craft {
            Craft::MixedOrderKey => a * b + torsion,
            _ => a * b,
        };
        let key = key_point.compress().to_bytes();
        let body = TxBody {
            chain_id: "c".into(),
            sender: key.to_vec(),
            nonce: seed,
            timestamp_ms: 1,
            payload: Some(put(format!("k{seed}"), "v")),
        }
        .encode_to_vec();
        let r_point = match craft {
            Craft::MixedOrderR => r * b + torsion,
            Craft::SmallOrderR => torsion,
            _ => r * b,
        };
        let r_bytes = match craft {
            // An x-coordinate sign bit with y = 2 has no point: y² = 4 gives
            // no square root for x² here.
            Craft::NotAPoint => {
                let mut bytes = [0u8; 32];
                bytes[0] = 2;
                assert!(CompressedEdwardsY(bytes).decompress().is_none());
                bytes
            }
            _ => r_point.compress().to_bytes(),
        };
        let message: &[u8] = match craft {
            Craft::WrongMessage => b"another message",
            _ => &body,
        };
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(key);
        h.update(message);
        let k = Scalar::from_hash(h);
        let s = match craft {
            Craft::SmallOrderR => k * a,
            _ => r + k * a,
        };
        let mut s_bytes = s.to_bytes();
        if craft == Craft::NonCanonicalS {
            // s + l, as a little-endian 256-bit sum (fits: s, l < 2^253).
            let mut carry = 0u16;
            for (x, y) in s_bytes.iter_mut().zip(ORDER) {
                let sum = u16::from(*x) + u16::from(y) + carry;
                *x = sum as u8;
                carry = sum >> 8;
            }
        }
        let mut signature = r_bytes.to_vec();
        signature.extend_from_slice(&s_bytes);
        decode(
            SignedTransaction {
                body: body.into(),
                signature,
            },
            "c",
            &LIMITS,
        )
        .expect("crafted transactions decode; only their signatures are odd")
    }

    fn single(tx: &VerifiedTx) -> bool {
        verify_one(&tx.sender, &tx.signature, &tx.signed.body)
    }

    #[test]
    fn each_crafted_signature_gets_the_rule_s_verdict() {
        let verdicts: Vec<(Craft, bool)> = CRAFTS
            .iter()
            .map(|c| (*c, single(&crafted(*c, 7))))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                (Craft::Honest, true),
                // The torsion vanishes under the cofactored equation: these
                // are valid under ZIP 215, the same on every replica.
                (Craft::MixedOrderR, true),
                (Craft::MixedOrderKey, true),
                (Craft::SmallOrderR, true),
                (Craft::NonCanonicalS, false),
                (Craft::WrongMessage, false),
                (Craft::NotAPoint, false),
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// In any batch, each transaction gets exactly its single-check
        /// verdict, whatever shares the batch with it.
        #[test]
        fn a_batch_agrees_with_single_checks(
            picks in proptest::collection::vec((0..CRAFTS.len(), any::<u64>()), 1..40),
        ) {
            let batch: Vec<VerifiedTx> = picks.iter().map(|(c, seed)| crafted(CRAFTS[*c], *seed)).collect();
            let singles: Vec<bool> = batch.iter().map(single).collect();
            prop_assert_eq!(verify(&batch), singles);
        }
    }
}
