//! Binary encodings at the consensus boundary: PBFT messages and commit
//! certificates on the wire and on disk (postcard over the crate's serde
//! types; signatures cover the crate's own canonical encoding, so this
//! choice never affects them), and client transactions inside a payload.

use bytes::Bytes;
use kubeledger_pbft::{CommitCertificate, SignedMessage};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::SignedTransaction;
use crate::tx::envelope::{self, TxLimits, VerifiedTx};
use crate::tx::Rejection;

/// Largest consensus message accepted from a peer. A VIEW-CHANGE carries
/// the prepared payloads since the last stable checkpoint, so this is
/// generous; anything larger is dropped undecoded.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

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

pub fn encode_message(m: &SignedMessage) -> Result<Bytes, CodecError> {
    encode("consensus message", m).map(Bytes::from)
}

pub fn decode_message(bytes: &[u8]) -> Result<SignedMessage, CodecError> {
    decode("consensus message", bytes, MAX_MESSAGE_BYTES)
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
}
