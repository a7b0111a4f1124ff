//! The transaction envelope: a canonically encoded [`TxBody`] and the
//! sender's ed25519 signature over exactly those bytes.
//!
//! Decoding checks everything that needs no ledger state: canonical form,
//! chain id, sizes, payload shape, and the presence of a key and signature.
//! Signatures themselves are checked in batches ([`super::signature_batch`]).

use std::fmt;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

use std::sync::Arc;

use super::reject::Rejection;
use crate::crypto::{sha256, Hash32};
use crate::governance;
use crate::proto::{
    tx_body::Payload, ConfigChange, ContractCall, Delete, Put, RejectReason, SignedTransaction,
    TxBody,
};

/// Transaction id: SHA-256 of the signed body bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub Hash32);

impl TxId {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        crate::crypto::hash32(bytes).map(TxId)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({})", &self.to_hex()[..16])
    }
}

/// Size limits applied at admission, from the chain parameters.
#[derive(Debug, Clone, Copy)]
pub struct TxLimits {
    pub max_tx_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

/// What a transaction does to world state.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// A consortium configuration change; it writes only reserved keys
    /// (see [`crate::governance`]).
    Config(Arc<ConfigChange>),
    /// A contract call; it writes only the contract's namespace and its
    /// outcome, both reserved.
    Call(Arc<ContractCall>),
}

/// Most fuel one contract call may ask for; 0 asks for [`DEFAULT_CALL_FUEL`].
pub const MAX_CALL_FUEL: u64 = 100_000_000;
pub const DEFAULT_CALL_FUEL: u64 = 10_000_000;

static CONFIG_KEY: Bytes = Bytes::from_static(governance::keys::CONFIG_KEY);

impl Write {
    /// The key written; for a configuration change, the configuration key.
    pub fn key(&self) -> &Bytes {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
            Write::Config(_) | Write::Call(_) => &CONFIG_KEY,
        }
    }
}

/// A transaction that passed the stateless checks; its signature is
/// verified once it has also passed [`super::signature_batch::verify`].
#[derive(Debug, Clone)]
pub struct VerifiedTx {
    pub id: TxId,
    pub signed: SignedTransaction,
    pub sender: VerifyingKey,
    pub signature: Signature,
    pub nonce: u64,
    pub timestamp_ms: u64,
    pub write: Write,
    /// When this node decoded it (local, for latency metrics only).
    pub received: std::time::Instant,
}

impl VerifiedTx {
    /// Encoded size of the signed transaction, as counted against block limits.
    pub fn encoded_len(&self) -> usize {
        self.signed.encoded_len()
    }
}

/// Decodes and checks a signed transaction without touching ledger state.
/// The signature is parsed but not yet verified.
pub fn decode(
    signed: SignedTransaction,
    chain_id: &str,
    limits: &TxLimits,
) -> Result<VerifiedTx, Rejection> {
    let size = signed.encoded_len();
    if size > limits.max_tx_bytes {
        return Err(Rejection::new(
            RejectReason::TxTooLarge,
            format!(
                "transaction is {size} bytes, the limit is {} bytes",
                limits.max_tx_bytes
            ),
        ));
    }
    let id = TxId(sha256(&signed.body));
    let body = TxBody::decode(signed.body.clone()).map_err(|e| {
        Rejection::new(
            RejectReason::Malformed,
            format!("transaction {id}: body is not a valid TxBody: {e}"),
        )
    })?;
    if body.encode_to_vec() != signed.body.as_ref() {
        return Err(Rejection::new(
            RejectReason::NonCanonical,
            format!(
                "transaction {id}: body is not canonically encoded (unknown fields, \
                 repeated or out-of-order fields); re-encode and re-sign it"
            ),
        ));
    }
    if body.chain_id != chain_id {
        return Err(Rejection::new(
            RejectReason::WrongChain,
            format!(
                "transaction {id} is for chain {:?}, this node serves chain {chain_id:?}",
                body.chain_id
            ),
        ));
    }
    let sender_bytes: [u8; 32] = body.sender.as_slice().try_into().map_err(|_| {
        Rejection::new(
            RejectReason::MissingSignature,
            format!(
                "transaction {id}: sender must be a 32-byte ed25519 public key, got {} bytes",
                body.sender.len()
            ),
        )
    })?;
    let sender = super::sender_keys::decode(&sender_bytes).ok_or_else(|| {
        Rejection::new(
            RejectReason::BadSignature,
            format!("transaction {id}: sender is not a valid ed25519 public key"),
        )
    })?;
    let signature = Signature::from_slice(&signed.signature).map_err(|_| {
        Rejection::new(
            RejectReason::MissingSignature,
            format!(
                "transaction {id}: signature must be 64 bytes, got {}",
                signed.signature.len()
            ),
        )
    })?;
    let write = check_payload(id, body.payload, limits)?;
    Ok(VerifiedTx {
        id,
        signed,
        sender,
        signature,
        nonce: body.nonce,
        timestamp_ms: body.timestamp_ms,
        write,
        received: std::time::Instant::now(),
    })
}

fn check_payload(
    id: TxId,
    payload: Option<Payload>,
    limits: &TxLimits,
) -> Result<Write, Rejection> {
    let (key, value) = match payload {
        None => {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("transaction {id} has no payload (expected put or delete)"),
            ))
        }
        Some(Payload::Put(Put { key, value })) => (key, Some(value)),
        Some(Payload::Delete(Delete { key })) => (key, None),
        Some(Payload::Config(change)) => {
            if change.change.is_none() {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    format!("transaction {id}: configuration change is empty"),
                ));
            }
            return Ok(Write::Config(Arc::new(change)));
        }
        Some(Payload::Call(call)) => {
            if !governance::valid_name(&call.contract) {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    format!(
                        "transaction {id}: contract name {:?} must be 1-63 characters of [a-z0-9.-]",
                        call.contract
                    ),
                ));
            }
            if call.function.is_empty() || call.function.len() > 128 {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    format!("transaction {id}: function must be 1-128 bytes"),
                ));
            }
            if call.fuel > MAX_CALL_FUEL {
                return Err(Rejection::new(
                    RejectReason::FieldTooLarge,
                    format!(
                        "transaction {id}: fuel {} is above the limit of {MAX_CALL_FUEL}",
                        call.fuel
                    ),
                ));
            }
            return Ok(Write::Call(Arc::new(call)));
        }
    };
    if key.is_empty() {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!("transaction {id}: key must not be empty"),
        ));
    }
    if governance::keys::is_reserved(&key) {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!(
                "transaction {id}: keys starting with \\0kubeledger/ are reserved for the \
                 consortium configuration"
            ),
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Rejection::new(
            RejectReason::FieldTooLarge,
            format!(
                "transaction {id}: key is {} bytes, the limit is {}",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    let key = Bytes::from(key);
    Ok(match value {
        Some(value) if value.len() > limits.max_value_bytes => {
            return Err(Rejection::new(
                RejectReason::FieldTooLarge,
                format!(
                    "transaction {id}: value is {} bytes, the limit is {}",
                    value.len(),
                    limits.max_value_bytes
                ),
            ))
        }
        Some(value) => Write::Put {
            key,
            value: Bytes::from(value),
        },
        None => Write::Delete { key },
    })
}

/// Builds and signs a transaction.
pub fn sign(
    key: &SigningKey,
    chain_id: &str,
    nonce: u64,
    timestamp_ms: u64,
    payload: Payload,
) -> SignedTransaction {
    let body = TxBody {
        chain_id: chain_id.to_owned(),
        sender: key.verifying_key().to_bytes().to_vec(),
        nonce,
        timestamp_ms,
        payload: Some(payload),
    }
    .encode_to_vec();
    let signature = key.sign(&body).to_bytes().to_vec();
    SignedTransaction {
        body: Bytes::from(body),
        signature,
    }
}

/// Convenience constructors for the payloads.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Payload {
    Payload::Put(Put {
        key: key.into(),
        value: value.into(),
    })
}

pub fn delete(key: impl Into<Vec<u8>>) -> Payload {
    Payload::Delete(Delete { key: key.into() })
}

pub fn config(change: crate::proto::config_change::Change) -> Payload {
    Payload::Config(ConfigChange {
        change: Some(change),
    })
}

/// A contract call payload.
pub fn call(call: ContractCall) -> Payload {
    Payload::Call(call)
}

/// The id a signed transaction will have.
pub fn tx_id(signed: &SignedTransaction) -> TxId {
    TxId(sha256(&signed.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TxLimits = TxLimits {
        max_tx_bytes: 4096,
        max_key_bytes: 64,
        max_value_bytes: 1024,
    };

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn encoding_is_deterministic_and_id_is_hash_of_body() {
        let a = sign(&key(), "c", 1, 10, put("k", "v"));
        let b = sign(&key(), "c", 1, 10, put("k", "v"));
        assert_eq!(a, b);
        assert_eq!(tx_id(&a).0, sha256(&a.body));
        let c = sign(&key(), "c", 2, 10, put("k", "v"));
        assert_ne!(tx_id(&a), tx_id(&c));
    }

    #[test]
    fn decodes_a_good_put_and_delete() {
        let tx = decode(sign(&key(), "c", 1, 10, put("k", "v")), "c", &LIMITS).expect("valid");
        assert_eq!(
            tx.write,
            Write::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v")
            }
        );
        let tx = decode(sign(&key(), "c", 2, 10, delete("k")), "c", &LIMITS).expect("valid");
        assert_eq!(
            tx.write,
            Write::Delete {
                key: Bytes::from_static(b"k")
            }
        );
    }

    fn reason(r: Result<VerifiedTx, Rejection>) -> RejectReason {
        r.expect_err("must be rejected").reason
    }

    #[test]
    fn each_bad_input_gets_its_own_reason() {
        let good = sign(&key(), "c", 1, 10, put("k", "v"));
        let garbage = SignedTransaction {
            body: Bytes::from_static(&[0xff, 0xff, 0xff]),
            signature: vec![0; 64],
        };
        assert_eq!(
            reason(decode(garbage, "c", &LIMITS)),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(decode(good.clone(), "other", &LIMITS)),
            RejectReason::WrongChain
        );
        let mut unsigned = good.clone();
        unsigned.signature.clear();
        assert_eq!(
            reason(decode(unsigned, "c", &LIMITS)),
            RejectReason::MissingSignature
        );
        let empty_key = sign(&key(), "c", 1, 10, put("", "v"));
        assert_eq!(
            reason(decode(empty_key, "c", &LIMITS)),
            RejectReason::InvalidPayload
        );
        let big_value = sign(&key(), "c", 1, 10, put("k", vec![0u8; 2000]));
        assert_eq!(
            reason(decode(big_value, "c", &LIMITS)),
            RejectReason::FieldTooLarge
        );
        let big_key = sign(&key(), "c", 1, 10, put(vec![b'k'; 65], "v"));
        assert_eq!(
            reason(decode(big_key, "c", &LIMITS)),
            RejectReason::FieldTooLarge
        );
        let huge = sign(&key(), "c", 1, 10, put("k", vec![0u8; 5000]));
        assert_eq!(reason(decode(huge, "c", &LIMITS)), RejectReason::TxTooLarge);
        let no_payload = TxBody {
            chain_id: "c".into(),
            sender: key().verifying_key().to_bytes().to_vec(),
            nonce: 1,
            timestamp_ms: 1,
            payload: None,
        };
        let tx = SignedTransaction {
            body: no_payload.encode_to_vec().into(),
            signature: vec![1; 64],
        };
        assert_eq!(
            reason(decode(tx, "c", &LIMITS)),
            RejectReason::InvalidPayload
        );
        let reserved = sign(
            &key(),
            "c",
            1,
            10,
            put(b"\0kubeledger/config".to_vec(), "v"),
        );
        let r = decode(reserved, "c", &LIMITS).expect_err("reserved key");
        assert_eq!(r.reason, RejectReason::InvalidPayload);
        assert!(r.message.contains("reserved"), "{}", r.message);
        let empty_change = sign(&key(), "c", 1, 10, Payload::Config(ConfigChange::default()));
        assert_eq!(
            reason(decode(empty_change, "c", &LIMITS)),
            RejectReason::InvalidPayload
        );
    }

    #[test]
    fn non_canonical_encoding_is_refused() {
        let good = sign(&key(), "c", 1, 10, put("k", "v"));
        // Append an unknown field (number 99, varint 1): still decodes.
        let mut body = good.body.to_vec();
        body.extend_from_slice(&[0x98, 0x06, 0x01]);
        let tx = SignedTransaction {
            body: body.into(),
            signature: good.signature.clone(),
        };
        assert_eq!(reason(decode(tx, "c", &LIMITS)), RejectReason::NonCanonical);
    }
}
