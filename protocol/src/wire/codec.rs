//! Binary encodings at the consensus boundary: PBFT messages and commit
//! certificates on the wire and on disk (postcard over the crate's serde
//! types; signatures cover the crate's own canonical encoding, so this
//! choice never affects them), and client transactions inside a payload.

use bytes::Bytes;
use std::collections::HashMap;

use kubeledger_pbft::{CommitCertificate, Digest, Payload, SignedMessage};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::payload_table;
use crate::proto::SignedTransaction;
use crate::tx::envelope::{self, TxLimits, VerifiedTx};
use crate::tx::Rejection;

/// Largest consensus message accepted from a peer. A VIEW-CHANGE carries
/// the prepared payloads since the last stable checkpoint, so this is
/// generous; anything larger is dropped undecoded.
pub const MAX_MESSAGE_BYTES: usize = crate::genesis::MAX_CONSENSUS_MESSAGE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoded {what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
}

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(|source| CodecError::Encode { what, source })
}

pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    postcard::from_bytes(bytes).map_err(|source| CodecError::Decode { what, source })
}

/// A consensus message on the wire: the message with its payloads replaced
/// by placeholders, and each distinct payload once (a NEW-VIEW would
/// otherwise carry every prepared payload once per VIEW-CHANGE in it),
/// under the digest its places name.
///
/// Decoding trusts those digests only to put each payload in its place:
/// the replica hashes every payload it receives and refuses a message whose
/// payload does not hash to the signed digest, so a payload is hashed once
/// on its way in, by the replica, not also here.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireMessage {
    message: SignedMessage,
    payloads: Vec<(Digest, Payload)>,
}

pub fn encode_message(m: &SignedMessage) -> Result<Bytes, CodecError> {
    let mut table = HashMap::new();
    let message = payload_table::strip(m, &mut table);
    let wire = WireMessage {
        message,
        payloads: table.into_iter().map(|(d, p)| (d, p.clone())).collect(),
    };
    encode("consensus message", &wire).map(Bytes::from)
}

pub fn decode_message(bytes: &[u8]) -> Result<SignedMessage, CodecError> {
    let wire: WireMessage = decode("consensus message", bytes, MAX_MESSAGE_BYTES)?;
    let mut message = wire.message;
    if !wire.payloads.is_empty() {
        let table: HashMap<_, _> = wire.payloads.into_iter().collect();
        payload_table::fill(&mut message, &table);
    }
    Ok(message)
}

pub fn encode_certificate(c: &CommitCertificate) -> Result<Vec<u8>, CodecError> {
    encode("commit certificate", c)
}

pub fn decode_certificate(bytes: &[u8]) -> Result<CommitCertificate, CodecError> {
    decode("commit certificate", bytes, 1024 * 1024)
}

/// A transaction as carried in a PBFT payload: its protobuf encoding.
pub fn tx_to_payload(tx: &VerifiedTx) -> Vec<u8> {
    tx.signed.encode_to_vec()
}

/// Decodes and checks (without the signature) a transaction of a payload.
pub fn tx_from_payload(
    bytes: &[u8],
    chain_id: &str,
    limits: &TxLimits,
) -> Result<VerifiedTx, Rejection> {
    let signed = SignedTransaction::decode(bytes).map_err(|e| {
        Rejection::new(
            crate::proto::RejectReason::Malformed,
            format!("payload transaction is not a SignedTransaction: {e}"),
        )
    })?;
    envelope::decode(signed, chain_id, limits)
}

/// A served commit certificate for block `height`, if it is one: it decodes,
/// is for that sequence, and a quorum of `vset` signed matching COMMITs.
/// (Its digest is the ordered payload's, which the block alone does not
/// determine; the block is proven by the hash chain to a certified
/// checkpoint.) Anything else is dropped rather than stored and served on.
pub fn verified_certificate(
    bytes: Vec<u8>,
    height: u64,
    vset: &kubeledger_pbft::ValidatorSet,
) -> Option<Vec<u8>> {
    if bytes.is_empty() {
        return None;
    }
    let cert = decode_certificate(&bytes).ok()?;
    (cert.seq == height && cert.verify(vset)).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeledger_pbft::{Message as PbftMessage, Vote};

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let m = SignedMessage {
            signer: 2,
            message: PbftMessage::Prepare(Vote {
                view: 3,
                seq: 9,
                digest: [7; 32],
            }),
            signature: vec![1; 64],
        };
        let bytes = encode_message(&m).expect("encodes");
        assert_eq!(decode_message(&bytes).expect("decodes"), m);
        assert!(decode_message(&[0xff, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode::<SignedMessage>("x", &bytes, 3),
            Err(CodecError::TooLarge { .. })
        ));
    }

    fn pre_prepare(seq: u64, payload: &Payload) -> SignedMessage {
        SignedMessage {
            signer: 0,
            message: PbftMessage::PrePrepare(kubeledger_pbft::PrePrepare {
                view: 0,
                seq,
                digest: payload.digest(),
                payload: payload.clone(),
            }),
            signature: vec![5; 64],
        }
    }

    #[test]
    fn a_payload_repeated_in_a_new_view_travels_once() {
        let payload = Payload {
            timestamp_ms: 9,
            proposer: 0,
            txs: vec![vec![0xab; 10_000]].into(),
        };
        let pp = pre_prepare(4, &payload);
        let vc = |signer| SignedMessage {
            signer,
            message: PbftMessage::ViewChange(kubeledger_pbft::ViewChange {
                new_view: 1,
                stable_seq: 0,
                checkpoint_proof: Vec::new(),
                prepared: vec![kubeledger_pbft::PreparedCert {
                    pre_prepare: pp.clone(),
                    prepares: Vec::new(),
                }],
                last_committed: 3,
            }),
            signature: vec![signer as u8; 64],
        };
        let nv = SignedMessage {
            signer: 1,
            message: PbftMessage::NewView(kubeledger_pbft::NewView {
                view: 1,
                view_changes: vec![vc(0), vc(1), vc(2)],
                pre_prepares: vec![pp.clone()],
            }),
            signature: vec![1; 64],
        };
        let bytes = encode_message(&nv).expect("encodes");
        assert!(
            bytes.len() < 12_000,
            "payload sent once, got {} bytes",
            bytes.len()
        );
        assert_eq!(decode_message(&bytes).expect("decodes"), nv);
    }

    /// `sm` on the wire with its payloads stripped and `payloads` (as a
    /// sender chose them) in the table, then decoded.
    fn decode_stripped(sm: &SignedMessage, payloads: Vec<(Digest, Payload)>) -> SignedMessage {
        let mut table = HashMap::new();
        let wire = WireMessage {
            message: payload_table::strip(sm, &mut table),
            payloads,
        };
        let bytes = encode("consensus message", &wire).expect("encodes");
        decode_message(&bytes).expect("decodes")
    }

    #[test]
    fn a_missing_payload_leaves_a_placeholder_the_replica_refuses() {
        let payload = Payload {
            timestamp_ms: 9,
            proposer: 0,
            txs: vec![vec![1, 2, 3]].into(),
        };
        let back = decode_stripped(&pre_prepare(1, &payload), Vec::new());
        match back.message {
            PbftMessage::PrePrepare(p) => assert_ne!(p.payload.digest(), p.digest),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_payload_under_a_false_digest_fails_the_replicas_check() {
        let honest = Payload {
            timestamp_ms: 9,
            proposer: 0,
            txs: vec![vec![1, 2, 3]].into(),
        };
        let forged = Payload {
            timestamp_ms: 9,
            proposer: 0,
            txs: vec![vec![6, 6, 6]].into(),
        };
        let back = decode_stripped(
            &pre_prepare(1, &honest),
            vec![(honest.digest(), forged.clone())],
        );
        match back.message {
            PbftMessage::PrePrepare(p) => {
                assert_eq!(p.payload, forged);
                assert_ne!(
                    p.payload.digest(),
                    p.digest,
                    "the replica's check refuses it"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
