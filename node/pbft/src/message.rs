//! Wire types, their canonical signing encoding, and signing/verification.
//!
//! Messages are plain serde structs so the node can pick any transport
//! encoding; signatures cover a hand-written canonical encoding (below) so
//! they never depend on that choice.

use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::validators::ValidatorSet;

/// Index of a replica in the [`ValidatorSet`].
pub type ReplicaIndex = u32;
/// View number; the primary of view `v` is `v mod n`.
pub type View = u64;
/// Sequence number == block height (1-based; 0 is genesis).
pub type Seq = u64;
/// SHA-256 output.
pub type Digest = [u8; 32];

const SIGN_DOMAIN: &[u8] = b"kubeledger-pbft/msg/v1";
const PAYLOAD_DOMAIN: &[u8] = b"kubeledger-pbft/payload/v2";

/// An opaque, ordered batch of client transactions plus the primary's clock
/// and index.
///
/// The proposer is part of what is agreed on: a payload can commit at one
/// height in different views at different replicas (one that saw a commit
/// quorum in the old view, others after the new primary re-issued it), so a
/// block header naming "the primary of the commit view" would differ
/// between replicas. Naming the replica that first proposed it does not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub timestamp_ms: u64,
    /// The replica that proposed it; set by [`crate::Replica`] when it
    /// proposes, and checked against the signer of a fresh PRE-PREPARE.
    pub proposer: ReplicaIndex,
    pub txs: Txs,
}

impl Payload {
    /// The PBFT "null request" used to fill gaps after a view change.
    pub fn null() -> Self {
        Payload {
            timestamp_ms: 0,
            proposer: 0,
            txs: Txs::default(),
        }
    }

    pub fn is_null(&self) -> bool {
        self.timestamp_ms == 0 && self.txs.is_empty()
    }

    /// SHA-256 over a count-prefixed, length-prefixed canonical encoding.
    pub fn digest(&self) -> Digest {
        let mut h = Sha256::new();
        h.update(PAYLOAD_DOMAIN);
        h.update(self.timestamp_ms.to_be_bytes());
        h.update(self.proposer.to_be_bytes());
        h.update((self.txs.len() as u64).to_be_bytes());
        for tx in self.txs.iter() {
            h.update((tx.len() as u64).to_be_bytes());
            h.update(tx);
        }
        h.finalize().into()
    }
}

/// The transactions of a payload, shared and immutable: the protocol keeps
/// a payload in several places at once (log slot, prepared certificate,
/// committed slot, view-change proofs, actions), and every copy is a
/// reference count rather than a deep copy of thousands of transactions.
/// Each transaction is encoded as one byte string, not byte by byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txs(Arc<Vec<Vec<u8>>>);

impl Txs {
    pub fn as_slice(&self) -> &[Vec<u8>] {
        self.0.as_slice()
    }

    /// Mutable access, copying the batch first if it is shared.
    pub fn make_mut(&mut self) -> &mut Vec<Vec<u8>> {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for Txs {
    type Target = [Vec<u8>];
    fn deref(&self) -> &[Vec<u8>] {
        self.0.as_slice()
    }
}

impl From<Vec<Vec<u8>>> for Txs {
    fn from(v: Vec<Vec<u8>>) -> Self {
        Txs(Arc::new(v))
    }
}

impl<'a> IntoIterator for &'a Txs {
    type Item = &'a Vec<u8>;
    type IntoIter = std::slice::Iter<'a, Vec<u8>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Txs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|t| serde_bytes::Bytes::new(t)))
    }
}

impl<'de> Deserialize<'de> for Txs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<serde_bytes::ByteBuf> = Deserialize::deserialize(d)?;
        Ok(Txs(Arc::new(
            v.into_iter().map(serde_bytes::ByteBuf::into_vec).collect(),
        )))
    }
}

/// The primary's proposal for `(view, seq)`. The signature covers the digest
/// only; receivers check that `payload` hashes to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    pub payload: Payload,
}

/// PREPARE or COMMIT vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: Seq,
    pub state_root: Digest,
    pub block_hash: Digest,
}

/// A pre-prepare plus a quorum-minus-one of matching prepares from backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    pub pre_prepare: SignedMessage,
    pub prepares: Vec<SignedMessage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub stable_seq: Seq,
    /// Quorum of signed CHECKPOINTs for `stable_seq`; empty for genesis.
    pub checkpoint_proof: Vec<SignedMessage>,
    pub prepared: Vec<PreparedCert>,
    /// Hint only (unauthenticated progress); lets peers send catch-up proofs.
    pub last_committed: Seq,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<SignedMessage>,
    /// The O set: re-issued pre-prepares and null requests, in seq order.
    pub pre_prepares: Vec<SignedMessage>,
}

/// Transferable proof that `digest` committed at `seq`: a quorum of signed
/// COMMITs of one view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    pub commits: Vec<SignedMessage>,
}

impl CommitCertificate {
    /// Checks signatures, distinct signers, matching votes and quorum size.
    pub fn verify(&self, vset: &ValidatorSet) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        for sm in &self.commits {
            let ok = matches!(&sm.message, Message::Commit(v)
                if v.view == self.view && v.seq == self.seq && v.digest == self.digest);
            if !ok || !seen.insert(sm.signer) || !sm.verify(vset) {
                return false;
            }
        }
        seen.len() >= vset.quorum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PrePrepare(PrePrepare),
    Prepare(Vote),
    Commit(Vote),
    Checkpoint(Checkpoint),
    ViewChange(ViewChange),
    NewView(NewView),
    /// Catch-up relay: a committed payload with its certificate.
    Committed {
        payload: Payload,
        certificate: CommitCertificate,
    },
    /// Catch-up relay: a stable checkpoint certificate.
    StableProof(Vec<SignedMessage>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignedMessage {
    pub signer: ReplicaIndex,
    pub message: Message,
    /// 64-byte ed25519 signature; kept as bytes so malformed input decodes.
    pub signature: Vec<u8>,
}

/// Deepest nesting of signed messages an honest replica sends: a NEW-VIEW
/// holds VIEW-CHANGEs, which hold CHECKPOINTs and prepared certificates (3),
/// plus one level of slack.
pub const MAX_NESTING: usize = 4;

std::thread_local! {
    /// Signed messages being decoded on this thread, outermost first. Decoding
    /// is synchronous, so a per-thread count sees exactly one message's nesting.
    static DECODE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Leaves one level of [`DECODE_DEPTH`] when dropped, on error paths too.
struct DepthGuard;

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DECODE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Every recursive path through the wire types runs through a signed message,
/// so bounding its nesting here bounds decoding (and everything that later
/// walks a message: signing bytes, payload tables, drop) for any transport
/// encoding: a peer's deeply nested frame is refused instead of overflowing
/// the stack.
impl<'de> Deserialize<'de> for SignedMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "SignedMessage")]
        struct Fields {
            signer: ReplicaIndex,
            message: Message,
            signature: Vec<u8>,
        }
        let depth = DECODE_DEPTH.with(|c| {
            let depth = c.get().saturating_add(1);
            c.set(depth);
            depth
        });
        let _guard = DepthGuard;
        if depth > MAX_NESTING {
            return Err(serde::de::Error::custom(format!(
                "signed messages nested deeper than {MAX_NESTING} levels"
            )));
        }
        let f = Fields::deserialize(d)?;
        Ok(SignedMessage {
            signer: f.signer,
            message: f.message,
            signature: f.signature,
        })
    }
}

impl SignedMessage {
    /// Whether a replica other than its signer may deliver it: a NEW-VIEW is
    /// self-certifying and may be relayed by anyone; every other message
    /// must come from the replica that signed it.
    pub fn may_be_relayed(&self) -> bool {
        matches!(self.message, Message::NewView(_))
    }

    pub fn sign(
        vset: &ValidatorSet,
        signer: ReplicaIndex,
        key: &SigningKey,
        message: Message,
    ) -> Self {
        let bytes = signing_bytes(vset, signer, &message);
        let signature = key.sign(&bytes).to_bytes().to_vec();
        SignedMessage {
            signer,
            message,
            signature,
        }
    }

    /// Verifies the outer signature only (nested ones are checked where used).
    pub fn verify(&self, vset: &ValidatorSet) -> bool {
        let Some(key) = vset.key(self.signer) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&self.signature) else {
            return false;
        };
        let bytes = signing_bytes(vset, self.signer, &self.message);
        let memo_key: Digest = Sha256::new()
            .chain_update(&bytes)
            .chain_update(&self.signature)
            .finalize()
            .into();
        if vset.was_verified(&memo_key) {
            return true;
        }
        let ok = key.verify(&bytes, &sig).is_ok();
        if ok {
            vset.remember_verified(memo_key);
        }
        ok
    }
}

fn signing_bytes(vset: &ValidatorSet, signer: ReplicaIndex, m: &Message) -> Vec<u8> {
    let mut w = Vec::with_capacity(128);
    w.extend_from_slice(SIGN_DOMAIN);
    w.extend_from_slice(vset.hash());
    w.extend_from_slice(&signer.to_be_bytes());
    encode_message(m, &mut w);
    w
}

fn put_u64(w: &mut Vec<u8>, x: u64) {
    w.extend_from_slice(&x.to_be_bytes());
}

fn encode_vote(tag: u8, v: &Vote, w: &mut Vec<u8>) {
    w.push(tag);
    put_u64(w, v.view);
    put_u64(w, v.seq);
    w.extend_from_slice(&v.digest);
}

fn encode_signed(sm: &SignedMessage, w: &mut Vec<u8>) {
    w.extend_from_slice(&sm.signer.to_be_bytes());
    encode_message(&sm.message, w);
    put_u64(w, sm.signature.len() as u64);
    w.extend_from_slice(&sm.signature);
}

fn encode_list(list: &[SignedMessage], w: &mut Vec<u8>) {
    put_u64(w, list.len() as u64);
    for sm in list {
        encode_signed(sm, w);
    }
}

/// Canonical, injective (tagged, length-prefixed) encoding used for signing.
fn encode_message(m: &Message, w: &mut Vec<u8>) {
    match m {
        Message::PrePrepare(pp) => encode_vote(
            1,
            &Vote {
                view: pp.view,
                seq: pp.seq,
                digest: pp.digest,
            },
            w,
        ),
        Message::Prepare(v) => encode_vote(2, v, w),
        Message::Commit(v) => encode_vote(3, v, w),
        Message::Checkpoint(c) => {
            w.push(4);
            put_u64(w, c.seq);
            w.extend_from_slice(&c.state_root);
            w.extend_from_slice(&c.block_hash);
        }
        Message::ViewChange(vc) => {
            w.push(5);
            put_u64(w, vc.new_view);
            put_u64(w, vc.stable_seq);
            put_u64(w, vc.last_committed);
            encode_list(&vc.checkpoint_proof, w);
            put_u64(w, vc.prepared.len() as u64);
            for c in &vc.prepared {
                encode_signed(&c.pre_prepare, w);
                encode_list(&c.prepares, w);
            }
        }
        Message::NewView(nv) => {
            w.push(6);
            put_u64(w, nv.view);
            encode_list(&nv.view_changes, w);
            encode_list(&nv.pre_prepares, w);
        }
        Message::Committed {
            payload,
            certificate,
        } => {
            w.push(7);
            w.extend_from_slice(&payload.digest());
            put_u64(w, certificate.view);
            put_u64(w, certificate.seq);
            w.extend_from_slice(&certificate.digest);
            encode_list(&certificate.commits, w);
        }
        Message::StableProof(list) => {
            w.push(8);
            encode_list(list, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_digest_is_length_prefixed() {
        let a = Payload {
            timestamp_ms: 1,
            proposer: 0,
            txs: vec![b"ab".to_vec(), b"c".to_vec()].into(),
        };
        let b = Payload {
            timestamp_ms: 1,
            proposer: 0,
            txs: vec![b"a".to_vec(), b"bc".to_vec()].into(),
        };
        assert_ne!(a.digest(), b.digest());
        assert!(Payload::null().is_null());
    }

    #[test]
    fn txs_are_shared_and_encode_as_byte_strings() {
        let txs: Txs = vec![vec![7u8; 3], Vec::new()].into();
        let copy = txs.clone();
        assert!(std::ptr::eq(txs.as_slice(), copy.as_slice()));
        let json = serde_json::to_string(&txs).expect("encode");
        assert_eq!(json, "[[7,7,7],[]]");
        let back: Txs = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, txs);
    }
}
