//! Validator-set epochs in the simulator, modelled on what the node does:
//!
//! * A config transaction (`cfg:<base>:add:<node>:<nonce>` or `remove`)
//!   executed at height d in the epoch that started at `base` schedules
//!   the next set: the epoch ends at c, the first multiple of K with
//!   c >= d + L. The node tells its replica (`set_epoch_end`) before it
//!   reports d executed. One change per epoch: a config tx for another
//!   base, while a change is pending, or that is not a valid change is
//!   ignored. Every node derives the same [`Chain`] from its ledger.
//! * When a replica's epoch is complete (checkpoint c stable), the node
//!   keeps the old set's certificate of c as the epoch proof and rebuilds
//!   its replica for the next set (`Replica::new_epoch`), or stops voting
//!   and follows as an observer if it is not in that set.
//! * A node behind an epoch end (joining, crashed, partitioned, observing)
//!   asks a peer for the proof of its epoch's end: a replica gets it as
//!   `Input::StableCertificate` (and fetches state if needed), an observer
//!   verifies it itself and copies the blocks up to c.
//! * Restart rebuilds the replica of the epoch that the ledger and the
//!   stored epoch proofs say the node is in.

use std::collections::{BTreeMap, BTreeSet};

use kubeledger_pbft::{
    verify_checkpoint_proof, CommitCertificate, Config, Digest, Error, Input, PersistentState,
    Replica, ReplicaIndex, SignedMessage, StableCheckpoint, ValidatorSet,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{hash_parts, Ev, Sim, SimConfig};

/// The ledger refuses to shrink a set below this (f >= 1 throughout).
pub const MIN_VALIDATORS: usize = 4;

/// (K, L) per run: an epoch end lies L to L + K - 1 blocks after the
/// config tx; L = K makes the window wait for every checkpoint.
const WINDOWS: [(u64, u64); 4] = [(4, 8), (4, 4), (2, 4), (2, 2)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Add(usize),
    Remove(usize),
}

/// The validator changes a run makes, in order, and how it stresses them.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    /// Genesis validators are nodes `0..genesis`; the others join later.
    pub genesis: usize,
    pub changes: Vec<Change>,
    /// The governance client sends a redundant copy of a change (a second
    /// config tx while one is pending, or one for a finished epoch).
    pub duplicate: f64,
    /// The governance client sends a change the ledger must refuse.
    pub bogus: f64,
    /// A node crashes in the middle of switching epochs (before healing).
    pub crash_at_switch: f64,
    /// Requests submitted once the last change took effect.
    pub post_requests: usize,
}

impl SimConfig {
    /// 4 -> 5 -> 6 -> 7 validators and back to 4 (three random nodes
    /// removed), one change per epoch, under the random fault mix of a
    /// 7-node run. Requests arrive before, during and after the changes.
    pub fn growth_and_shrink(seed: u64) -> Self {
        let mut cfg = SimConfig::random(7, seed);
        // The sets shrink to 4 validators (f = 1): one byzantine node.
        cfg.faults.byzantine.truncate(1);
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x00e9_0c45);
        let mut changes: Vec<Change> = (4..7).map(Change::Add).collect();
        let mut all: Vec<usize> = (0..7).collect();
        for _ in 0..3 {
            let i = r.gen_range(0..all.len());
            changes.push(Change::Remove(all.remove(i)));
        }
        cfg.requests = r.gen_range(4..=8);
        cfg.exec_delay_ms = if r.gen_bool(0.5) {
            r.gen_range(1..=20)
        } else {
            0
        };
        let (k, l) = WINDOWS[r.gen_range(0..WINDOWS.len())];
        cfg.pbft.checkpoint_interval = k;
        cfg.pbft.window = l;
        cfg.test = "epochs";
        cfg.epochs = Some(EpochPlan {
            genesis: 4,
            changes,
            duplicate: if r.gen_bool(0.5) { 0.3 } else { 0.0 },
            bogus: if r.gen_bool(0.3) { 0.2 } else { 0.0 },
            crash_at_switch: if r.gen_bool(0.3) { 0.15 } else { 0.0 },
            post_requests: r.gen_range(1..=3),
        });
        cfg
    }
}

pub fn config_tx(base: u64, change: Change, seed: u64, nonce: u64) -> Vec<u8> {
    let (op, node) = match change {
        Change::Add(x) => ("add", x),
        Change::Remove(x) => ("remove", x),
    };
    format!("cfg:{base}:{op}:{node}:{seed}-{nonce}").into_bytes()
}

pub fn parse_config_tx(tx: &[u8]) -> Option<(u64, Change)> {
    let s = std::str::from_utf8(tx).ok()?;
    let mut parts = s.split(':');
    if parts.next()? != "cfg" {
        return None;
    }
    let base = parts.next()?.parse().ok()?;
    let op = parts.next()?;
    let node = parts.next()?.parse().ok()?;
    match op {
        "add" => Some((base, Change::Add(node))),
        "remove" => Some((base, Change::Remove(node))),
        _ => None,
    }
}

/// One validator set's epoch as a node's ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// The checkpoint it starts after (0: genesis).
    pub base: u64,
    pub base_root: Digest,
    pub base_hash: Digest,
    /// Replica index -> node.
    pub members: Vec<usize>,
    /// The last height it orders, once the next set is scheduled.
    pub end: Option<u64>,
    pub next: Option<Vec<usize>>,
}

impl Epoch {
    pub fn index_of(&self, node: usize) -> Option<ReplicaIndex> {
        self.members
            .iter()
            .position(|m| *m == node)
            .map(|i| i as ReplicaIndex)
    }

    pub fn contains_seq(&self, seq: u64) -> bool {
        seq > self.base && self.end.is_none_or(|e| seq <= e)
    }

    pub fn base_checkpoint(&self) -> StableCheckpoint {
        StableCheckpoint {
            seq: self.base,
            state_root: self.base_root,
            block_hash: self.base_hash,
            proof: Vec::new(),
        }
    }
}

/// The epochs a ledger prefix implies; a pure function of the blocks.
#[derive(Clone, Debug)]
pub struct Chain {
    pub epochs: Vec<Epoch>,
}

impl Chain {
    pub fn genesis(members: Vec<usize>) -> Self {
        Chain {
            epochs: vec![Epoch {
                base: 0,
                base_root: [0; 32],
                base_hash: [0; 32],
                members,
                end: None,
                next: None,
            }],
        }
    }

    /// The epoch the next block belongs to.
    pub fn current(&self) -> &Epoch {
        self.epochs.last().expect("a chain has its genesis epoch")
    }

    /// Validator changes decided so far (taken effect or pending).
    pub fn changes(&self) -> usize {
        self.epochs.len() - 1 + usize::from(self.current().next.is_some())
    }

    pub fn epoch_of(&self, seq: u64) -> Option<usize> {
        self.epochs.iter().position(|e| e.contains_seq(seq))
    }

    /// A transaction executed at height `seq`. Returns the epoch end if it
    /// scheduled a validator change.
    pub fn execute_tx(
        &mut self,
        seq: u64,
        tx: &[u8],
        universe: usize,
        cfg: &Config,
    ) -> Option<u64> {
        let (base, change) = parse_config_tx(tx)?;
        let ep = self.epochs.last_mut()?;
        if ep.base != base || ep.end.is_some() {
            return None;
        }
        let mut next = ep.members.clone();
        match change {
            Change::Add(x) if x < universe && !next.contains(&x) => next.push(x),
            Change::Remove(x) if next.len() > MIN_VALIDATORS && next.contains(&x) => {
                next.retain(|m| *m != x)
            }
            _ => return None,
        }
        let (k, l) = (cfg.checkpoint_interval, cfg.window);
        let end = (seq + l).div_ceil(k) * k;
        // Replica indices are reshuffled per epoch (by a hash of the end),
        // so routing must go by node identity.
        next.sort_by_key(|m| hash_parts(&[&end.to_be_bytes(), &(*m as u64).to_be_bytes()]));
        ep.end = Some(end);
        ep.next = Some(next);
        Some(end)
    }

    /// Block `seq` was executed: at the epoch's end the next one begins.
    pub fn block_executed(&mut self, seq: u64, state_root: Digest, block_hash: Digest) {
        let ep = self.current();
        if ep.end != Some(seq) {
            return;
        }
        let members = ep.next.clone().unwrap_or_default();
        self.epochs.push(Epoch {
            base: seq,
            base_root: state_root,
            base_hash: block_hash,
            members,
            end: None,
            next: None,
        });
    }
}

/// Validator sets shared by all nodes (so the verified-signature memo is
/// shared too), keyed by epoch base and members.
#[derive(Default)]
pub struct VsetCache {
    pub pks: Vec<[u8; 32]>,
    map: BTreeMap<(u64, Vec<usize>), ValidatorSet>,
}

impl VsetCache {
    pub fn new(pks: Vec<[u8; 32]>) -> Self {
        VsetCache {
            pks,
            map: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, ep: &Epoch) -> &ValidatorSet {
        let pks = &self.pks;
        self.map
            .entry((ep.base, ep.members.clone()))
            .or_insert_with(|| {
                let keys: Vec<[u8; 32]> = ep.members.iter().map(|m| pks[*m]).collect();
                ValidatorSet::for_epoch(&keys, ep.base).expect("valid keys")
            })
    }
}

/// Epoch counters reported per run.
#[derive(Clone, Debug, Default)]
pub struct EpochStats {
    /// Replicas rebuilt for a next epoch (or stopped) after one completed.
    pub switches: u64,
    /// Nodes that entered a set they were not in before.
    pub joins: u64,
    /// Epoch proofs handed to nodes that asked a peer.
    pub proofs_served: u64,
    /// Forged or foreign epoch proofs that were refused.
    pub proofs_rejected: u64,
    /// Messages of one epoch delivered to a replica of another and dropped
    /// by it: failing the signature check (the set hash differs) ...
    pub cross_epoch_bad_signature: u64,
    /// ... or earlier, because the signer index does not fit the set.
    pub cross_epoch_other: u64,
    /// Restarts in the middle of an epoch switch.
    pub crashes_at_switch: u64,
    /// Restarts whose saved replica state was of an earlier epoch.
    pub stale_state_restarts: u64,
    /// Config transactions the ledger ignored.
    pub config_ignored: u64,
    /// Switches made with a certificate asked of a peer (stragglers).
    pub switches_by_certificate: u64,
    /// Epochs complete before the node had executed through their end.
    pub switches_after_execution: u64,
    /// View changes made by replicas of finished epochs.
    pub view_changes: u64,
}

impl EpochStats {
    pub fn add(&mut self, o: &EpochStats) {
        self.switches += o.switches;
        self.joins += o.joins;
        self.proofs_served += o.proofs_served;
        self.proofs_rejected += o.proofs_rejected;
        self.cross_epoch_bad_signature += o.cross_epoch_bad_signature;
        self.cross_epoch_other += o.cross_epoch_other;
        self.crashes_at_switch += o.crashes_at_switch;
        self.stale_state_restarts += o.stale_state_restarts;
        self.config_ignored += o.config_ignored;
        self.switches_by_certificate += o.switches_by_certificate;
        self.switches_after_execution += o.switches_after_execution;
        self.view_changes += o.view_changes;
    }
}

fn drop_counters(r: &Replica) -> (u64, u64) {
    let s = r.stats();
    (s.bad_signature, s.unknown_sender + s.wrong_sender)
}

impl Sim {
    pub(super) fn plan_epochs(&mut self) {
        if self.cfg.epochs.is_none() {
            return;
        }
        let t = self.rng.gen_range(0..100);
        self.at(t, Ev::Governance);
        for node in 0..self.cfg.n {
            let t = self.rng.gen_range(50..150);
            self.at(t, Ev::EpochSync { node });
        }
    }

    /// The epoch a node's replica (or observer) is in.
    pub(super) fn epoch(&self, node: usize) -> &Epoch {
        let n = &self.nodes[node];
        &n.chain.epochs[n.epoch]
    }

    /// Hand a peer message to node `to`, addressed by the sender's index in
    /// the receiver's current set. The transport only knows members of its
    /// set; a message of another epoch reaches the replica, which must
    /// drop it (every signature binds the set's hash, which includes the
    /// epoch base).
    pub(super) fn deliver(&mut self, to: usize, from: usize, msg: SignedMessage, base: u64) {
        if self.nodes[to].replica.is_none() {
            return;
        }
        let ep = self.epoch(to);
        let Some(from_idx) = ep.index_of(from) else {
            return;
        };
        if ep.base == base {
            self.step(
                to,
                Input::Message {
                    from: from_idx,
                    msg,
                },
            );
            return;
        }
        // Whatever the replica checks first, the signature itself is bound
        // to the sender's set and fails against the receiver's.
        let receiver = self.epoch(to).clone();
        if msg.verify(self.vsets.get(&receiver)) {
            self.violations.push(format!(
                "node {to}: a message of epoch {base} verifies against the set of epoch {}",
                receiver.base
            ));
        }
        let Some(r) = self.nodes[to].replica.as_mut() else {
            return;
        };
        let before = drop_counters(r);
        let actions = r.step(Input::Message {
            from: from_idx,
            msg,
        });
        let after = drop_counters(r);
        if !actions.is_empty() || after.0 + after.1 != before.0 + before.1 + 1 {
            self.violations.push(format!(
                "node {to}: message of epoch {base} accepted by a replica of epoch {} ({} actions)",
                self.epoch(to).base,
                actions.len()
            ));
        }
        self.epoch_stats.cross_epoch_bad_signature += after.0 - before.0;
        self.epoch_stats.cross_epoch_other += after.1 - before.1;
    }

    /// Execution-side bookkeeping for one block appended to a node's ledger
    /// (committed or state-transferred): exactly-once skipping, config
    /// transactions, the start of the next epoch.
    pub(super) fn execute_block(&mut self, node: usize, block: super::Block, count_dups: bool) {
        let universe = self.cfg.n;
        let n = &mut self.nodes[node];
        let seq = n.ledger.len() as u64 + 1;
        for tx in &block.payload.txs {
            n.mempool.remove(tx);
            if let Some(ticket) = n.tickets.remove(tx) {
                n.overlooked.remove(&ticket);
            }
            if !n.committed.insert(tx.clone()) {
                if count_dups {
                    self.duplicates_skipped += 1;
                }
                continue;
            }
            if parse_config_tx(tx).is_none() {
                continue;
            }
            let Some(end) = n.chain.execute_tx(seq, tx, universe, &self.cfg.pbft) else {
                self.epoch_stats.config_ignored += 1;
                continue;
            };
            // Before the block is reported executed.
            if n.epoch + 1 == n.chain.epochs.len() {
                if let Some(r) = n.replica.as_mut() {
                    r.set_epoch_end(end);
                }
            }
            if self.trace {
                eprintln!(
                    "t={} node {node} schedules epoch end {end} at {seq}",
                    self.now
                );
            }
        }
        n.chain
            .block_executed(seq, block.state_root, block.block_hash);
        n.ledger.push(block);
    }

    /// Checks on a block a replica is about to commit: it lies inside the
    /// replica's epoch and its certificate verifies against that epoch's
    /// set (so nothing above an epoch end is committed by the old set).
    pub(super) fn check_commit_epoch(&mut self, node: usize, seq: u64, cert: &CommitCertificate) {
        let n = &self.nodes[node];
        let k = n.epoch;
        let ep = &n.chain.epochs[k];
        if !ep.contains_seq(seq) {
            self.violations.push(format!(
                "node {node}: block {seq} committed by the set of epoch {} (end {:?})",
                ep.base, ep.end
            ));
            return;
        }
        let vset = self.vsets.get(ep);
        if !cert.verify(vset) {
            self.violations
                .push(format!("node {node}: bad certificate at {seq}"));
            return;
        }
        // The first block of an epoch: its certificate is not one of the
        // previous set (checked once per epoch).
        if k > 0 && seq == ep.base + 1 && self.first_blocks_checked.insert(ep.base) {
            let prev = self.nodes[node].chain.epochs[k - 1].clone();
            if cert.verify(self.vsets.get(&prev)) {
                self.violations.push(format!(
                    "node {node}: certificate of block {seq} verifies against the previous set"
                ));
            }
        }
    }

    /// After every replica step: an epoch whose last checkpoint is stable
    /// hands over to the next set.
    pub(super) fn check_epoch_switch(&mut self, node: usize) {
        let Some(r) = self.nodes[node].replica.as_ref() else {
            return;
        };
        if !r.epoch_complete() {
            return;
        }
        let stable = r.persistent().stable.clone();
        // The node switches once it has also executed through the end
        // (it needs the block that scheduled the change and block c).
        if (self.nodes[node].ledger.len() as u64) < stable.seq {
            self.nodes[node].switch_waits_execution = true;
            return;
        }
        if std::mem::take(&mut self.nodes[node].switch_waits_execution) {
            self.epoch_stats.switches_after_execution += 1;
        }
        if self.nodes[node].given_certificate.as_ref() == Some(&stable.proof) {
            self.epoch_stats.switches_by_certificate += 1;
        }
        let Some(r) = self.nodes[node].replica.as_ref() else {
            return;
        };
        self.epoch_stats.view_changes += r.status().view_changes;
        let old_state = r.persistent_state();
        self.finish_epoch(node, stable.seq, stable.proof, Some(old_state));
    }

    /// Node `node` holds the old set's certificate of its epoch's end `c`:
    /// store it as the epoch proof and move on to the next epoch.
    fn finish_epoch(
        &mut self,
        node: usize,
        c: u64,
        proof: Vec<SignedMessage>,
        old_state: Option<PersistentState>,
    ) {
        let n = &self.nodes[node];
        let k = n.epoch;
        let ep = n.chain.epochs[k].clone();
        let height = n.ledger.len() as u64;
        let top_hash = n.ledger.last().map(|b| b.block_hash);
        if ep.end != Some(c) || height != c || k + 1 >= n.chain.epochs.len() {
            self.violations.push(format!(
                "node {node}: epoch {} completed at {c} but the ledger says end {:?}, height {height}",
                ep.base, ep.end
            ));
            return;
        }
        match verify_checkpoint_proof(self.vsets.get(&ep), &proof) {
            Some(cp) if cp.seq == c && Some(cp.block_hash) == top_hash => {}
            _ => {
                self.violations
                    .push(format!("node {node}: invalid epoch proof for {c}"));
                return;
            }
        }
        if self.trace {
            eprintln!(
                "t={} node {node} epoch {} complete at {c}",
                self.now, ep.base
            );
        }
        self.epoch_stats.switches += 1;
        let n = &self.nodes[node];
        if ep.index_of(node).is_none() && n.chain.epochs[k + 1].index_of(node).is_some() {
            self.epoch_stats.joins += 1;
        }
        let crash =
            self.honest(node)
                && !self.healed
                && old_state.is_some()
                && self.cfg.epochs.as_ref().is_some_and(|p| {
                    p.crash_at_switch > 0.0 && self.rng.gen_bool(p.crash_at_switch)
                });
        let n = &mut self.nodes[node];
        n.proofs.insert(c, proof);
        n.epoch = k + 1;
        n.given_certificate = None;
        n.replica = None;
        n.timer_gen.clear();
        n.last_pending = None;
        // The next set's primary has left nothing out yet: what the old
        // set's blocks overlooked is no evidence against it.
        n.overlooked.clear();
        n.last_overlooked = None;
        if crash {
            // Crashed after storing the proof, before the new replica ever
            // persisted anything: the saved state is the old epoch's.
            n.down = true;
            n.saved = old_state.map(|st| serde_json::to_string(&st).expect("serialize"));
            self.epoch_stats.crashes_at_switch += 1;
            let t = self.now + self.rng.gen_range(20..200);
            self.at(t, Ev::Restart { node });
            return;
        }
        n.saved = None;
        self.rebuild_replica(node);
    }

    /// Build the replica for the epoch the node is in (from its saved state
    /// if that belongs to this epoch), or none if it is not a member.
    pub(super) fn rebuild_replica(&mut self, node: usize) {
        let ep = self.epoch(node).clone();
        let Some(me) = ep.index_of(node) else {
            self.nodes[node].replica = None;
            self.nodes[node].saved = None;
            return;
        };
        let saved: Option<PersistentState> = self.nodes[node]
            .saved
            .take()
            .map(|s| serde_json::from_str(&s).expect("deserialize"));
        let executed = self.nodes[node].ledger.len() as u64;
        let vset = self.vsets.get(&ep).clone();
        let key = self.keys[node].clone();
        let cfg = self.cfg.pbft.clone();
        let mut r = match saved {
            Some(st) if Replica::state_belongs_to_epoch(&st, ep.base) => {
                Replica::restore_in_epoch(cfg, vset, me, key, st, executed, ep.base_checkpoint())
                    .expect("restore")
            }
            saved => {
                if let Some(st) = saved {
                    self.epoch_stats.stale_state_restarts += 1;
                    let refused = Replica::restore_in_epoch(
                        cfg.clone(),
                        vset.clone(),
                        me,
                        key.clone(),
                        st,
                        executed,
                        ep.base_checkpoint(),
                    );
                    if !matches!(refused, Err(Error::StaleEpoch { .. })) {
                        self.violations.push(format!(
                            "node {node}: state of an earlier epoch not refused by epoch {}",
                            ep.base
                        ));
                    }
                }
                Replica::new_epoch(cfg, vset, me, key, ep.base_checkpoint(), executed)
                    .expect("new epoch")
            }
        };
        if let Some(end) = ep.end {
            r.set_epoch_end(end);
        }
        let actions = r.start();
        self.nodes[node].replica = Some(r);
        self.apply(node, actions);
        self.check_epoch_switch(node);
        self.after_event(node);
    }

    /// The node's "ask a peer for the proof of my epoch's end" round.
    pub(super) fn epoch_sync(&mut self, node: usize) {
        let t = self.now + self.rng.gen_range(60..140);
        self.at(t, Ev::EpochSync { node });
        if self.nodes[node].down {
            return;
        }
        let base = self.epoch(node).base;
        let k = self.nodes[node].epoch;
        let peers: Vec<usize> = (0..self.cfg.n)
            .filter(|p| {
                *p != node
                    && !self.nodes[*p].down
                    && !self.blocked.contains(&(node, *p))
                    && !self.blocked.contains(&(*p, node))
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.rng.gen_range(0..peers.len())];
        let p = &self.nodes[peer];
        let honest_answer = p
            .chain
            .epochs
            .get(k)
            .filter(|e| e.base == base && p.epoch > k)
            .and_then(|e| e.end)
            .and_then(|c| p.proofs.get(&c))
            .cloned();
        let answer = if self.honest(peer) {
            honest_answer
        } else {
            self.forged_proof(peer, honest_answer)
        };
        let Some(proof) = answer else {
            return;
        };
        self.epoch_stats.proofs_served += 1;
        let t = self.now + self.rng.gen_range(2..20);
        self.at(t, Ev::EpochProof { node, base, proof });
    }

    /// What the byzantine node answers: a certificate cut below quorum, one
    /// of another epoch, or its replica's (valid) certificate of some
    /// checkpoint that is not the epoch end.
    fn forged_proof(
        &mut self,
        peer: usize,
        real: Option<Vec<SignedMessage>>,
    ) -> Option<Vec<SignedMessage>> {
        let roll: f64 = self.rng.gen();
        let p = &self.nodes[peer];
        if roll < 0.4 {
            real.map(|mut proof| {
                let keep = proof.len().saturating_sub(2).max(1);
                proof.truncate(keep);
                proof
            })
        } else if roll < 0.7 {
            p.proofs.values().next().cloned()
        } else {
            p.replica
                .as_ref()
                .map(|r| r.persistent().stable.proof.clone())
                .filter(|proof| !proof.is_empty())
        }
    }

    pub(super) fn on_epoch_proof(&mut self, node: usize, base: u64, proof: Vec<SignedMessage>) {
        if self.nodes[node].down || self.epoch(node).base != base {
            return;
        }
        if let Some(r) = self.nodes[node].replica.as_ref() {
            let before = r.stats().invalid_proofs;
            if self.trace {
                eprintln!("t={} node {node} gets a stable certificate", self.now);
            }
            self.nodes[node].given_certificate = Some(proof.clone());
            self.step(node, Input::StableCertificate(proof));
            if let Some(r) = self.nodes[node].replica.as_ref() {
                if self.epoch(node).base == base {
                    self.epoch_stats.proofs_rejected += r.stats().invalid_proofs - before;
                }
            }
            return;
        }
        self.observer_adopt(node, proof);
    }

    /// An observer (joining, or no longer a member) checks a certificate of
    /// its epoch against that epoch's set, copies the blocks up to it and,
    /// if it is the epoch end, moves on to the next epoch.
    fn observer_adopt(&mut self, node: usize, proof: Vec<SignedMessage>) {
        let ep = self.epoch(node).clone();
        let Some(cp) = verify_checkpoint_proof(self.vsets.get(&ep), &proof) else {
            self.epoch_stats.proofs_rejected += 1;
            return;
        };
        if cp.seq <= ep.base {
            return;
        }
        let have = self.nodes[node].ledger.len() as u64;
        if cp.seq > have {
            let src = (0..self.cfg.n)
                .filter(|i| *i != node && self.honest(*i))
                .find(|i| self.nodes[*i].ledger.len() as u64 >= cp.seq);
            let Some(src) = src else {
                return;
            };
            self.state_transfers += 1;
            let blocks = self.nodes[src].ledger[have as usize..cp.seq as usize].to_vec();
            for b in blocks {
                self.execute_block(node, b, false);
            }
        }
        let n = &self.nodes[node];
        if n.ledger.get(cp.seq as usize - 1).map(|b| b.block_hash) != Some(cp.block_hash) {
            self.violations.push(format!(
                "node {node}: certified checkpoint {} does not match the copied chain",
                cp.seq
            ));
            return;
        }
        if n.chain.epochs[n.epoch].end == Some(cp.seq) && n.ledger.len() as u64 == cp.seq {
            self.finish_epoch(node, cp.seq, proof, None);
        }
    }

    /// Governance client: submits the plan's changes one at a time against
    /// the chain as the most advanced honest node reports it; resubmits one
    /// the ledger ignored; sometimes sends redundant or bogus ones.
    pub(super) fn governance(&mut self) {
        let Some(plan) = self.cfg.epochs.clone() else {
            return;
        };
        let Some(reference) = (0..self.cfg.n)
            .filter(|i| self.honest(*i) && !self.nodes[*i].down)
            .max_by_key(|i| (self.nodes[*i].ledger.len(), std::cmp::Reverse(*i)))
        else {
            let t = self.now + 50;
            self.at(t, Ev::Governance);
            return;
        };
        if self.post_submitted {
            self.probe_idle_laggards();
            let t = self.now + self.rng.gen_range(100..200);
            self.at(t, Ev::Governance);
            return;
        }
        let chain = &self.nodes[reference].chain;
        let done = chain.changes();
        if done >= plan.changes.len() {
            if chain.epochs.len() > plan.changes.len() {
                self.post_submitted = true;
                for k in 0..plan.post_requests {
                    let t = self.now + self.rng.gen_range(0..200);
                    let tx = format!("post-{}-{k}", self.cfg.seed).into_bytes();
                    self.at(t, Ev::Submit { tx });
                }
            }
        } else if chain.current().end.is_none() {
            let base = chain.current().base;
            let waiting = self
                .last_config_tx
                .as_ref()
                .is_some_and(|(b, tx)| *b == base && !self.nodes[reference].committed.contains(tx));
            if !waiting {
                let change = plan.changes[done];
                let copies = if self.rng.gen_bool(plan.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    self.config_nonce += 1;
                    let tx = config_tx(base, change, self.cfg.seed, self.config_nonce);
                    self.last_config_tx = Some((base, tx.clone()));
                    self.at(self.now, Ev::Submit { tx });
                }
                if plan.bogus > 0.0 && self.rng.gen_bool(plan.bogus) {
                    // Adds a member / removes a non-member: refused.
                    let members = &self.nodes[reference].chain.current().members;
                    let bogus = match change {
                        Change::Add(_) => Change::Add(members[0]),
                        Change::Remove(x) => Change::Remove(x + self.cfg.n),
                    };
                    self.config_nonce += 1;
                    let tx = config_tx(base, bogus, self.cfg.seed, self.config_nonce);
                    self.at(self.now, Ev::Submit { tx });
                }
            }
        }
        let t = self.now + self.rng.gen_range(20..80);
        self.at(t, Ev::Governance);
    }

    /// The honest node with the longest ledger: its chain is the reference
    /// every other honest chain must agree with.
    fn reference_chain(&self) -> Option<&Chain> {
        (0..self.cfg.n)
            .filter(|i| self.honest(*i))
            .max_by_key(|i| (self.nodes[*i].ledger.len(), std::cmp::Reverse(*i)))
            .map(|i| &self.nodes[i].chain)
    }

    /// Safety across epochs: every honest node derived the same epochs,
    /// stored proofs only for epoch ends, and every block it committed was
    /// certified by the set of the epoch that height belongs to.
    pub(super) fn check_epochs(&self) -> Result<(), String> {
        let Some(global) = self.reference_chain() else {
            return Ok(());
        };
        for i in (0..self.cfg.n).filter(|i| self.honest(*i)) {
            let n = &self.nodes[i];
            for (a, b) in n.chain.epochs.iter().zip(&global.epochs) {
                let same = a.base == b.base
                    && a.members == b.members
                    && a.base_hash == b.base_hash
                    && (a.end.is_none() || a.end == b.end);
                if !same {
                    return Err(self.fail(&format!(
                        "node {i} derived epoch {a:?}, the reference chain has {b:?}"
                    )));
                }
            }
            for c in n.proofs.keys() {
                if !global.epochs.iter().any(|e| e.end == Some(*c)) {
                    return Err(self.fail(&format!("node {i} stored an epoch proof for {c}")));
                }
            }
            for (h, b) in n.ledger.iter().enumerate() {
                let seq = h as u64 + 1;
                let Some(cert_base) = b.cert_base else {
                    continue;
                };
                let expected = global.epoch_of(seq).map(|k| global.epochs[k].base);
                if expected != Some(cert_base) {
                    return Err(self.fail(&format!(
                        "node {i}: block {seq} certified by the set of epoch {cert_base}, belongs to {expected:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Once the plan took effect: the final epoch's index and its honest
    /// members that are not dead.
    fn final_members(&self) -> Option<(usize, Vec<usize>)> {
        let plan = self.cfg.epochs.as_ref()?;
        let global = self.reference_chain()?;
        if global.epochs.len() != plan.changes.len() + 1 {
            return None;
        }
        let last = global.epochs.len() - 1;
        let members = global.epochs[last]
            .members
            .iter()
            .copied()
            .filter(|m| self.honest(*m) && self.cfg.faults.dead != Some(*m))
            .collect();
        Some((last, members))
    }

    /// PBFT brings a replica that missed a block up to date only when
    /// there is work (a later checkpoint, a view change): on an idle chain
    /// it may stay a block behind. While the final set's heights differ
    /// with every request committed, a client sends one more request.
    fn probe_idle_laggards(&mut self) {
        let Some((_, finals)) = self.final_members() else {
            return;
        };
        let all_committed = finals
            .iter()
            .all(|m| self.submitted.is_subset(&self.nodes[*m].committed));
        let heights: BTreeSet<usize> = finals.iter().map(|m| self.nodes[*m].ledger.len()).collect();
        if all_committed && heights.len() > 1 {
            self.config_nonce += 1;
            let tx = format!("probe-{}-{}", self.cfg.seed, self.config_nonce).into_bytes();
            self.at(self.now, Ev::Submit { tx });
        }
    }

    /// Liveness of an epoch run: the plan took effect, and every honest,
    /// live member of the final set runs it, committed every request and
    /// reached the same height.
    pub(super) fn epochs_done(&self) -> bool {
        let Some((last, finals)) = self.final_members() else {
            return false;
        };
        let Some(height) = finals.first().map(|m| self.nodes[*m].ledger.len()) else {
            return false;
        };
        self.post_submitted
            && finals.iter().all(|m| {
                let n = &self.nodes[*m];
                !n.down
                    && n.epoch == last
                    && n.replica.is_some()
                    && n.ledger.len() == height
                    && self.submitted.is_subset(&n.committed)
            })
    }

    pub(super) fn epoch_report(&self) -> String {
        let mut s = String::new();
        if let Some(global) = self.reference_chain() {
            for e in &global.epochs {
                s.push_str(&format!(
                    "  epoch base {} members {:?} end {:?}\n",
                    e.base, e.members, e.end
                ));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!(
                "  node {i}: epoch #{} down={} proofs {:?}\n",
                n.epoch,
                n.down,
                n.proofs.keys().collect::<Vec<_>>()
            ));
        }
        s
    }
}
