//! A validator whose ledger stopped moving asks a peer for the latest
//! certificate it may have missed: a stable checkpoint of its own set, or
//! the certificate that ended its epoch while it was down or cut off (its
//! set's other members have moved on to the next set and no longer speak
//! the old epoch's protocol). The replica verifies what it gets like any
//! other certificate and fetches the state up to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeledger_pbft::{SignedMessage, Status, ValidatorSet};
use tokio::sync::mpsc;

use super::epoch;
use super::observer::Peers;
use crate::node_state::NodeState;

/// How long the ledger must stand still before a peer is asked.
const STALL: Duration = Duration::from_secs(3);

pub(crate) struct CatchUp {
    last_height: u64,
    since: Instant,
    asking: Arc<AtomicBool>,
    next_peer: usize,
}

impl CatchUp {
    pub(crate) fn new() -> Self {
        CatchUp {
            last_height: 0,
            since: Instant::now(),
            asking: Arc::new(AtomicBool::new(false)),
            next_peer: 0,
        }
    }

    /// Asks one peer (in turn) once the ledger stood still for [`STALL`];
    /// a certificate that verifies with `vset` and is ahead of the ledger
    /// is sent on `found`.
    pub(crate) fn maybe_ask(
        &mut self,
        state: &Arc<NodeState>,
        vset: &ValidatorSet,
        status: Status,
        found: &mpsc::Sender<Vec<SignedMessage>>,
    ) {
        let height = state.ledger.tip().height;
        if height != self.last_height {
            self.last_height = height;
            self.since = Instant::now();
            return;
        }
        if self.since.elapsed() < STALL
            || status.state_transfer_target.is_some()
            || self.asking.load(Ordering::Relaxed)
        {
            return;
        }
        self.since = Instant::now();
        let epoch = state.consensus.epoch();
        let others: Vec<String> = epoch
            .validators
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i as u32) != epoch.me)
            .map(|(_, v)| v.peer_address.clone())
            .collect();
        let Some(address) = others.get(self.next_peer % others.len().max(1)).cloned() else {
            return;
        };
        self.next_peer += 1;
        self.asking.store(true, Ordering::Relaxed);
        let asking = self.asking.clone();
        let vset = vset.clone();
        let found = found.clone();
        let from = status.epoch_base + 1;
        tokio::spawn(async move {
            let span = tracing::debug_span!("catch_up", peer = %address);
            let _e = span.enter();
            match Peers::default().checkpoint(&address, from).await {
                Ok(served) => {
                    let ours = served
                        .epoch_proofs
                        .first()
                        .and_then(|end| epoch::verify(&vset, end))
                        .or_else(|| {
                            (served.seq > height)
                                .then(|| epoch::verify(&vset, &served))
                                .flatten()
                        });
                    if let Some(cp) = ours.filter(|cp| cp.seq > status.stable_checkpoint) {
                        let _ = found.try_send(cp.proof);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "asking a peer for its checkpoint failed"),
            }
            asking.store(false, Ordering::Relaxed);
        });
    }
}
