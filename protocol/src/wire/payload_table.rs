//! Payloads stored once, by digest. A PBFT message or the replica state can
//! hold one payload many times: a NEW-VIEW carries a quorum of VIEW-CHANGEs,
//! each with the prepared certificates of every slot since the last stable
//! checkpoint, plus the re-issued pre-prepares. Before such a message is
//! written (to disk or to a peer), every payload is replaced by an empty
//! placeholder and kept once in a table keyed by digest; reading fills the
//! places back in. Signatures cover digests, never payload bytes, so
//! stripping and filling never touch what is signed.

use std::collections::HashMap;

use kubeledger_pbft::{
    Digest, Message, NewView, Payload, PrePrepare, PreparedCert, SignedMessage, ViewChange,
};

/// Digest of the null request: its (empty) payload is never stripped.
pub fn null_digest() -> Digest {
    Payload::null().digest()
}

/// Records `p` under `d` unless it is the null request.
pub fn keep<'a>(d: &Digest, p: &'a Payload, out: &mut HashMap<Digest, &'a Payload>) {
    if !p.is_null() || *d != null_digest() {
        out.entry(*d).or_insert(p);
    }
}

/// `sm` with every payload replaced by a placeholder; the payloads go to `out`.
pub fn strip<'a>(sm: &'a SignedMessage, out: &mut HashMap<Digest, &'a Payload>) -> SignedMessage {
    let message = match &sm.message {
        Message::PrePrepare(pp) => {
            keep(&pp.digest, &pp.payload, out);
            Message::PrePrepare(PrePrepare {
                view: pp.view,
                seq: pp.seq,
                digest: pp.digest,
                payload: Payload::null(),
            })
        }
        Message::ViewChange(vc) => Message::ViewChange(ViewChange {
            new_view: vc.new_view,
            stable_seq: vc.stable_seq,
            checkpoint_proof: vc.checkpoint_proof.clone(),
            prepared: vc
                .prepared
                .iter()
                .map(|c| PreparedCert {
                    pre_prepare: strip(&c.pre_prepare, out),
                    prepares: c.prepares.clone(),
                })
                .collect(),
            last_committed: vc.last_committed,
        }),
        Message::NewView(nv) => Message::NewView(NewView {
            view: nv.view,
            view_changes: nv.view_changes.iter().map(|m| strip(m, out)).collect(),
            pre_prepares: nv.pre_prepares.iter().map(|m| strip(m, out)).collect(),
        }),
        Message::Committed {
            payload,
            certificate,
        } => {
            keep(&certificate.digest, payload, out);
            Message::Committed {
                payload: Payload::null(),
                certificate: certificate.clone(),
            }
        }
        other => other.clone(),
    };
    SignedMessage {
        signer: sm.signer,
        message,
        signature: sm.signature.clone(),
    }
}

/// Visits every (digest, payload) place of a message, stripped or not.
pub fn for_each_place(sm: &mut SignedMessage, f: &mut impl FnMut(&Digest, &mut Payload)) {
    match &mut sm.message {
        Message::PrePrepare(pp) => visit(&pp.digest, &mut pp.payload, f),
        Message::ViewChange(vc) => {
            for c in &mut vc.prepared {
                for_each_place(&mut c.pre_prepare, f);
            }
        }
        Message::NewView(nv) => {
            for m in nv.view_changes.iter_mut().chain(nv.pre_prepares.iter_mut()) {
                for_each_place(m, f);
            }
        }
        Message::Committed {
            payload,
            certificate,
        } => visit(&certificate.digest, payload, f),
        _ => {}
    }
}

/// Calls `f` for a place unless it holds the null request.
pub fn visit(d: &Digest, p: &mut Payload, f: &mut impl FnMut(&Digest, &mut Payload)) {
    if *d != null_digest() {
        f(d, p);
    }
}

/// Fills the placeholders of `sm` from `table` (shared, not copied). A
/// place whose payload is missing stays empty, and the replica refuses the
/// message because its payload does not hash to the signed digest.
pub fn fill(sm: &mut SignedMessage, table: &HashMap<Digest, Payload>) {
    for_each_place(sm, &mut |digest, payload| {
        if payload.is_null() {
            if let Some(p) = table.get(digest) {
                *payload = p.clone();
            }
        }
    });
}
