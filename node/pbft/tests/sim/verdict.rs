//! The application's verdict on a proposed payload, as the simulator and
//! the hand-driven scenarios model it: a payload is valid unless one of
//! its transactions carries [`INVALID_MARKER`] or is committed already.

use kubeledger_pbft::{Digest, Input, Payload, Seq, View};

/// A transaction starting with these bytes is one the application refuses.
pub const INVALID_MARKER: &[u8] = b"invalid";

/// The `PayloadValidated` input answering a replica's `ValidatePayload`:
/// valid unless a transaction carries [`INVALID_MARKER`] or `committed`
/// says it is committed already.
pub fn payload_verdict(
    seq: Seq,
    view: View,
    digest: Digest,
    payload: &Payload,
    committed: impl Fn(&[u8]) -> bool,
) -> Input {
    let valid = payload
        .txs
        .iter()
        .all(|tx| !tx.starts_with(INVALID_MARKER) && !committed(tx));
    Input::PayloadValidated {
        seq,
        view,
        digest,
        valid,
    }
}
