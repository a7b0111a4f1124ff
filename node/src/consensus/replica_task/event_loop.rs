//! The consensus task's loop: peer messages first, then executor and
//! validation results, timers and proposals; one durable write and one
//! send per round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeledger_pbft::{Input, ReplicaIndex, Seq, TimerId};
use tokio::sync::mpsc;

use super::supervisor::Exit;
use super::{ConsensusTask, EpochCarryover, PayloadVerdict};
use crate::consensus::codec;
use crate::consensus::executor::ExecutorReport;
use crate::node_state::consensus_board::Snapshot;
use crate::node_state::Loop;
use crate::tx::VerifiedTx;

/// Peer messages processed before the task looks at anything else.
const PEER_BURST: usize = 512;
/// How long a stopping primary keeps ordering what it admitted.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Test-only fault hook: while the file this variable names exists, the
/// consensus loop blocks (a replica that is alive but does nothing), so
/// whole-system tests can check that it is found stuck and healed.
pub const FREEZE_HOOK_ENV: &str = "KUBELEDGER_TEST_FREEZE_CONSENSUS";

/// Blocks the calling thread while `path` exists (the freeze hook).
fn freeze_while_present(path: &std::path::Path) {
    if !path.exists() {
        return;
    }
    tracing::warn!(path = %path.display(), "consensus loop frozen by the test fault hook");
    while path.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!("consensus loop released by the test fault hook");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl ConsensusTask {
    pub(super) async fn run(mut self) -> (EpochCarryover, Exit) {
        self.follow_epoch();
        let actions = self.replica.start();
        self.handle(actions);
        self.report_tip();
        self.publish();
        let mut stopping = self.state.stopping();
        let mut drain_until: Option<Instant> = None;
        let (proofs_tx, mut proofs_rx) = mpsc::channel::<Vec<kubeledger_pbft::SignedMessage>>(1);
        let exit = loop {
            if self.replica.epoch_complete() {
                self.flush();
                break Exit::EpochComplete(self.replica.persistent().stable.clone());
            }
            self.state.heartbeat(Loop::Consensus);
            if let Some(path) = &self.freeze_file {
                freeze_while_present(path);
            }
            if *stopping.borrow() {
                // Graceful stop: order what was admitted while the primary
                // can, within a bound (admission is closed by now).
                let deadline = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                let status = self.replica.status();
                let idle = self.state.mempool.stats().queued == 0 && self.my_proposals.is_empty();
                if idle || !status.is_primary || Instant::now() >= deadline {
                    break Exit::Stopping;
                }
            }
            // Agreement first: drain a burst of peer messages.
            for _ in 0..PEER_BURST {
                match self.carryover.inbound.pop() {
                    Some((from, msg)) => self.on_peer_message(from, msg),
                    None => break,
                }
            }
            while let Ok(d) = self.carryover.executor_reports.try_recv() {
                self.on_executor_report(d);
            }
            while let Ok(v) = self.carryover.verdicts_rx.try_recv() {
                self.on_payload_verdict(v);
            }
            self.fire_due_timers();
            self.update_pending();
            let cut_at = self.maybe_propose();
            let timer_at = self.timers.values().min().copied();
            let wake = match (cut_at, timer_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.flush();
            self.publish();
            self.catch_up
                .maybe_ask(&self.state, &self.vset, self.replica.status(), &proofs_tx);
            tokio::select! {
                biased;
                _ = self.carryover.inbound.ready() => {}
                d = self.carryover.executor_reports.recv() => {
                    if let Some(d) = d {
                        self.on_executor_report(d);
                    }
                }
                v = self.carryover.verdicts_rx.recv() => {
                    if let Some(v) = v {
                        self.on_payload_verdict(v);
                    }
                }
                _ = sleep_until(wake) => {}
                p = proofs_rx.recv() => {
                    if let Some(proof) = p {
                        tracing::info!("certificate from a peer for a checkpoint this replica missed");
                        self.step(Input::StableCertificate(proof));
                    }
                }
                _ = self.state.mempool.admitted.notified() => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        };
        self.flush();
        // What this replica proposed and did not see ordered goes back to
        // the pool (the next set, or the next start, orders it).
        let mut back: Vec<Arc<VerifiedTx>> = self.already_in_flight.drain(..).collect();
        for (_, txs) in self.my_proposals.drain() {
            back.extend(txs);
        }
        if !back.is_empty() {
            self.state.mempool.requeue(back);
        }
        tracing::info!("consensus task stopped");
        (self.carryover, exit)
    }

    /// Reports the ledger tip to a (re)started replica: a crash between
    /// writing a block and reporting it loses that block's CHECKPOINT, and
    /// the last checkpoint of an epoch has no later one to stand in for it.
    fn report_tip(&mut self) {
        let tip = self.state.ledger.tip();
        if tip.height <= self.replica.status().epoch_base {
            return;
        }
        match self.state.ledger.header(tip.height) {
            Ok(Some(h)) => {
                let state_root = crate::crypto::hash32(&h.state_root).unwrap_or_default();
                self.step(Input::Executed {
                    seq: tip.height,
                    state_root,
                    block_hash: tip.hash,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the tip's header"),
        }
    }

    /// Once the ledger schedules the next validator set, this epoch ends at
    /// the checkpoint before it. Called before the replica hears of any
    /// executed block, so it knows before its window could pass the end.
    fn follow_epoch(&mut self) {
        let base = self.replica.status().epoch_base;
        let config = self.state.ledger.config();
        if let Some(end) = crate::governance::validators::epoch_at(&config, base + 1).end {
            if self.replica.status().epoch_end != Some(end) {
                self.replica.set_epoch_end(end);
                self.state.consensus.set_epoch_end(end);
            }
        }
    }

    /// A peer's consensus message: the height it shows raises what this node
    /// knows of that peer (readiness compares against it) only once its
    /// signature checks; a forged PREPARE claiming a far height would
    /// otherwise keep this node not-ready until it restarts.
    fn on_peer_message(&mut self, from: ReplicaIndex, msg: kubeledger_pbft::SignedMessage) {
        if let Some(h) = crate::consensus::transport::message_height(&msg) {
            if self.replica.is_authentic(from, &msg) {
                if let Some(p) = self.state.consensus.epoch().peers.get(from as usize) {
                    p.last_seen_height
                        .fetch_max(h, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.step(Input::Message { from, msg });
    }

    pub(super) fn step(&mut self, input: Input) {
        let suspected = self.replica.stats().censorship_suspected;
        let actions = self.replica.step(input);
        let newly = self.replica.stats().censorship_suspected - suspected;
        if newly > 0 {
            self.state.metrics.censorship_suspected.inc_by(newly);
        }
        self.handle(actions);
    }

    /// The request / view-change timeout is a chain parameter: once the
    /// ledger reaches the height a change applies from, the replica uses it.
    fn follow_timeouts(&mut self) {
        let wanted = u64::from(self.state.params().view_change_timeout_ms.max(1));
        let cfg = self.replica.config();
        if cfg.request_timeout_ms != wanted || cfg.view_change_timeout_ms != wanted {
            tracing::info!(
                timeout_ms = wanted,
                "view-change timeout changed by configuration"
            );
            self.replica.set_timeouts(wanted, wanted);
        }
    }

    fn on_executor_report(&mut self, d: ExecutorReport) {
        match d {
            ExecutorReport::Executed {
                seq,
                state_root,
                block_hash,
                filled,
            } => {
                // The block's transactions left the pool; what was held back
                // behind it may be proposed again.
                if !self.already_in_flight.is_empty() {
                    self.state
                        .mempool
                        .requeue(std::mem::take(&mut self.already_in_flight));
                }
                self.written_through(seq);
                self.step(Input::Executed {
                    seq,
                    state_root,
                    block_hash,
                });
                self.watch_overlooked(filled);
            }
            ExecutorReport::Transferred {
                seq,
                state_root,
                block_hash,
            } => {
                self.written_through(seq);
                self.step(Input::StateTransferred {
                    seq,
                    state_root,
                    block_hash,
                });
            }
        }
    }

    /// The executor has written the blocks up to `seq` (executed or
    /// transferred): forgets what they carried (their transactions left
    /// the pool), follows the timeout and epoch end the ledger now has in
    /// force, and lets the primary cut again.
    fn written_through(&mut self, seq: Seq) {
        self.unexecuted.retain(|s, _| *s > seq);
        self.follow_timeouts();
        self.follow_epoch();
        self.window_full = false;
    }

    fn on_payload_verdict(&mut self, v: PayloadVerdict) {
        self.step(Input::PayloadValidated {
            seq: v.seq,
            view: v.view,
            digest: v.digest,
            valid: v.valid,
        });
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<TimerId> = self
            .timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.timers.remove(&id);
            tracing::debug!(?id, "timer fired");
            self.step(Input::TimerFired(id));
        }
    }

    /// Makes the replica state durable once for everything stepped since the
    /// last flush (one fsynced write however many messages arrived), then
    /// sends what those steps produced. Promises are durable before anyone
    /// hears them; a failed write sends nothing.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        if self.state.corruption().is_some() {
            // A replica that knows its own state is wrong does not vote.
            tracing::debug!(dropped = outbox.len(), "corrupt: not sending");
            return;
        }
        if let Err(e) = self.carryover.persister.save(self.replica.persistent()) {
            tracing::error!(error = %e, dropped = outbox.len(), "persisting replica state failed; not sending");
            self.state.set_storage_error(Some(e.to_string()));
            return;
        }
        for (to, msg) in outbox {
            let bytes = match codec::encode_message(&msg) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode message");
                    continue;
                }
            };
            match to {
                Some(to) => self.links.send(to, bytes),
                None => self.links.broadcast(bytes),
            }
        }
    }

    pub(super) fn publish(&mut self) {
        let s = self.replica.status();
        if self.last_view != Some(s.view) {
            self.last_view = Some(s.view);
            self.state.metrics.consensus_view.set(s.view as i64);
        }
        if self.last_request_timeout_ms != Some(s.request_timeout_ms) {
            self.last_request_timeout_ms = Some(s.request_timeout_ms);
            self.state
                .metrics
                .request_timeout
                .set(s.request_timeout_ms as f64 / 1000.0);
        }
        self.state.consensus.publish(Snapshot {
            view: s.view,
            primary: s.primary,
            low_watermark: s.low_watermark,
            high_watermark: s.high_watermark,
            stable_checkpoint: s.stable_checkpoint,
            last_committed: s.last_committed,
            view_changes: s.view_changes,
            view_change_in_progress: s.view_change_in_progress,
            state_transfer_target: s.state_transfer_target,
            request_timeout_ms: s.request_timeout_ms,
        });
    }
}
