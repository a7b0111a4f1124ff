//! Byzantine replicas of the simulator. Each runs a real replica; what it
//! sends (and, as a state-transfer source, serves) is mutated here, by the
//! attack the seed chose for it:
//!
//! * `Classic`: equivocating PRE-PREPAREs (one with an invalid tx), forged
//!   NEW-VIEWs, votes for digests nobody proposed, garbage (broken
//!   signatures, forged signers, far-future seqs) and, in epoch runs,
//!   CHECKPOINTs for another state.
//! * `ViewChange`: lying VIEW-CHANGEs, on its own view changes and
//!   unprompted ones for the next view, a fresh lie per receiver ([`VcLie`]).
//!   Each delivered lie is checked: the replica counts it in
//!   `invalid_view_changes` exactly when it can tell.
//! * `Censor`: as primary it proposes normally but never includes the
//!   censored requests, and keeps the chain moving with empty blocks when
//!   it has nothing else, so the request timer (restarted by every commit)
//!   never fires. Only the censorship timer catches it.
//!
//! Every byzantine replica also serves forged chains when asked for state
//! (see `transfer.rs`).

use std::collections::BTreeSet;

use kubeledger_pbft::{
    quorum, Checkpoint, Message, Payload, PrePrepare, PreparedCert, ReplicaIndex, SignedMessage,
    ViewChange, Vote,
};
use rand::Rng;

use super::{Ev, Sim, INVALID_MARKER};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    Classic,
    ViewChange,
    Censor,
}

impl Attack {
    pub const ALL: [Attack; 3] = [Attack::Classic, Attack::ViewChange, Attack::Censor];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Classic => "classic",
            Attack::ViewChange => "vc-lies",
            Attack::Censor => "censor",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Byzantine {
    pub node: usize,
    pub attack: Attack,
}

/// How a lying VIEW-CHANGE lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VcLie {
    /// A prepared certificate with a PREPARE for a digest that was never
    /// pre-prepared (or a made-up certificate when it has none).
    ForgedDigest,
    /// A certificate cut below quorum - 1 prepares.
    TooFewPrepares,
    /// A certificate whose prepares repeat one signer.
    DuplicateSigner,
    /// A certificate with a PREPARE of another (older) view than its
    /// PRE-PREPARE.
    StalePrepare,
    /// Claims a new view no later than one of its certificates' views.
    ViewNotAfterCertificate,
    /// A stable-checkpoint proof cut below quorum, with a broken signature,
    /// or self-signed for a made-up state.
    BogusCheckpoint,
    /// A stable seq beyond what its proof certifies.
    StableBeyondTruth,
    /// An older VIEW-CHANGE of its own (older stable checkpoint,
    /// certificates of older views) relabelled for the new view.
    Stale,
    /// Claims nothing prepared.
    Omitted,
    /// A last-committed seq beyond the truth (an unauthenticated hint).
    LastCommittedBeyondTruth,
}

impl VcLie {
    pub const ALL: [VcLie; 10] = [
        VcLie::ForgedDigest,
        VcLie::TooFewPrepares,
        VcLie::DuplicateSigner,
        VcLie::StalePrepare,
        VcLie::ViewNotAfterCertificate,
        VcLie::BogusCheckpoint,
        VcLie::StableBeyondTruth,
        VcLie::Stale,
        VcLie::Omitted,
        VcLie::LastCommittedBeyondTruth,
    ];

    /// Whether a replica can tell the VIEW-CHANGE is invalid. The others
    /// are well-formed (an older state, less than it knows) and must be
    /// accepted; safety may not depend on them being true.
    pub fn detectable(self) -> bool {
        !matches!(
            self,
            VcLie::Stale | VcLie::Omitted | VcLie::LastCommittedBeyondTruth
        )
    }
}

/// Counters of the byzantine behaviours and what the replicas made of them.
#[derive(Clone, Debug, Default)]
pub struct ByzStats {
    /// Lying VIEW-CHANGEs delivered to honest replicas, by kind.
    pub vc_lies_delivered: std::collections::BTreeMap<VcLie, u64>,
    /// Detectable lies counted as invalid (all of them, or the run fails).
    pub vc_lies_caught: u64,
    /// Undetectable lies accepted as valid VIEW-CHANGEs.
    pub vc_lies_accepted: u64,
    /// Blocks a censoring primary proposed while it left a censored
    /// request out.
    pub censored_blocks: u64,
    /// View changes honest replicas started on their censorship timer ...
    pub censorship_suspected: u64,
    /// ... of which after the faults healed.
    pub censorship_after_heal: u64,
    /// Forged chains a byzantine state-transfer source served (each one
    /// rejected by the fetching node, which moved on to another peer).
    pub forged_chains_rejected: u64,
}

impl ByzStats {
    pub fn add(&mut self, o: &ByzStats) {
        for (k, v) in &o.vc_lies_delivered {
            *self.vc_lies_delivered.entry(*k).or_default() += v;
        }
        self.vc_lies_caught += o.vc_lies_caught;
        self.vc_lies_accepted += o.vc_lies_accepted;
        self.censored_blocks += o.censored_blocks;
        self.censorship_suspected += o.censorship_suspected;
        self.censorship_after_heal += o.censorship_after_heal;
        self.forged_chains_rejected += o.forged_chains_rejected;
    }
}

/// Recent own VIEW-CHANGEs kept per byzantine node, for stale replays.
const STALE_KEPT: usize = 4;

impl Sim {
    pub(super) fn attack(&self, node: usize) -> Option<Attack> {
        self.cfg
            .faults
            .byzantine
            .iter()
            .find(|b| b.node == node)
            .map(|b| b.attack)
    }

    pub(super) fn plan_byzantine(&mut self) {
        for b in self.cfg.faults.byzantine.clone() {
            if matches!(b.attack, Attack::Censor | Attack::ViewChange) {
                let t = self.rng.gen_range(10..60);
                self.at(t, Ev::Tick { node: b.node });
            }
        }
    }

    /// The censored requests (by client tx), chosen per seed.
    pub(super) fn censored_txs(&self) -> Vec<Vec<u8>> {
        self.cfg
            .faults
            .censored
            .iter()
            .map(|k| super::request_tx(self.cfg.seed, *k))
            .collect()
    }

    pub(super) fn is_censored(&self, node: usize, tx: &[u8]) -> bool {
        self.attack(node) == Some(Attack::Censor) && self.censored_txs().iter().any(|c| c == tx)
    }

    /// A periodic move of a byzantine node: a censor keeps the chain
    /// moving, a liar sends an unprompted VIEW-CHANGE.
    pub(super) fn byzantine_tick(&mut self, node: usize) {
        match self.attack(node) {
            Some(Attack::Censor) => {
                let censored = self.censored_txs();
                if censored
                    .iter()
                    .all(|tx| self.nodes[node].committed.contains(tx))
                {
                    return;
                }
                let t = self.now + self.rng.gen_range(30..60);
                self.at(t, Ev::Tick { node });
                self.keep_chain_moving(node);
            }
            Some(Attack::ViewChange) => {
                // Unprompted lies until shortly after the faults heal.
                if self.now > self.cfg.heal_at + 1_000 {
                    return;
                }
                let t = self.now + self.rng.gen_range(100..200);
                self.at(t, Ev::Tick { node });
                self.unprompted_view_change(node);
            }
            _ => {}
        }
    }

    /// A censoring primary with only censored requests left proposes an
    /// empty block, so commits keep restarting everyone's request timer.
    fn keep_chain_moving(&mut self, node: usize) {
        let n = &self.nodes[node];
        let Some(r) = n.replica.as_ref() else {
            return;
        };
        let st = r.status();
        if n.down
            || !st.is_primary
            || st.view_change_in_progress
            || st.state_transfer_target.is_some()
            || r.in_flight_payloads().next().is_some()
        {
            return;
        }
        let withheld = n.mempool.iter().any(|tx| self.is_censored(node, tx));
        let other = n.mempool.iter().any(|tx| !self.is_censored(node, tx));
        if !withheld || other {
            return;
        }
        let proposer = self.nodes[node].replica.as_ref().map_or(0, |r| r.id());
        let payload = Payload {
            timestamp_ms: self.node_time(node) + 1,
            proposer,
            txs: Vec::new().into(),
        };
        self.proposed.insert(payload.digest());
        self.byz_stats.censored_blocks += 1;
        if self.trace {
            eprintln!(
                "t={} node {node} (censor) proposes an empty block",
                self.now
            );
        }
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let actions = r.step(kubeledger_pbft::Input::Propose { payload });
        self.apply(node, actions);
        self.after_event(node);
    }

    /// A VIEW-CHANGE for the next view, built as the replica would build
    /// it from its state, then lied about per receiver.
    fn unprompted_view_change(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.down {
            return;
        }
        let Some(r) = n.replica.as_ref() else {
            return;
        };
        let st = r.persistent();
        let stable = st.stable.seq;
        let vc = ViewChange {
            new_view: st.view.saturating_add(1),
            stable_seq: stable,
            checkpoint_proof: st.stable.proof.clone(),
            prepared: st
                .slots
                .range(stable.saturating_add(1)..)
                .filter_map(|(_, s)| s.prepared.clone())
                .collect(),
            last_committed: st.last_committed,
        };
        let msg = self.resign(node, Message::ViewChange(vc));
        let members = self.epoch(node).members.clone();
        for to in members {
            if to != node {
                self.lying_view_change_send(node, to, msg.clone());
            }
        }
    }

    /// A VIEW-CHANGE liar's outgoing traffic: every VIEW-CHANGE is replaced
    /// by a lie (chosen per receiver); everything else goes out unchanged.
    pub(super) fn lying_view_change_send(&mut self, from: usize, to: usize, msg: SignedMessage) {
        let Message::ViewChange(vc) = &msg.message else {
            self.transmit(from, to, msg);
            return;
        };
        let base = self.epoch(from).base;
        let kept = self.byz_view_changes.entry(from).or_default();
        if !kept.iter().any(|(b, v)| *b == base && v == vc) {
            kept.push((base, vc.clone()));
            if kept.len() > STALE_KEPT {
                kept.remove(0);
            }
        }
        let lie = VcLie::ALL[self.rng.gen_range(0..VcLie::ALL.len())];
        let (body, lie) = self.lie_about(from, vc.clone(), lie);
        let forged = self.resign(from, Message::ViewChange(body));
        self.vc_lies.insert(forged.signature.clone(), lie);
        self.transmit(from, to, forged);
    }

    /// Applies `lie` to a true VIEW-CHANGE body; returns the lie told (one
    /// that does not apply falls back to another).
    fn lie_about(&mut self, from: usize, mut vc: ViewChange, lie: VcLie) -> (ViewChange, VcLie) {
        let ep = self.epoch(from).clone();
        let q = quorum(ep.members.len());
        let me = ep.index_of(from).unwrap_or(0);
        let k = self.cfg.pbft.checkpoint_interval;
        let with_prepares: Vec<usize> = (0..vc.prepared.len())
            .filter(|i| vc.prepared[*i].prepares.len() >= 2)
            .collect();
        let pick = |s: &mut Self, v: &[usize]| v[s.rng.gen_range(0..v.len())];
        match lie {
            VcLie::ForgedDigest if !with_prepares.is_empty() => {
                let i = pick(self, &with_prepares);
                let Some(pp) = as_pp(&vc.prepared[i].pre_prepare).cloned() else {
                    return (vc, VcLie::Omitted);
                };
                let mut digest = [0u8; 32];
                self.rng.fill(&mut digest);
                let forged = self.resign(
                    from,
                    Message::Prepare(Vote {
                        view: pp.view,
                        seq: pp.seq,
                        digest,
                    }),
                );
                vc.prepared[i].prepares[0] = forged;
                (vc, lie)
            }
            VcLie::TooFewPrepares if !with_prepares.is_empty() => {
                let i = pick(self, &with_prepares);
                vc.prepared[i].prepares.truncate(q.saturating_sub(2));
                (vc, lie)
            }
            VcLie::DuplicateSigner if !with_prepares.is_empty() => {
                let i = pick(self, &with_prepares);
                let first = vc.prepared[i].prepares[0].clone();
                if let Some(last) = vc.prepared[i].prepares.last_mut() {
                    *last = first;
                }
                (vc, lie)
            }
            VcLie::StalePrepare if !with_prepares.is_empty() => {
                let i = pick(self, &with_prepares);
                let Some(pp) = as_pp(&vc.prepared[i].pre_prepare).cloned() else {
                    return (vc, VcLie::Omitted);
                };
                // Its own vote, of the view before (after, for view 0).
                let view = pp.view.checked_sub(1).unwrap_or(1);
                let stale = self.resign(
                    from,
                    Message::Prepare(Vote {
                        view,
                        seq: pp.seq,
                        digest: pp.digest,
                    }),
                );
                vc.prepared[i].prepares[0] = stale;
                (vc, lie)
            }
            VcLie::ViewNotAfterCertificate if !vc.prepared.is_empty() => {
                let latest = vc
                    .prepared
                    .iter()
                    .filter_map(|c| as_pp(&c.pre_prepare).map(|p| p.view))
                    .max()
                    .unwrap_or(0);
                vc.new_view = latest;
                (vc, lie)
            }
            VcLie::ForgedDigest
            | VcLie::TooFewPrepares
            | VcLie::DuplicateSigner
            | VcLie::StalePrepare
            | VcLie::ViewNotAfterCertificate => {
                // Nothing prepared to forge from: a made-up certificate for
                // a payload never pre-prepared, "prepared" by itself alone.
                let n = ep.members.len() as u64;
                let view = (0..vc.new_view)
                    .rev()
                    .find(|v| v % n == me as u64)
                    .unwrap_or(0);
                let payload = Payload {
                    timestamp_ms: 999,
                    proposer: me as ReplicaIndex,
                    txs: vec![format!("forged-{}", self.rng.gen::<u32>()).into_bytes()].into(),
                };
                let seq = vc.stable_seq.saturating_add(1);
                let pre_prepare = self.resign(
                    from,
                    Message::PrePrepare(PrePrepare {
                        view,
                        seq,
                        digest: payload.digest(),
                        payload,
                    }),
                );
                let prepare = self.resign(
                    from,
                    Message::Prepare(Vote {
                        view,
                        seq,
                        digest: [3; 32],
                    }),
                );
                vc.prepared.push(PreparedCert {
                    pre_prepare,
                    prepares: vec![prepare],
                });
                (vc, VcLie::ForgedDigest)
            }
            VcLie::BogusCheckpoint => {
                let roll = self.rng.gen_range(0..3);
                if !vc.checkpoint_proof.is_empty() && roll == 0 {
                    vc.checkpoint_proof.truncate(q - 1);
                } else if !vc.checkpoint_proof.is_empty() && roll == 1 {
                    vc.checkpoint_proof[0].signature[0] ^= 0x40;
                } else {
                    // Self-signed, for a state nobody executed.
                    let seq = vc.stable_seq.saturating_add(k);
                    let mut state_root = [0u8; 32];
                    self.rng.fill(&mut state_root);
                    let cp = self.resign(
                        from,
                        Message::Checkpoint(Checkpoint {
                            seq,
                            state_root,
                            block_hash: state_root,
                        }),
                    );
                    vc.stable_seq = seq;
                    vc.checkpoint_proof = vec![cp];
                    vc.prepared
                        .retain(|c| as_pp(&c.pre_prepare).is_some_and(|p| p.seq > seq));
                }
                (vc, lie)
            }
            VcLie::StableBeyondTruth => {
                vc.stable_seq = vc.stable_seq.saturating_add(k);
                (vc, lie)
            }
            VcLie::Stale => {
                let base = ep.base;
                let older = self.byz_view_changes.get(&from).and_then(|kept| {
                    kept.iter()
                        .find(|(b, v)| *b == base && v.new_view < vc.new_view && *v != vc)
                        .map(|(_, v)| v.clone())
                });
                match older {
                    Some(old) => (
                        ViewChange {
                            new_view: vc.new_view,
                            ..old
                        },
                        lie,
                    ),
                    None => {
                        vc.prepared.clear();
                        (vc, VcLie::Omitted)
                    }
                }
            }
            VcLie::Omitted => {
                vc.prepared.clear();
                (vc, lie)
            }
            VcLie::LastCommittedBeyondTruth => {
                vc.last_committed = vc
                    .last_committed
                    .saturating_add(self.rng.gen_range(1..10_000));
                (vc, lie)
            }
        }
    }

    /// The classic byzantine replica's outgoing traffic is mutated here.
    pub(super) fn byzantine_send(&mut self, from: usize, to_node: usize, msg: SignedMessage) {
        let roll: f64 = self.rng.gen();
        // Replica index of the receiver and size of the sender's set.
        let (to, n) = {
            let ep = self.epoch(from);
            let to = ep.index_of(to_node).map_or(0, |i| i as usize);
            (to, ep.members.len())
        };
        let mutated = match &msg.message {
            // Equivocate: the upper half of the replicas gets another payload.
            Message::PrePrepare(pp) if to * 2 >= n => {
                let mut payload = pp.payload.clone();
                payload.timestamp_ms += 7;
                if roll < 0.3 {
                    payload.txs.make_mut().push(
                        format!("{}-{}", String::from_utf8_lossy(INVALID_MARKER), pp.seq)
                            .into_bytes(),
                    );
                } else {
                    payload.txs.make_mut().reverse();
                }
                let digest = payload.digest();
                self.proposed.insert(digest);
                self.resign(
                    from,
                    Message::PrePrepare(PrePrepare {
                        view: pp.view,
                        seq: pp.seq,
                        digest,
                        payload,
                    }),
                )
            }
            // A forged NEW-VIEW (O set altered) for the upper half.
            Message::NewView(nv) if to * 2 >= n && roll < 0.5 => {
                let mut nv = nv.clone();
                let null = Payload::null();
                let seq = nv.pre_prepares.len() as u64 + 1000;
                nv.pre_prepares.push(self.resign(
                    from,
                    Message::PrePrepare(PrePrepare {
                        view: nv.view,
                        seq,
                        digest: null.digest(),
                        payload: null,
                    }),
                ));
                self.resign(from, Message::NewView(nv))
            }
            // Votes for digests nobody proposed.
            Message::Prepare(v) | Message::Commit(v) if roll < 0.3 => {
                let mut digest = [0u8; 32];
                self.rng.fill(&mut digest);
                let vote = Vote { digest, ..*v };
                let m = if matches!(msg.message, Message::Prepare(_)) {
                    Message::Prepare(vote)
                } else {
                    Message::Commit(vote)
                };
                self.resign(from, m)
            }
            // In epoch runs, CHECKPOINTs for another state (epoch proofs
            // are checkpoint certificates).
            Message::Checkpoint(cp) if self.cfg.epochs.is_some() && roll < 0.5 => {
                let mut lie = *cp;
                self.rng.fill(&mut lie.state_root);
                self.resign(from, Message::Checkpoint(lie))
            }
            _ => msg.clone(),
        };
        self.transmit(from, to_node, mutated);
        // Garbage: broken signatures, forged signers, far-future seqs.
        let g: f64 = self.rng.gen();
        if g < 0.15 {
            let mut bad = msg.clone();
            bad.signature = (0..self.rng.gen_range(0..80))
                .map(|_| self.rng.gen())
                .collect();
            self.transmit(from, to_node, bad);
        } else if g < 0.25 {
            let mut forged = msg.clone();
            forged.signer = self.rng.gen_range(0..n) as ReplicaIndex;
            self.transmit(from, to_node, forged);
        } else if g < 0.35 {
            let vote = Vote {
                view: self.rng.gen_range(0..4),
                seq: self.rng.gen_range(1..u64::MAX),
                digest: [7; 32],
            };
            let far = self.resign(from, Message::Commit(vote));
            self.transmit(from, to_node, far);
        }
    }

    /// Checks around one replica step of a peer message: a lying
    /// VIEW-CHANGE is counted invalid exactly when it is detectable; a
    /// VIEW-CHANGE or NEW-VIEW signed by an honest replica never is.
    pub(super) fn check_verdict(
        &mut self,
        node: usize,
        msg: &SignedMessage,
        invalid_vcs: u64,
        invalid_nvs: u64,
    ) {
        if !self.honest(node) {
            return;
        }
        let signer = self.epoch(node).members.get(msg.signer as usize).copied();
        let honest_signer = signer.is_some_and(|s| self.honest(s));
        match &msg.message {
            Message::ViewChange(_) => match self.vc_lies.get(&msg.signature).copied() {
                Some(lie) => {
                    *self.byz_stats.vc_lies_delivered.entry(lie).or_default() += 1;
                    if lie.detectable() && invalid_vcs == 1 {
                        self.byz_stats.vc_lies_caught += 1;
                    } else if !lie.detectable() && invalid_vcs == 0 {
                        self.byz_stats.vc_lies_accepted += 1;
                    } else {
                        self.violations.push(format!(
                            "node {node}: VIEW-CHANGE lie {lie:?} counted {invalid_vcs} times as invalid"
                        ));
                    }
                }
                None if honest_signer && invalid_vcs != 0 => self.violations.push(format!(
                    "node {node}: honest VIEW-CHANGE of node {signer:?} counted invalid"
                )),
                None => {}
            },
            Message::NewView(_) if honest_signer && invalid_nvs != 0 => self.violations.push(
                format!("node {node}: honest NEW-VIEW of node {signer:?} counted invalid"),
            ),
            _ => {}
        }
    }
}

fn as_pp(sm: &SignedMessage) -> Option<&PrePrepare> {
    match &sm.message {
        Message::PrePrepare(pp) => Some(pp),
        _ => None,
    }
}

/// Distinct request indices in `0..requests`, `count` of them at most.
pub fn choose_censored(r: &mut impl Rng, requests: usize, count: usize) -> Vec<usize> {
    let mut set = BTreeSet::new();
    while set.len() < count.min(requests) {
        set.insert(r.gen_range(0..requests));
    }
    set.into_iter().collect()
}
