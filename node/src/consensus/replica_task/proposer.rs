//! The proposer: when this replica, as primary, cuts a block and what goes
//! in it; and, on every replica, the censorship watch of requests a block
//! with room left out.

use std::collections::HashSet;
use std::time::Instant;

use kubeledger_pbft::{Digest, Input, Payload};

use super::ConsensusTask;
use crate::clock::now_ms;
use crate::consensus::codec;
use crate::consensus::cutter::{CutterLimits, Decision};
use crate::consensus::executor::BlockFill;
use crate::tx::TxId;

/// Own proposals outstanding (ordered, not yet committed) at most.
const MAX_OUTSTANDING_PROPOSALS: usize = 4;
/// What a backup sends the primary at once when a block with room left
/// out its oldest transaction, at most; and how long before it sends the
/// same transaction again.
const FORWARD_MAX_TXS: usize = 10_000;
const FORWARD_MAX_BYTES: usize = 4 << 20;
const FORWARD_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl ConsensusTask {
    /// The next validator set is scheduled and this epoch has blocks left
    /// to order: the chain must reach the epoch's end even without client
    /// traffic, so the primary cuts blocks (empty if need be) and the
    /// backups watch it as they would with requests pending.
    fn epoch_end_ahead(&self) -> bool {
        let s = self.replica.status();
        s.epoch_end.is_some_and(|end| s.last_committed < end)
    }

    /// Tells the replica which client request, if any, a committed block
    /// with room for it left out: the censorship watch of
    /// `kubeledger_pbft::Input::Overlooked`. The request watched stays until
    /// it leaves the pool (committed); then the next oldest is watched if
    /// the block just committed had room for it. Full blocks accuse no one.
    pub(super) fn watch_overlooked(&mut self, filled: BlockFill) {
        let limits = CutterLimits::from_params(&self.state.params());
        let next = self.state.mempool.oldest_queued().filter(|(_, tx)| {
            filled.had_room_for(tx.encoded_len(), limits.max_txs, limits.max_bytes)
        });
        if next.is_some() {
            self.send_left_out_to_primary(limits);
        }
        if let Some((_, id)) = &self.overlooked {
            if self.state.mempool.is_pending(id) {
                return;
            }
        }
        let report = next.as_ref().map(|(ticket, tx)| (*ticket, tx.id));
        if report == self.overlooked {
            return;
        }
        if let Some((ticket, tx)) = &next {
            tracing::debug!(
                ticket,
                tx = %tx.id,
                height = self.replica.status().last_committed,
                "a block with room left out the oldest pending transaction"
            );
        }
        self.overlooked = report;
        self.step(Input::Overlooked(report.map(|(ticket, _)| ticket)));
    }

    /// A block with room left out this backup's oldest transaction: the
    /// primary may never have got it (its gossip dropped, or refused while
    /// the primary's pool was full), nor what arrived here after it. The
    /// oldest queued go to the primary again, a few blocks' worth, each at
    /// most once per [`FORWARD_AGAIN_AFTER`]; one at a time would order one
    /// transaction a block.
    fn send_left_out_to_primary(&mut self, limits: CutterLimits) {
        let status = self.replica.status();
        if status.is_primary {
            return;
        }
        let batch = self.state.mempool.take_for_forwarding(
            limits.max_txs.saturating_mul(4).min(FORWARD_MAX_TXS),
            limits.max_bytes.saturating_mul(4).min(FORWARD_MAX_BYTES),
            Instant::now(),
            FORWARD_AGAIN_AFTER,
        );
        if batch.is_empty() {
            return;
        }
        tracing::debug!(
            txs = batch.len(),
            primary = status.primary,
            "sending the primary the oldest pending transactions again"
        );
        self.state.metrics.txs_forwarded.inc_by(batch.len() as u64);
        self.links.forward_txs(
            status.primary,
            batch.iter().map(|t| t.signed.clone()).collect(),
        );
    }

    pub(super) fn update_pending(&mut self) {
        let pending = self.state.mempool_len() > 0 || self.epoch_end_ahead();
        if self.last_pending != Some(pending) {
            self.last_pending = Some(pending);
            self.step(Input::RequestsPending(pending));
        }
    }

    /// Proposes a block when this replica is primary and the cutter says
    /// so; returns when to look again.
    pub(super) fn maybe_propose(&mut self) -> Option<Instant> {
        let status = self.replica.status();
        if self.state.corruption().is_some()
            || !status.is_primary
            || status.view_change_in_progress
            || status.state_transfer_target.is_some()
            || self.window_full
            || self.my_proposals.len() >= MAX_OUTSTANDING_PROPOSALS
        {
            return None;
        }
        let now = Instant::now();
        // Block interval and size follow configuration changes live.
        self.cutter
            .set_limits(CutterLimits::from_params(&self.state.params()));
        let stats = self.state.mempool.stats();
        // An empty block at the block interval while the epoch must end.
        let queued = if stats.queued == 0 && self.epoch_end_ahead() {
            1
        } else {
            stats.queued
        };
        let decision = if *self.state.stopping().borrow() && stats.queued > 0 {
            Decision::Cut
        } else {
            self.cutter.decide(now, queued, stats.queued_bytes)
        };
        match decision {
            Decision::Idle => None,
            Decision::WaitUntil(t) => Some(t),
            Decision::Cut => {
                self.cutter.cut(now);
                self.propose();
                Some(now)
            }
        }
    }

    fn in_flight_ids(&mut self) -> HashSet<TxId> {
        let chain_id = self.state.ledger.chain_id().to_owned();
        let limits = self.state.tx_limits();
        let mut ids = HashSet::new();
        // In the replica's window, plus ordered but not yet executed: those
        // stay in this pool until the executor writes their block, so they
        // must not be proposed again. Own proposals are skipped: their
        // transactions were taken from the pool and cannot be taken twice.
        let payloads: Vec<(Digest, &Payload)> = self
            .replica
            .in_flight_payloads()
            .map(|(_, d, p)| (d, p))
            .chain(
                self.unexecuted
                    .values()
                    .filter(|u| !u.own)
                    .map(|u| (u.digest, &u.payload)),
            )
            .filter(|(d, _)| !self.my_proposals.contains_key(d))
            .collect();
        let live: HashSet<Digest> = payloads.iter().map(|(d, _)| *d).collect();
        for (digest, payload) in payloads {
            let cache = &self.carryover.cache;
            let set = self.foreign_ids.entry(digest).or_insert_with(|| {
                // Validation decoded them already, usually.
                match cache.ids(&digest) {
                    Some(ids) => ids.into_iter().collect(),
                    None => payload
                        .txs
                        .iter()
                        .filter_map(|b| codec::tx_from_payload(b, &chain_id, &limits).ok())
                        .map(|t| t.id)
                        .collect(),
                }
            });
            ids.extend(set.iter().copied());
        }
        self.foreign_ids.retain(|d, _| live.contains(d));
        ids
    }

    fn propose(&mut self) {
        let limits = self.cutter.limits();
        let taken = self.state.mempool.take(limits.max_txs, limits.max_bytes);
        let empty_ok = self.epoch_end_ahead();
        if taken.is_empty() && !empty_ok {
            return;
        }
        let in_flight = self.in_flight_ids();
        let (txs, already_in_flight): (Vec<_>, Vec<_>) =
            taken.into_iter().partition(|t| !in_flight.contains(&t.id));
        self.already_in_flight.extend(already_in_flight);
        if txs.is_empty() && !empty_ok {
            return;
        }
        let ts = now_ms()
            .max(self.last_ts)
            .max(self.state.ledger.tip().timestamp_ms);
        self.last_ts = ts;
        let payload = Payload {
            timestamp_ms: ts,
            // The replica names itself too; the digest must be the same.
            proposer: self.replica.id(),
            txs: txs
                .iter()
                .map(|t| codec::tx_to_payload(t))
                .collect::<Vec<_>>()
                .into(),
        };
        let digest = payload.digest();
        let span = tracing::debug_span!("propose", txs = txs.len());
        let _e = span.enter();
        self.carryover.cache.insert(digest, txs.clone());
        self.my_proposals.insert(digest, txs);
        self.step(Input::Propose { payload });
    }
}
