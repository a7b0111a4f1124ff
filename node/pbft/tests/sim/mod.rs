//! Deterministic simulator: real replicas, a simulated network, clock,
//! ledger and clients, all driven by one seeded PRNG. Same seed => same run.
//!
//! The node glue here models what a node does around its replica: the
//! mempool (with arrival tickets, reporting the oldest request a committed
//! block with room left out as `Input::Overlooked`), the block cutter,
//! execution, timers (each node's clock at its own rate under clock skew).
//! `byzantine.rs` holds the byzantine behaviours, `transfer.rs` the state
//! transfer (checked against the certificate, byzantine sources lie) and
//! `epochs.rs` validator-set changes.

#![allow(dead_code)]

pub mod byzantine;
pub mod epochs;
pub mod transfer;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{
    Action, CommitCertificate, Config, Digest, Input, Message, Payload, Replica, ReplicaIndex,
    SignedMessage, TimerId, ViewChange,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use byzantine::{choose_censored, Attack, ByzStats, Byzantine, VcLie};
use epochs::{Chain, EpochPlan, EpochStats, VsetCache};
use transfer::Fetch;
pub use verdict::INVALID_MARKER;

#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
    pub partitions: usize,
    pub crashes: usize,
    /// At most f byzantine replicas, each with its own attack.
    pub byzantine: Vec<Byzantine>,
    /// A replica that crashes at t=0 and never comes back.
    pub dead: Option<usize>,
    /// Per-node clocks (None: all agree).
    pub clocks: Option<Vec<Clock>>,
    /// Requests (by index) that a censoring primary leaves out.
    pub censored: Vec<usize>,
}

/// A node's clock: its timers run `rate` times as long as asked (a slow
/// clock, > 1, waits longer), and its proposals' timestamps are offset.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub rate: f64,
    pub offset_ms: u64,
}

impl Faults {
    pub fn none() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            max_delay_ms: 5,
            partitions: 0,
            crashes: 0,
            byzantine: Vec::new(),
            dead: None,
            clocks: None,
            censored: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub n: usize,
    pub seed: u64,
    pub requests: usize,
    pub faults: Faults,
    /// All faults heal at this simulated time (ms).
    pub heal_at: u64,
    /// After healing, every request must commit within this many ms.
    pub liveness_bound_ms: u64,
    pub pbft: Config,
    pub max_batch: usize,
    /// Each block takes up to this long to execute, one after the other,
    /// so execution lags ordering under load (0: executed at commit).
    /// Committed-but-unexecuted blocks are lost in a crash.
    pub exec_delay_ms: u64,
    /// Validator changes to make during the run (None: a fixed set of n).
    pub epochs: Option<EpochPlan>,
    /// The test function that runs such configurations (the failure
    /// message's reproduction filter; empty: the random mix of size n).
    pub test: &'static str,
}

impl SimConfig {
    /// A random fault mix derived from the seed.
    pub fn random(n: usize, seed: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_cafe);
        let f = (n - 1) / 3;
        let mut byzantine: Vec<Byzantine> = Vec::new();
        if f >= 1 && r.gen_bool(0.45) {
            let count = if f >= 2 && r.gen_bool(0.4) { 2 } else { 1 };
            while byzantine.len() < count {
                let node = r.gen_range(0..n);
                let attack = Attack::ALL[r.gen_range(0..Attack::ALL.len())];
                if byzantine.iter().all(|b| b.node != node) {
                    byzantine.push(Byzantine { node, attack });
                }
            }
        }
        let dead = (f >= 1 && byzantine.is_empty() && r.gen_bool(0.2)).then(|| r.gen_range(0..n));
        // Keep each seed short: crypto dominates and grows with n^2.
        let max_requests = if n >= 7 { 7 } else { 10 };
        let requests = r.gen_range(3..=max_requests);
        let censored_count = r.gen_range(1..=2);
        let censored = choose_censored(&mut r, requests, censored_count);
        let clocks = r.gen_bool(0.3).then(|| {
            (0..n)
                .map(|_| Clock {
                    rate: r.gen_range(0.5..2.0),
                    offset_ms: r.gen_range(0..10_000),
                })
                .collect()
        });
        SimConfig {
            n,
            seed,
            requests,
            faults: Faults {
                loss: if r.gen_bool(0.6) {
                    r.gen_range(0.0..0.15)
                } else {
                    0.0
                },
                duplicate: if r.gen_bool(0.3) { 0.05 } else { 0.0 },
                max_delay_ms: r.gen_range(2..=40),
                partitions: r.gen_range(0..=2),
                crashes: r.gen_range(0..=2),
                byzantine,
                dead,
                clocks,
                censored,
            },
            heal_at: r.gen_range(300..=1500),
            liveness_bound_ms: 60_000,
            pbft: Config {
                checkpoint_interval: 4,
                window: 8,
                request_timeout_ms: 150,
                view_change_timeout_ms: 150,
                max_backoff_exponent: 4,
            },
            max_batch: r.gen_range(1..=4),
            exec_delay_ms: 0,
            epochs: None,
            test: "",
        }
    }

    pub fn quiet(n: usize, seed: u64, requests: usize) -> Self {
        let mut c = Self::random(n, seed);
        c.requests = requests;
        c.faults = Faults::none();
        c.heal_at = 0;
        c
    }

    /// A censoring primary in view 0 (node 0) on a network without other
    /// faults: only the censorship timer can get its censored requests
    /// committed.
    pub fn censoring_primary(n: usize, seed: u64) -> Self {
        let mut c = Self::random(n, seed);
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x00ce_450e);
        let censored_count = r.gen_range(1..=2);
        c.faults = Faults {
            byzantine: vec![Byzantine {
                node: 0,
                attack: Attack::Censor,
            }],
            censored: choose_censored(&mut r, c.requests, censored_count),
            ..Faults::none()
        };
        // Requests arrive before the (fault-free) run "heals", so the
        // liveness check sees them all.
        c.heal_at = r.gen_range(200..=400);
        c.test = "censoring_primary";
        c
    }

    /// The fault classes of this configuration, for the per-run summary.
    pub fn classes(&self) -> Vec<&'static str> {
        let f = &self.faults;
        let mut v: Vec<&'static str> = f.byzantine.iter().map(|b| b.attack.name()).collect();
        v.sort_unstable();
        v.dedup();
        if f.byzantine.len() >= 2 {
            v.push("two-byzantine");
        }
        if f.dead.is_some() {
            v.push("dead");
        }
        if f.byzantine.is_empty() && f.dead.is_none() {
            v.push("honest");
        }
        if f.clocks.is_some() {
            v.push("clock-skew");
        }
        v
    }
}

/// The client transaction of request `k` of a run.
pub fn request_tx(seed: u64, k: usize) -> Vec<u8> {
    format!("tx-{seed}-{k}").into_bytes()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub digest: Digest,
    pub payload: Payload,
    pub state_root: Digest,
    pub block_hash: Digest,
    /// Base of the epoch whose set certified the block (None: not
    /// committed here; copied by state transfer from a node that did).
    pub cert_base: Option<u64>,
}

enum Ev {
    /// `base`: the sender's epoch when it sent (metadata, not seen by the
    /// replica; used to check cross-epoch messages are dropped).
    Deliver {
        to: usize,
        from: usize,
        msg: SignedMessage,
        base: u64,
    },
    Timer {
        node: usize,
        id: TimerId,
        gen: u64,
    },
    Input {
        node: usize,
        input: Input,
    },
    Fetch {
        node: usize,
        fetch: Fetch,
    },
    /// A periodic move of a byzantine node (see `byzantine.rs`).
    Tick {
        node: usize,
    },
    Submit {
        tx: Vec<u8>,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition {
        blocked: BTreeSet<(usize, usize)>,
    },
    Heal,
    /// A node asks a peer for the proof of its epoch's end.
    EpochSync {
        node: usize,
    },
    EpochProof {
        node: usize,
        base: u64,
        proof: Vec<SignedMessage>,
    },
    Governance,
    /// The node's executor finished the oldest block of its queue.
    Execute {
        node: usize,
        gen: u64,
    },
}

struct Node {
    /// None while down, or while not a member of its epoch's set.
    replica: Option<Replica>,
    saved: Option<String>,
    down: bool,
    /// Executed blocks.
    ledger: Vec<Block>,
    /// Committed, not yet executed (volatile).
    exec_queue: VecDeque<(Payload, Option<u64>)>,
    /// The executor is busy (an `Ev::Execute` of generation `exec_gen`
    /// is scheduled); a crash starts a new generation.
    executing: bool,
    exec_gen: u64,
    /// Its epoch is complete but not yet executed through the end.
    switch_waits_execution: bool,
    /// The last epoch proof it was given by a peer.
    given_certificate: Option<Vec<SignedMessage>>,
    committed: BTreeSet<Vec<u8>>,
    mempool: BTreeSet<Vec<u8>>,
    /// Arrival number (ticket) of each request in the mempool.
    tickets: BTreeMap<Vec<u8>, u64>,
    next_ticket: u64,
    /// Requests a committed block with room for them left out, by ticket.
    overlooked: BTreeMap<u64, Vec<u8>>,
    /// Generation of each armed timer; a fire of another generation (a
    /// cancelled or replaced timer) is not delivered.
    timer_gen: BTreeMap<TimerId, u64>,
    /// Generations are never reused (also not after a cancel or a crash).
    timer_counter: u64,
    last_pending: Option<bool>,
    /// The oldest overlooked ticket last reported (None: not yet).
    last_overlooked: Option<Option<u64>>,
    /// The epochs its ledger implies.
    chain: Chain,
    /// Index in `chain` of the epoch it runs (its replica's set).
    epoch: usize,
    /// Epoch proofs by epoch end: the old set's certificate of it.
    proofs: BTreeMap<u64, Vec<SignedMessage>>,
}

pub struct Outcome {
    pub seed: u64,
    pub end_ms: u64,
    pub events: u64,
    pub view_changes: u64,
    pub max_seq: u64,
    pub state_transfers: u64,
    pub stats_dropped: u64,
    pub duplicates_skipped: u64,
    pub epochs: EpochStats,
    pub classes: Vec<&'static str>,
    pub byz: ByzStats,
}

pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    vsets: VsetCache,
    keys: Vec<SigningKey>,
    nodes: Vec<Node>,
    queue: BTreeMap<(u64, u64), Ev>,
    counter: u64,
    now: u64,
    healed: bool,
    blocked: BTreeSet<(usize, usize)>,
    submitted: BTreeSet<Vec<u8>>,
    proposed: BTreeSet<Digest>,
    violations: Vec<String>,
    state_transfers: u64,
    events: u64,
    trace: bool,
    duplicates_skipped: u64,
    epoch_stats: EpochStats,
    first_blocks_checked: BTreeSet<u64>,
    last_config_tx: Option<(u64, Vec<u8>)>,
    config_nonce: u64,
    post_submitted: bool,
    byz_stats: ByzStats,
    /// Lying VIEW-CHANGEs sent, by signature.
    vc_lies: BTreeMap<Vec<u8>, VcLie>,
    /// Recent true VIEW-CHANGEs of each liar, with the epoch base.
    byz_view_changes: BTreeMap<usize, Vec<(u64, ViewChange)>>,
}

fn hash_parts(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let keys: Vec<SigningKey> = (0..cfg.n)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                SigningKey::from_bytes(&b)
            })
            .collect();
        let pks: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let mut vsets = VsetCache::new(pks);
        let genesis = cfg.epochs.as_ref().map_or(cfg.n, |p| p.genesis);
        let chain = Chain::genesis((0..genesis).collect());
        let vset = vsets.get(chain.current()).clone();
        let nodes = (0..cfg.n)
            .map(|i| Node {
                replica: (i < genesis).then(|| {
                    Replica::new(
                        cfg.pbft.clone(),
                        vset.clone(),
                        i as ReplicaIndex,
                        keys[i].clone(),
                    )
                    .expect("replica")
                }),
                saved: None,
                down: false,
                ledger: Vec::new(),
                exec_queue: VecDeque::new(),
                executing: false,
                exec_gen: 0,
                switch_waits_execution: false,
                given_certificate: None,
                committed: BTreeSet::new(),
                mempool: BTreeSet::new(),
                tickets: BTreeMap::new(),
                next_ticket: 0,
                overlooked: BTreeMap::new(),
                timer_gen: BTreeMap::new(),
                timer_counter: 0,
                last_pending: None,
                last_overlooked: None,
                chain: chain.clone(),
                epoch: 0,
                proofs: BTreeMap::new(),
            })
            .collect();
        let mut sim = Sim {
            cfg,
            rng,
            vsets,
            keys,
            nodes,
            queue: BTreeMap::new(),
            counter: 0,
            now: 0,
            healed: false,
            blocked: BTreeSet::new(),
            submitted: BTreeSet::new(),
            proposed: BTreeSet::new(),
            violations: Vec::new(),
            state_transfers: 0,
            events: 0,
            trace: std::env::var("PBFT_TRACE").is_ok(),
            duplicates_skipped: 0,
            epoch_stats: EpochStats::default(),
            first_blocks_checked: BTreeSet::new(),
            last_config_tx: None,
            config_nonce: 0,
            post_submitted: false,
            byz_stats: ByzStats::default(),
            vc_lies: BTreeMap::new(),
            byz_view_changes: BTreeMap::new(),
        };
        sim.plan();
        sim.plan_epochs();
        sim.plan_byzantine();
        sim
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.counter += 1;
        self.queue.insert((t, self.counter), ev);
    }

    fn honest(&self, i: usize) -> bool {
        self.cfg.faults.byzantine.iter().all(|b| b.node != i)
    }

    /// The node's own clock (proposal timestamps).
    fn node_time(&self, node: usize) -> u64 {
        let offset = self
            .cfg
            .faults
            .clocks
            .as_ref()
            .map_or(0, |c| c[node].offset_ms);
        self.now + offset
    }

    /// How long a timer armed for `after_ms` takes on the node's clock.
    fn timer_delay(&self, node: usize, after_ms: u64) -> u64 {
        match &self.cfg.faults.clocks {
            Some(c) => ((after_ms as f64) * c[node].rate).ceil().max(1.0) as u64,
            None => after_ms,
        }
    }

    /// Schedule clients, crashes and partitions for the whole run.
    fn plan(&mut self) {
        let heal = self.cfg.heal_at;
        let window = heal.max(200);
        for k in 0..self.cfg.requests {
            let t = self.rng.gen_range(0..window);
            let tx = request_tx(self.cfg.seed, k);
            self.at(t, Ev::Submit { tx });
        }
        let dead = self.cfg.faults.dead;
        let honest: Vec<usize> = (0..self.cfg.n)
            .filter(|i| self.honest(*i) && dead != Some(*i))
            .collect();
        for _ in 0..self.cfg.faults.crashes {
            if heal < 20 {
                break;
            }
            let node = honest[self.rng.gen_range(0..honest.len())];
            let t0 = self.rng.gen_range(0..heal - 10);
            let t1 = self.rng.gen_range(t0 + 1..heal);
            self.at(t0, Ev::Crash { node });
            self.at(t1, Ev::Restart { node });
        }
        if let Some(d) = self.cfg.faults.dead {
            self.at(0, Ev::Crash { node: d });
        }
        for _ in 0..self.cfg.faults.partitions {
            if heal < 20 {
                break;
            }
            let t0 = self.rng.gen_range(0..heal - 10);
            let mut blocked = BTreeSet::new();
            let n = self.cfg.n;
            if self.rng.gen_bool(0.5) {
                // Symmetric split into two random groups.
                let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            blocked.insert((a, b));
                        }
                    }
                }
            } else {
                // Asymmetric: one replica cannot send (but still receives).
                let a = self.rng.gen_range(0..n);
                for b in 0..n {
                    blocked.insert((a, b));
                }
            }
            self.at(t0, Ev::Partition { blocked });
            let t1 = self.rng.gen_range(t0 + 1..heal);
            self.at(
                t1,
                Ev::Partition {
                    blocked: BTreeSet::new(),
                },
            );
        }
        self.at(heal, Ev::Heal);
    }

    /// Run to completion and check all properties; Err describes a failure.
    pub fn run(mut self) -> Result<Outcome, String> {
        let deadline = self.cfg.heal_at + self.cfg.liveness_bound_ms;
        let mut next_check = 0;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            self.events += 1;
            if self.events > 3_000_000 {
                return Err(self.fail("event budget exhausted"));
            }
            self.handle(ev);
            if !self.violations.is_empty() {
                let v = self.violations.join("; ");
                return Err(self.fail(&v));
            }
            if self.healed && t >= next_check {
                next_check = t + 50;
                if self.all_done() {
                    break;
                }
            }
            if t > deadline {
                break;
            }
        }
        self.check_safety()?;
        self.check_epochs()?;
        if !self.all_done() {
            let detail = self.progress_report();
            return Err(self.fail(&format!("liveness: not all requests committed\n{detail}")));
        }
        let max_seq = self
            .nodes
            .iter()
            .map(|n| n.ledger.len() as u64)
            .max()
            .unwrap_or(0);
        let view_changes = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.status().view_changes)
            .max()
            .unwrap_or(0);
        let stats_dropped = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| {
                let s = r.stats();
                s.bad_signature + s.wrong_sender + s.out_of_window + s.malformed
            })
            .sum();
        Ok(Outcome {
            seed: self.cfg.seed,
            end_ms: self.now,
            events: self.events,
            view_changes,
            max_seq,
            state_transfers: self.state_transfers,
            stats_dropped,
            duplicates_skipped: self.duplicates_skipped,
            epochs: self.epoch_stats.clone(),
            classes: self.cfg.classes(),
            byz: self.byz_stats.clone(),
        })
    }

    fn fail(&self, why: &str) -> String {
        let plan = match &self.cfg.epochs {
            Some(p) => format!(", changes={:?}", p.changes),
            None => String::new(),
        };
        let filter = match self.cfg.test {
            "" => format!("n{}_seeds_part0", self.cfg.n),
            t => t.to_string(),
        };
        format!(
            "seed {} (n={}, classes={:?}, faults={:?}{plan}, t={}ms): {why}\nreproduce: PBFT_SEED={} cargo test --release -p kubeledger-pbft --test simulation -- {filter} --nocapture",
            self.cfg.seed,
            self.cfg.n,
            self.cfg.classes(),
            self.cfg.faults,
            self.now,
            self.cfg.seed
        )
    }

    fn progress_report(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.replica.as_ref().map(|r| format!("{:?}", r.status()));
            s.push_str(&format!(
                "  node {i} honest={} ledger={} pending={} status={st:?}\n",
                self.honest(i),
                n.ledger.len(),
                self.submitted.difference(&n.committed).count()
            ));
        }
        if self.cfg.epochs.is_some() {
            s.push_str(&self.epoch_report());
        }
        s
    }

    fn all_done(&self) -> bool {
        if self.cfg.epochs.is_some() {
            return self.epochs_done();
        }
        (0..self.cfg.n)
            .filter(|i| self.honest(*i) && self.cfg.faults.dead != Some(*i))
            .all(|i| self.submitted.is_subset(&self.nodes[i].committed))
    }

    fn check_safety(&self) -> Result<(), String> {
        let honest: Vec<usize> = (0..self.cfg.n).filter(|i| self.honest(*i)).collect();
        let longest = honest
            .iter()
            .map(|i| self.nodes[*i].ledger.len())
            .max()
            .unwrap_or(0);
        for h in 0..longest {
            let mut seen: Option<&Block> = None;
            for i in &honest {
                if let Some(b) = self.nodes[*i].ledger.get(h) {
                    match seen {
                        None => seen = Some(b),
                        Some(o) if o.block_hash != b.block_hash || o.digest != b.digest => {
                            return Err(self.fail(&format!(
                                "agreement/fork violated at height {} (node {i})",
                                h + 1
                            )));
                        }
                        Some(_) => {}
                    }
                }
            }
            if let Some(b) = seen {
                if !b.payload.is_null() && !self.proposed.contains(&b.digest) {
                    return Err(self.fail(&format!("validity: unproposed payload at {}", h + 1)));
                }
                for tx in &b.payload.txs {
                    if tx.starts_with(INVALID_MARKER) || !self.submitted.contains(tx) {
                        return Err(self.fail(&format!("validity: bad tx at {}", h + 1)));
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Submit { tx } => {
                self.submitted.insert(tx.clone());
                for i in 0..self.cfg.n {
                    let n = &mut self.nodes[i];
                    if !n.committed.contains(&tx) && n.mempool.insert(tx.clone()) {
                        n.next_ticket += 1;
                        n.tickets.insert(tx.clone(), n.next_ticket);
                    }
                    self.after_event(i);
                }
            }
            Ev::Deliver {
                to,
                from,
                msg,
                base,
            } => self.deliver(to, from, msg, base),
            Ev::Timer { node, id, gen } => {
                if self.nodes[node].timer_gen.get(&id) == Some(&gen) {
                    self.nodes[node].timer_gen.remove(&id);
                    self.step(node, Input::TimerFired(id));
                }
            }
            Ev::Input { node, input } => self.step(node, input),
            Ev::Execute { node, gen } => {
                if self.nodes[node].exec_gen == gen {
                    self.execute_next(node);
                    self.schedule_execution(node);
                }
            }
            Ev::Fetch { node, fetch } => self.do_fetch(node, fetch),
            Ev::Tick { node } => self.byzantine_tick(node),
            Ev::Crash { node } => {
                if self.trace {
                    eprintln!("t={} node {node} CRASH", self.now);
                }
                let n = &mut self.nodes[node];
                n.down = true;
                n.exec_queue.clear();
                n.executing = false;
                n.exec_gen += 1;
                if let Some(r) = n.replica.take() {
                    let st = r.persistent_state();
                    n.saved = Some(serde_json::to_string(&st).expect("serialize"));
                }
                n.timer_gen.clear();
                n.last_pending = None;
                n.last_overlooked = None;
            }
            Ev::Restart { node } => self.restart(node),
            Ev::Partition { blocked } => {
                if self.trace {
                    eprintln!("t={} partition {blocked:?}", self.now);
                }
                if !self.healed {
                    self.blocked = blocked;
                }
            }
            Ev::Heal => {
                self.healed = true;
                self.blocked.clear();
                for i in 0..self.cfg.n {
                    if self.nodes[i].down && self.cfg.faults.dead != Some(i) {
                        self.restart(i);
                    }
                }
            }
            Ev::EpochSync { node } => self.epoch_sync(node),
            Ev::EpochProof { node, base, proof } => self.on_epoch_proof(node, base, proof),
            Ev::Governance => self.governance(),
        }
    }

    fn restart(&mut self, node: usize) {
        if self.trace {
            eprintln!("t={} node {node} RESTART", self.now);
        }
        if self.cfg.faults.dead == Some(node) || !self.nodes[node].down {
            return;
        }
        self.nodes[node].down = false;
        // The epoch is the one its stored epoch proofs reached (the ledger
        // holds every block up to the last of them).
        let n = &mut self.nodes[node];
        n.epoch = n.proofs.len();
        self.rebuild_replica(node);
        // Report the ledger tip again: its CHECKPOINT may not have been
        // signed before the crash (at an epoch end no later one replaces it).
        if let Some(tip) = self.nodes[node].ledger.last() {
            let input = Input::Executed {
                seq: self.nodes[node].ledger.len() as u64,
                state_root: tip.state_root,
                block_hash: tip.block_hash,
            };
            self.step(node, input);
        }
    }

    fn step(&mut self, node: usize, input: Input) {
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return;
        };
        if self.trace && !matches!(input, Input::Message { .. } | Input::RequestsPending(_)) {
            eprintln!("t={} node {node} input {input:?}", self.now);
        }
        let checked = match &input {
            Input::Message { msg, .. }
                if matches!(msg.message, Message::ViewChange(_) | Message::NewView(_)) =>
            {
                Some(msg.clone())
            }
            _ => None,
        };
        let before = r.stats().clone();
        let actions = r.step(input);
        let after = r.stats().clone();
        if let Some(msg) = checked {
            let vcs = after.invalid_view_changes - before.invalid_view_changes;
            let nvs = after.invalid_new_views - before.invalid_new_views;
            self.check_verdict(node, &msg, vcs, nvs);
        }
        if self.honest(node) {
            let suspected = after.censorship_suspected - before.censorship_suspected;
            self.byz_stats.censorship_suspected += suspected;
            if self.healed {
                self.byz_stats.censorship_after_heal += suspected;
                if suspected > 0 && self.trace {
                    eprintln!("t={} node {node} suspects censorship after heal", self.now);
                }
            }
        }
        self.apply(node, actions);
        self.check_epoch_switch(node);
        self.after_event(node);
    }

    /// Node-side glue run after every event: mempool signal and block cutter.
    fn after_event(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let Some(r) = n.replica.as_ref() else {
            return;
        };
        let status = r.status();
        // A scheduled epoch end is work too: the chain must reach it (with
        // empty blocks if need be) before the next set can take over.
        let filling = status.epoch_end.is_some_and(|e| status.last_committed < e);
        let pending = !n.mempool.is_empty() || filling;
        if n.last_pending != Some(pending) {
            n.last_pending = Some(pending);
            self.step(node, Input::RequestsPending(pending));
            return;
        }
        let oldest = n.overlooked.keys().next().copied();
        if n.last_overlooked != Some(oldest) {
            n.last_overlooked = Some(oldest);
            self.step(node, Input::Overlooked(oldest));
            return;
        }
        if !status.is_primary || status.view_change_in_progress || !pending {
            return;
        }
        let censored = if self.attack(node) == Some(Attack::Censor) {
            self.censored_txs()
        } else {
            Vec::new()
        };
        let n = &self.nodes[node];
        let Some(r) = n.replica.as_ref() else {
            return;
        };
        let in_flight: BTreeSet<&Vec<u8>> = r
            .in_flight_payloads()
            .flat_map(|(_, _, p)| p.txs.iter())
            .collect();
        let batch: Vec<Vec<u8>> = n
            .mempool
            .iter()
            .filter(|tx| !in_flight.contains(tx) && !censored.contains(tx))
            .take(self.cfg.max_batch)
            .cloned()
            .collect();
        if batch.is_empty() && !filling {
            return;
        }
        if censored.iter().any(|tx| n.mempool.contains(tx)) {
            self.byz_stats.censored_blocks += 1;
        }
        // The replica names itself as proposer; so does the payload here,
        // so its digest is the one the replica orders.
        let proposer = self.nodes[node].replica.as_ref().map_or(0, |r| r.id());
        let payload = Payload {
            timestamp_ms: self.node_time(node) + 1,
            proposer,
            txs: batch.into(),
        };
        self.proposed.insert(payload.digest());
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return;
        };
        if self.trace {
            let st = r.status();
            eprintln!(
                "t={} node {node} propose view {} txs {:?}",
                self.now,
                st.view,
                payload
                    .txs
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).to_string())
                    .collect::<Vec<_>>()
            );
        }
        let actions = r.step(Input::Propose { payload });
        let accepted = !actions
            .iter()
            .any(|a| matches!(a, Action::ProposalRejected { .. }));
        self.apply(node, actions);
        if accepted {
            // Keep cutting while the window has room.
            self.after_event(node);
        }
    }

    fn apply(&mut self, node: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Broadcast(msg) => {
                    if self.trace {
                        if let Message::ViewChange(vc) = &msg.message {
                            eprintln!(
                                "t={} node {node} sends VC({}) stable {} prepared {}",
                                self.now,
                                vc.new_view,
                                vc.stable_seq,
                                vc.prepared.len()
                            );
                        }
                        if let Message::NewView(nv) = &msg.message {
                            eprintln!("t={} node {node} sends NV({})", self.now, nv.view);
                        }
                    }
                    let members = self.epoch(node).members.clone();
                    for to in members {
                        if to != node {
                            self.send(node, to, msg.clone());
                        }
                    }
                }
                Action::Send { to, msg } => {
                    if let Some(to) = self.epoch(node).members.get(to as usize).copied() {
                        self.send(node, to, msg);
                    }
                }
                Action::ValidatePayload {
                    seq,
                    view,
                    digest,
                    payload,
                } => {
                    let n = &self.nodes[node];
                    let input = verdict::payload_verdict(seq, view, digest, &payload, |tx| {
                        n.committed.contains(tx)
                    });
                    let t = self.now + self.rng.gen_range(0..3);
                    self.at(t, Ev::Input { node, input });
                }
                Action::Commit {
                    seq,
                    payload,
                    certificate,
                    ..
                } => self.commit(node, seq, payload, certificate),
                Action::SetTimer { id, after_ms } => {
                    let n = &mut self.nodes[node];
                    n.timer_counter += 1;
                    let gen = n.timer_counter;
                    n.timer_gen.insert(id, gen);
                    let t = self.now + self.timer_delay(node, after_ms);
                    if self.trace {
                        eprintln!("t={} node {node} timer {id:?} at {t} (gen {gen})", self.now);
                    }
                    self.at(t, Ev::Timer { node, id, gen });
                }
                Action::CancelTimer { id } => {
                    self.nodes[node].timer_gen.remove(&id);
                }
                Action::FetchState {
                    target_seq,
                    state_root,
                    block_hash,
                    peers,
                    ..
                } => self.start_fetch(node, target_seq, state_root, block_hash, &peers),
                Action::ViewChanged { .. }
                | Action::CheckpointStable { .. }
                | Action::ProposalRejected { .. } => {}
            }
        }
    }

    fn commit(&mut self, node: usize, seq: u64, payload: Payload, cert: CommitCertificate) {
        let honest = self.honest(node);
        let n = &self.nodes[node];
        let height = (n.ledger.len() + n.exec_queue.len()) as u64;
        if seq != height + 1 {
            if honest {
                self.violations.push(format!(
                    "node {node}: commit {seq} out of order (height {height})"
                ));
            }
            return;
        }
        let digest = payload.digest();
        if self.trace {
            eprintln!(
                "t={} node {node} commit seq {seq} view {} txs {:?}",
                self.now,
                cert.view,
                payload
                    .txs
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).to_string())
                    .collect::<Vec<_>>()
            );
        }
        if honest {
            if cert.digest != digest || cert.seq != seq {
                self.violations
                    .push(format!("node {node}: bad certificate at {seq}"));
            }
            self.check_commit_epoch(node, seq, &cert);
        }
        let cert_base = Some(self.epoch(node).base);
        self.nodes[node].exec_queue.push_back((payload, cert_base));
        if self.cfg.exec_delay_ms == 0 {
            self.execute_next(node);
        } else if !self.nodes[node].executing {
            self.schedule_execution(node);
        }
    }

    fn schedule_execution(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.executing = !n.exec_queue.is_empty();
        if n.executing {
            let gen = n.exec_gen;
            let t = self.now + self.rng.gen_range(1..=self.cfg.exec_delay_ms);
            self.at(t, Ev::Execute { node, gen });
        }
    }

    /// The node's executor: apply the oldest committed block to the ledger
    /// and report it to the replica.
    fn execute_next(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let Some((payload, cert_base)) = n.exec_queue.pop_front() else {
            return;
        };
        let seq = n.ledger.len() as u64 + 1;
        let digest = payload.digest();
        self.mark_overlooked(node, &payload);
        let n = &self.nodes[node];
        let (prev_root, prev_hash) = n
            .ledger
            .last()
            .map_or(([0; 32], [0; 32]), |b| (b.state_root, b.block_hash));
        let state_root = hash_parts(&[&prev_root, &digest]);
        let block_hash = hash_parts(&[&seq.to_be_bytes(), &prev_hash, &digest]);
        // Like PBFT's client timestamps: a request that resurfaces in a later
        // block (a stale prepared batch re-proposed after view changes) is
        // skipped at execution, so each request executes exactly once.
        self.execute_block(
            node,
            Block {
                digest,
                payload,
                state_root,
                block_hash,
                cert_base,
            },
            true,
        );
        let t = self.now + self.rng.gen_range(0..3);
        self.at(
            t,
            Ev::Input {
                node,
                input: Input::Executed {
                    seq,
                    state_root,
                    block_hash,
                },
            },
        );
        // An epoch may have completed before its last blocks were executed.
        self.check_epoch_switch(node);
    }

    /// The node's mempool model, on executing a committed block: a block
    /// with room (fewer txs than the block cutter's limit, and not the
    /// null request that fills a view change's gaps) left out every
    /// request the node holds that is not in another block (committed or in
    /// flight); those are overlooked until they commit.
    fn mark_overlooked(&mut self, node: usize, payload: &Payload) {
        if payload.txs.len() >= self.cfg.max_batch || payload.is_null() {
            return;
        }
        let n = &self.nodes[node];
        let mut elsewhere: BTreeSet<&Vec<u8>> = payload.txs.iter().collect();
        elsewhere.extend(n.exec_queue.iter().flat_map(|(p, _)| p.txs.iter()));
        if let Some(r) = n.replica.as_ref() {
            elsewhere.extend(r.in_flight_payloads().flat_map(|(_, _, p)| p.txs.iter()));
        }
        let left_out: Vec<(u64, Vec<u8>)> = n
            .tickets
            .iter()
            .filter(|(tx, _)| !elsewhere.contains(tx))
            .map(|(tx, t)| (*t, tx.clone()))
            .collect();
        self.nodes[node].overlooked.extend(left_out);
    }

    fn send(&mut self, from: usize, to: usize, msg: SignedMessage) {
        match self.attack(from) {
            Some(Attack::Classic) => self.byzantine_send(from, to, msg),
            Some(Attack::ViewChange) => self.lying_view_change_send(from, to, msg),
            Some(Attack::Censor) | None => self.transmit(from, to, msg),
        }
    }

    fn transmit(&mut self, from: usize, to: usize, msg: SignedMessage) {
        let base = self.epoch(from).base;
        if self.blocked.contains(&(from, to)) {
            return;
        }
        let f = &self.cfg.faults;
        let (loss, dup) = if self.healed {
            (0.0, 0.0)
        } else {
            (f.loss, f.duplicate)
        };
        if loss > 0.0 && self.rng.gen_bool(loss) {
            return;
        }
        let copies = if dup > 0.0 && self.rng.gen_bool(dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let t = self.now + self.rng.gen_range(1..=self.cfg.faults.max_delay_ms.max(1));
            self.at(
                t,
                Ev::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                    base,
                },
            );
        }
    }

    /// Signs as `from`'s replica in its current epoch.
    fn resign(&mut self, from: usize, m: Message) -> SignedMessage {
        let n = &self.nodes[from];
        let ep = &n.chain.epochs[n.epoch];
        let me = ep.index_of(from).unwrap_or(0);
        SignedMessage::sign(self.vsets.get(ep), me, &self.keys[from], m)
    }
}

/// Seeds to run: `PBFT_SEED` pins one, `PBFT_SEEDS` sets the count.
pub fn seeds(default_count: u64, salt: u64) -> Vec<u64> {
    seeds_from("PBFT_SEEDS", default_count, salt)
}

/// Seeds to run: `PBFT_SEED` pins one, the variable `count_var` sets the
/// count.
pub fn seeds_from(count_var: &str, default_count: u64, salt: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("PBFT_SEED") {
        return s.parse().map(|x| vec![x]).unwrap_or_default();
    }
    let count = std::env::var(count_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (0..count).map(|i| salt + i).collect()
}
