//! Focused, hand-driven protocol scenarios on a tiny synchronous harness.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{
    Action, Config, Digest, Input, Message, NewView, Payload, PersistentState, PrePrepare,
    RejectReason, Replica, ReplicaIndex, SignedMessage, TimerId, ValidatorSet, ViewChange, Vote,
};
use sha2::{Digest as _, Sha256};

#[path = "sim/verdict.rs"]
mod verdict;

type Filter = Box<dyn FnMut(usize, usize, &SignedMessage) -> bool>;

struct Cluster {
    vset: ValidatorSet,
    keys: Vec<SigningKey>,
    cfg: Config,
    reps: Vec<Replica>,
    queue: VecDeque<(usize, usize, SignedMessage)>,
    inputs: VecDeque<(usize, Input)>,
    commits: Vec<Vec<(u64, Digest)>>,
    /// (view of the commit certificate, proposer named by the payload) of
    /// each commit, in order.
    committed_in: Vec<Vec<(u64, ReplicaIndex)>>,
    roots: Vec<(Digest, Digest)>,
    timers: Vec<BTreeSet<TimerId>>,
    fetches: Vec<Vec<u64>>,
    rejected: Vec<RejectReason>,
    /// Return false to drop a message (from, to, msg).
    filter: Filter,
    /// Messages captured instead of delivered when `capture` says so.
    captured: Vec<(usize, usize, SignedMessage)>,
    capture: Filter,
    /// Simulated time: timers armed now are due at `clock + after_ms`
    /// (only tests that call [`Cluster::advance`] let time pass).
    clock: u64,
    deadlines: Vec<BTreeMap<TimerId, u64>>,
}

fn cfg(k: u64, window: u64) -> Config {
    Config {
        checkpoint_interval: k,
        window,
        request_timeout_ms: 100,
        view_change_timeout_ms: 100,
        max_backoff_exponent: 3,
    }
}

fn payload(tag: &str) -> Payload {
    Payload {
        timestamp_ms: 1,
        proposer: 0,
        txs: vec![tag.as_bytes().to_vec()].into(),
    }
}

fn h2(a: &[u8], b: &[u8]) -> Digest {
    Sha256::new()
        .chain_update(a)
        .chain_update(b)
        .finalize()
        .into()
}

impl Cluster {
    fn new(n: usize, cfg: Config) -> Self {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let pks: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let vset = ValidatorSet::new(&pks).unwrap();
        let reps = (0..n)
            .map(|i| {
                Replica::new(
                    cfg.clone(),
                    vset.clone(),
                    i as ReplicaIndex,
                    keys[i].clone(),
                )
                .unwrap()
            })
            .collect();
        Cluster {
            vset,
            keys,
            cfg,
            reps,
            queue: VecDeque::new(),
            inputs: VecDeque::new(),
            commits: vec![Vec::new(); n],
            committed_in: vec![Vec::new(); n],
            roots: vec![([0; 32], [0; 32]); n],
            timers: vec![BTreeSet::new(); n],
            fetches: vec![Vec::new(); n],
            rejected: Vec::new(),
            filter: Box::new(|_, _, _| true),
            captured: Vec::new(),
            capture: Box::new(|_, _, _| false),
            clock: 0,
            deadlines: vec![BTreeMap::new(); n],
        }
    }

    fn n(&self) -> usize {
        self.reps.len()
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Broadcast(m) => {
                    for j in 0..self.n() {
                        if j != i {
                            self.queue.push_back((i, j, m.clone()));
                        }
                    }
                }
                Action::Send { to, msg } => self.queue.push_back((i, to as usize, msg)),
                Action::ValidatePayload {
                    seq,
                    view,
                    digest,
                    payload,
                } => {
                    // This harness refuses only marked transactions.
                    let input = verdict::payload_verdict(seq, view, digest, &payload, |_| false);
                    self.inputs.push_back((i, input));
                }
                Action::Commit {
                    seq,
                    payload,
                    certificate,
                    ..
                } => {
                    assert_eq!(seq, self.commits[i].len() as u64 + 1, "in order");
                    assert!(certificate.verify(&self.vset));
                    let d = payload.digest();
                    assert_eq!(certificate.digest, d);
                    self.commits[i].push((seq, d));
                    self.committed_in[i].push((certificate.view, payload.proposer));
                    let (root, bh) = self.roots[i];
                    self.roots[i] = (h2(&root, &d), h2(&bh, &d));
                    let (state_root, block_hash) = self.roots[i];
                    self.inputs.push_back((
                        i,
                        Input::Executed {
                            seq,
                            state_root,
                            block_hash,
                        },
                    ));
                }
                Action::SetTimer { id, after_ms } => {
                    self.timers[i].insert(id);
                    self.deadlines[i].insert(id, self.clock + after_ms);
                }
                Action::CancelTimer { id } => {
                    self.timers[i].remove(&id);
                    self.deadlines[i].remove(&id);
                }
                Action::FetchState { target_seq, .. } => self.fetches[i].push(target_seq),
                Action::ProposalRejected { reason, .. } => self.rejected.push(reason),
                Action::ViewChanged { .. } | Action::CheckpointStable { .. } => {}
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        let a = self.reps[i].step(input);
        self.apply(i, a);
    }

    fn propose(&mut self, i: usize, tag: &str) {
        self.input(
            i,
            Input::Propose {
                payload: payload(tag),
            },
        );
    }

    fn fire(&mut self, i: usize, id: TimerId) {
        self.timers[i].remove(&id);
        self.deadlines[i].remove(&id);
        self.input(i, Input::TimerFired(id));
    }

    /// When replica `i`'s timer `id` is due (None: not armed).
    fn deadline(&self, i: usize, id: TimerId) -> Option<u64> {
        self.deadlines[i].get(&id).copied()
    }

    /// Lets time pass until `t`: every timer due by then fires, earliest
    /// first, and the cluster runs to quiescence after each.
    fn advance(&mut self, t: u64) {
        loop {
            let due = (0..self.n())
                .flat_map(|i| self.deadlines[i].iter().map(move |(id, d)| (*d, i, *id)))
                .filter(|(d, _, _)| *d <= t)
                .min();
            let Some((d, i, id)) = due else {
                break;
            };
            self.clock = d;
            self.fire(i, id);
            self.run();
        }
        self.clock = t;
    }

    /// Deliver everything until quiet.
    fn run(&mut self) {
        self.run_holding(|_, _| false);
    }

    /// [`Cluster::run`], except that the node inputs `hold` picks (replica,
    /// input) are not delivered but returned, in order.
    fn run_holding(&mut self, mut hold: impl FnMut(usize, &Input) -> bool) -> Vec<Input> {
        let mut held = Vec::new();
        for _ in 0..1_000_000 {
            if let Some((i, inp)) = self.inputs.pop_front() {
                if hold(i, &inp) {
                    held.push(inp);
                } else {
                    self.input(i, inp);
                }
            } else if let Some((from, to, m)) = self.queue.pop_front() {
                if (self.capture)(from, to, &m) {
                    self.captured.push((from, to, m));
                } else if (self.filter)(from, to, &m) {
                    self.input(
                        to,
                        Input::Message {
                            from: from as ReplicaIndex,
                            msg: m,
                        },
                    );
                }
            } else {
                return held;
            }
        }
        panic!("did not quiesce");
    }

    fn sign(&self, i: usize, m: Message) -> SignedMessage {
        SignedMessage::sign(&self.vset, i as ReplicaIndex, &self.keys[i], m)
    }
}

#[test]
fn single_replica_commits_immediately() {
    let mut c = Cluster::new(1, cfg(2, 4));
    c.propose(0, "a");
    assert_eq!(c.commits[0].len(), 1);
    c.run();
    c.propose(0, "b");
    c.run();
    assert_eq!(c.commits[0].len(), 2);
    assert_eq!(c.reps[0].status().stable_checkpoint, 2);
}

#[test]
fn normal_case_four_replicas_pipelined() {
    let mut c = Cluster::new(4, cfg(4, 8));
    for k in 0..6 {
        c.propose(0, &format!("tx{k}"));
    }
    c.run();
    for i in 0..4 {
        assert_eq!(c.commits[i].len(), 6, "replica {i}");
        assert_eq!(c.commits[i], c.commits[0]);
        assert_eq!(c.reps[i].status().last_committed, 6);
    }
    // Backups ignore proposals.
    c.propose(2, "nope");
    assert_eq!(c.rejected, vec![RejectReason::NotPrimary]);
}

#[test]
fn checkpoints_collect_garbage_and_window_limits_proposals() {
    let mut c = Cluster::new(4, cfg(2, 4));
    for k in 0..5 {
        c.propose(0, &format!("tx{k}"));
    }
    assert_eq!(c.rejected, vec![RejectReason::WindowFull]);
    c.run();
    for i in 0..4 {
        let st = c.reps[i].status();
        assert_eq!(st.last_committed, 4);
        assert_eq!(st.stable_checkpoint, 4);
        assert_eq!(st.high_watermark, 8);
        let ps = c.reps[i].persistent_state();
        assert!(ps.slots.keys().all(|s| *s > 4), "log garbage-collected");
    }
    c.propose(0, "tx4");
    c.run();
    assert!(c.commits.iter().all(|l| l.len() == 5));
}

/// Replica 0 (primary) dies after seq 1 prepared everywhere but commits
/// were lost; the backups time out, elect replica 1 and finish seq 1 with
/// the same payload before new work.
#[test]
fn view_change_after_primary_crash_keeps_prepared_request() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.filter = Box::new(|_, _, m| !matches!(m.message, Message::Commit(_)));
    c.propose(0, "a");
    c.run();
    assert!(c.commits.iter().all(|l| l.is_empty()));
    let expected = payload("a").digest();
    c.filter = Box::new(|from, to, _| from != 0 && to != 0);
    for i in 1..4 {
        c.input(i, Input::RequestsPending(true));
        assert!(c.timers[i].contains(&TimerId::Request));
        c.fire(i, TimerId::Request);
    }
    c.run();
    for i in 1..4 {
        let st = c.reps[i].status();
        assert_eq!((st.view, st.primary), (1, 1));
        assert!(!st.view_change_in_progress);
        assert_eq!(c.commits[i], vec![(1, expected)]);
    }
    c.propose(1, "b");
    c.run();
    for i in 1..4 {
        assert_eq!(c.commits[i].len(), 2);
    }
}

/// A payload can commit at one height in the old view at one replica and,
/// re-issued by the next primary, in the new view at the others. What they
/// commit must still be the same payload naming one proposer: the ledger
/// puts the proposer in the block header, and a header naming the primary
/// of the commit view gave the replicas different blocks at one height.
#[test]
fn a_payload_committed_in_two_views_names_one_proposer() {
    let mut c = Cluster::new(4, cfg(4, 8));
    // Only the primary receives COMMITs: it commits height 1 in view 0.
    c.filter = Box::new(|_, to, m| !matches!(m.message, Message::Commit(_)) || to == 0);
    c.propose(0, "a");
    c.run();
    assert_eq!(c.committed_in[0], vec![(0, 0)]);
    assert!(c.commits[1..].iter().all(|l| l.is_empty()));
    // The primary is lost; the others commit the same height in view 1.
    c.filter = Box::new(|from, to, _| from != 0 && to != 0);
    for i in 1..4 {
        c.input(i, Input::RequestsPending(true));
        c.fire(i, TimerId::Request);
    }
    c.run();
    for i in 1..4 {
        assert_eq!(c.committed_in[i], vec![(1, 0)], "replica {i}");
        assert_eq!(c.commits[i], c.commits[0], "replica {i}");
    }
}

/// A fresh PRE-PREPARE must name its signer, the primary, as proposer.
#[test]
fn a_proposal_naming_another_proposer_is_refused() {
    let mut c = Cluster::new(4, cfg(4, 8));
    let mut p = payload("x");
    p.proposer = 2;
    let pp = c.sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest: p.digest(),
            payload: p,
        }),
    );
    let before = c.reps[1].stats().malformed;
    c.input(1, Input::Message { from: 0, msg: pp });
    assert_eq!(c.reps[1].stats().malformed, before + 1);
    assert!(c.queue.is_empty(), "no PREPARE for it");
    // The primary's own proposals name it, whatever the node put there.
    c.propose(0, "y");
    c.run();
    assert!(c.committed_in.iter().all(|l| l == &vec![(0, 0)]));
}

/// Moves replicas 1..3 into view 1 while capturing the NEW-VIEW.
fn captured_new_view(c: &mut Cluster) -> (SignedMessage, NewView) {
    c.filter = Box::new(|_, _, m| !matches!(m.message, Message::Commit(_)));
    c.propose(0, "a");
    c.run();
    c.filter = Box::new(|from, to, _| from != 0 && to != 0);
    c.capture = Box::new(|_, _, m| matches!(m.message, Message::NewView(_)));
    for i in 1..4 {
        c.fire(i, TimerId::Request);
    }
    c.run();
    let (_, _, sm) = c
        .captured
        .iter()
        .find(|(_, to, _)| *to == 2)
        .cloned()
        .unwrap();
    let Message::NewView(nv) = sm.message.clone() else {
        unreachable!()
    };
    (sm, nv)
}

#[test]
fn new_view_with_forged_o_set_is_rejected() {
    let mut c = Cluster::new(4, cfg(4, 8));
    let (_, mut nv) = captured_new_view(&mut c);
    assert_eq!(nv.pre_prepares.len(), 1, "O re-issues the prepared request");
    // The (byzantine) new primary swaps in another payload, properly signed.
    let evil = payload("evil");
    nv.pre_prepares = vec![c.sign(
        1,
        Message::PrePrepare(PrePrepare {
            view: 1,
            seq: 1,
            digest: evil.digest(),
            payload: evil,
        }),
    )];
    let forged = c.sign(1, Message::NewView(nv.clone()));
    c.capture = Box::new(|_, _, _| false);
    c.input(
        2,
        Input::Message {
            from: 1,
            msg: forged,
        },
    );
    assert_eq!(c.reps[2].stats().invalid_new_views, 1);
    let st = c.reps[2].status();
    assert_eq!(st.view, 2, "forged NEW-VIEW convicts the primary");
    assert!(st.view_change_in_progress);

    // Dropping the request from O (a null instead) is rejected as well.
    let mut c = Cluster::new(4, cfg(4, 8));
    let (_, mut nv) = captured_new_view(&mut c);
    let null = Payload::null();
    nv.pre_prepares = vec![c.sign(
        1,
        Message::PrePrepare(PrePrepare {
            view: 1,
            seq: 1,
            digest: null.digest(),
            payload: null,
        }),
    )];
    let forged = c.sign(1, Message::NewView(nv));
    c.input(
        3,
        Input::Message {
            from: 1,
            msg: forged,
        },
    );
    assert_eq!(c.reps[3].stats().invalid_new_views, 1);
}

#[test]
fn genuine_new_view_is_accepted_even_when_relayed() {
    let mut c = Cluster::new(4, cfg(4, 8));
    let (sm, _) = captured_new_view(&mut c);
    // Relayed by replica 3 rather than sent by the primary itself.
    c.input(2, Input::Message { from: 3, msg: sm });
    let st = c.reps[2].status();
    assert_eq!((st.view, st.view_change_in_progress), (1, false));
}

#[test]
fn equivocating_primary_is_detected_and_never_prepares_both() {
    let mut c = Cluster::new(4, cfg(4, 8));
    let a = payload("A");
    let b = payload("B");
    let pp = |p: &Payload| {
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest: p.digest(),
            payload: p.clone(),
        })
    };
    let (ma, mb) = (c.sign(0, pp(&a)), c.sign(0, pp(&b)));
    c.input(
        1,
        Input::Message {
            from: 0,
            msg: ma.clone(),
        },
    );
    c.input(
        2,
        Input::Message {
            from: 0,
            msg: mb.clone(),
        },
    );
    c.input(3, Input::Message { from: 0, msg: mb });
    c.run();
    // B can prepare (pre-prepare + prepares of 2 and 3); A has a single
    // backup behind it and must never prepare or commit.
    for i in 0..4 {
        for (_, d) in &c.commits[i] {
            assert_ne!(*d, a.digest(), "A must not commit");
        }
    }
    // Replica 2 now also sees A: equivocation detected, view change.
    c.input(2, Input::Message { from: 0, msg: ma });
    assert_eq!(c.reps[2].stats().equivocations, 1);
    assert!(c.reps[2].status().view_change_in_progress);
}

#[test]
fn invalid_payload_triggers_view_change() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.propose(0, "invalid-batch");
    c.run();
    for i in 1..4 {
        assert_eq!(c.reps[i].stats().invalid_payloads, 1);
        assert!(c.reps[i].status().view >= 1);
    }
    assert!(c.commits.iter().all(|l| l.is_empty()));
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut c = Cluster::new(4, cfg(4, 8));
    let p = payload("x");
    let good = c.sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest: p.digest(),
            payload: p.clone(),
        }),
    );
    let mut bad_sig = good.clone();
    bad_sig.signature = vec![1, 2, 3];
    let r = &mut c.reps[1];
    assert!(r
        .step(Input::Message {
            from: 0,
            msg: bad_sig
        })
        .is_empty());
    assert!(r
        .step(Input::Message {
            from: 9,
            msg: good.clone()
        })
        .is_empty());
    assert!(r
        .step(Input::Message {
            from: 2,
            msg: good.clone()
        })
        .is_empty());
    let far = c.sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: u64::MAX,
            digest: p.digest(),
            payload: p.clone(),
        }),
    );
    let wrong_payload = c.sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 2,
            digest: [9; 32],
            payload: p,
        }),
    );
    let from_backup = c.sign(
        3,
        Message::Prepare(Vote {
            view: 7,
            seq: 0,
            digest: [0; 32],
        }),
    );
    let r = &mut c.reps[1];
    assert!(r.step(Input::Message { from: 0, msg: far }).is_empty());
    assert!(r
        .step(Input::Message {
            from: 0,
            msg: wrong_payload
        })
        .is_empty());
    let _ = r.step(Input::Message {
        from: 3,
        msg: from_backup,
    });
    let s = r.stats();
    assert_eq!(s.bad_signature, 1);
    assert_eq!(s.unknown_sender, 1);
    assert_eq!(s.wrong_sender, 1);
    assert_eq!(s.out_of_window, 1);
    assert_eq!(s.malformed, 1);
    // Stale-view/self/replayed junk never panics either.
    let _ = r.step(Input::Message { from: 1, msg: good });
    let _ = r.step(Input::TimerFired(TimerId::ViewChange));
    let _ = r.step(Input::StateTransferred {
        seq: 0,
        state_root: [0; 32],
        block_hash: [0; 32],
    });
}

#[test]
fn restart_from_persistent_state_never_votes_against_itself() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.filter = Box::new(|_, to, _| to == 1);
    c.propose(0, "a");
    c.run();
    let json = serde_json::to_string(&c.reps[1].persistent_state()).unwrap();
    let st: PersistentState = serde_json::from_str(&json).unwrap();
    let mut r =
        Replica::restore(c.cfg.clone(), c.vset.clone(), 1, c.keys[1].clone(), st, 0).unwrap();
    let _ = r.start();
    // The (equivocating) primary now offers another payload for (0, 1).
    let b = payload("b");
    let conflicting = c.sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest: b.digest(),
            payload: b,
        }),
    );
    let out = r.step(Input::Message {
        from: 0,
        msg: conflicting,
    });
    assert_eq!(r.stats().equivocations, 1);
    assert!(!out.iter().any(|a| matches!(a,
        Action::Broadcast(m) if matches!(&m.message, Message::Prepare(v) if v.seq == 1 && v.view == 0))));
}

#[test]
fn lagging_replica_fetches_state_from_checkpoint_certificate() {
    let mut c = Cluster::new(4, cfg(2, 4));
    c.filter = Box::new(|_, to, _| to != 3);
    for round in 0..3 {
        for k in 0..2 {
            c.propose(0, &format!("tx{round}{k}"));
        }
        c.run();
    }
    assert_eq!(c.reps[0].status().stable_checkpoint, 6);
    assert!(c.commits[3].is_empty());
    // Reconnect: replica 3 hears the checkpoints of seq 6 and is behind.
    c.filter = Box::new(|_, _, _| true);
    let mut cps = Vec::new();
    for i in 0..3 {
        let (root, bh) = c.roots[i];
        cps.push(c.sign(
            i,
            Message::Checkpoint(kubeledger_pbft::Checkpoint {
                seq: 6,
                state_root: root,
                block_hash: bh,
            }),
        ));
    }
    for (i, m) in cps.into_iter().enumerate() {
        c.input(
            3,
            Input::Message {
                from: i as ReplicaIndex,
                msg: m,
            },
        );
    }
    assert_eq!(c.fetches[3], vec![6]);
    assert_eq!(c.reps[3].status().state_transfer_target, Some(6));
    let (root, bh) = c.roots[0];
    c.input(
        3,
        Input::StateTransferred {
            seq: 6,
            state_root: root,
            block_hash: bh,
        },
    );
    let st = c.reps[3].status();
    assert_eq!(
        (
            st.last_committed,
            st.stable_checkpoint,
            st.state_transfer_target
        ),
        (6, 6, None)
    );
    // And it takes part in the next block.
    c.commits[3] = c.commits[0].clone();
    c.roots[3] = c.roots[0];
    c.propose(0, "after");
    c.run();
    assert_eq!(c.commits[3].len(), 7);
}

#[test]
fn config_and_identity_errors() {
    let c = Cluster::new(4, cfg(4, 8));
    let bad = Config {
        window: 2,
        ..cfg(4, 8)
    };
    assert!(Replica::new(bad, c.vset.clone(), 0, c.keys[0].clone()).is_err());
    assert!(Replica::new(cfg(4, 8), c.vset.clone(), 7, c.keys[0].clone()).is_err());
    assert!(Replica::new(cfg(4, 8), c.vset.clone(), 1, c.keys[0].clone()).is_err());
    assert!(ValidatorSet::new(&[]).is_err());
}

#[test]
fn changed_timeouts_apply_to_the_next_timer_armed() {
    let c = Cluster::new(4, cfg(4, 8));
    let mut backup = Replica::new(cfg(4, 8), c.vset.clone(), 1, c.keys[1].clone()).unwrap();
    let timer_after = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::SetTimer {
                id: TimerId::Request,
                after_ms,
            } => Some(*after_ms),
            _ => None,
        })
    };
    assert_eq!(
        timer_after(&backup.step(Input::RequestsPending(true))),
        Some(100)
    );
    backup.set_timeouts(700, 900);
    assert_eq!(backup.config().request_timeout_ms, 700);
    assert_eq!(backup.config().view_change_timeout_ms, 900);
    // The running timer keeps its deadline; once it fires and the replica
    // arms timers again, the new values are used.
    let vc = backup.step(Input::TimerFired(TimerId::Request));
    assert!(vc.iter().any(|a| matches!(
        a,
        Action::SetTimer {
            id: TimerId::ViewChange,
            after_ms: 900
        }
    )));
}

#[test]
fn restart_reports_the_tip_again_so_the_epoch_end_checkpoint_is_signed() {
    // Epoch ends at 2; replica 3 is down; replica 2 executes block 2 and
    // crashes before reporting it, so it never signs CHECKPOINT 2.
    let mut c = Cluster::new(4, cfg(2, 2));
    for r in c.reps.iter_mut() {
        r.set_epoch_end(2);
    }
    c.filter = Box::new(|_, to, _| to != 3);
    c.propose(0, "a");
    c.propose(0, "b");
    c.run_holding(|i, inp| i == 2 && matches!(inp, Input::Executed { seq: 2, .. }));
    assert_eq!(c.commits[2].len(), 2);
    assert!(c.reps.iter().all(|r| !r.epoch_complete()));

    let st = c.reps[2].persistent_state();
    let mut r = Replica::restore(c.cfg.clone(), c.vset.clone(), 2, c.keys[2].clone(), st, 2)
        .expect("restore");
    r.set_epoch_end(2);
    c.reps[2] = r;
    let out = c.reps[2].start();
    c.apply(2, out);
    c.run();
    assert!(
        c.reps.iter().all(|r| !r.epoch_complete()),
        "no quorum of CHECKPOINT 2 without replica 2's"
    );

    let (state_root, block_hash) = c.roots[2];
    c.input(
        2,
        Input::Executed {
            seq: 2,
            state_root,
            block_hash,
        },
    );
    c.run();
    assert!(c.reps[0].epoch_complete() && c.reps[1].epoch_complete());
    // Replica 2 lost the others' CHECKPOINTs in the crash: it asks a peer
    // for the certificate of the epoch end.
    let proof = c.reps[0].persistent().stable.proof.clone();
    c.input(2, Input::StableCertificate(proof));
    assert!(c.reps[2].epoch_complete());
}

#[test]
fn view_change_brings_the_stable_certificate_to_a_replica_whose_window_is_stuck() {
    // Replica 3 loses every CHECKPOINT: it commits through 8 with its
    // stable checkpoint still 0, so its window ends at 8 and block 9 does
    // not fit. Its VIEW-CHANGE says it committed as far as the others did
    // before 9; they must still send the stable certificate of 8.
    let mut c = Cluster::new(4, cfg(4, 8));
    c.filter = Box::new(|_, to, m| !(to == 3 && matches!(m.message, Message::Checkpoint(_))));
    for k in 0..8 {
        c.propose(0, &format!("tx{k}"));
    }
    c.run();
    assert_eq!(c.commits[3].len(), 8);
    assert_eq!(c.reps[3].status().stable_checkpoint, 0);
    assert_eq!(c.reps[0].status().stable_checkpoint, 8);
    // Replicas 0..2 commit 9 without it.
    c.filter = Box::new(|_, to, _| to != 3);
    c.propose(0, "tx8");
    c.run();
    assert_eq!(c.commits[0].len(), 9);
    c.filter = Box::new(|_, _, _| true);
    c.input(3, Input::RequestsPending(true));
    c.fire(3, TimerId::Request);
    c.run();
    assert_eq!(c.reps[3].status().stable_checkpoint, 8);
    assert_eq!(c.commits[3].len(), 9);
}

/// A backup that has committed blocks but not yet executed them is behind on
/// its own work, not waiting on the primary: each block it executes restarts
/// its request timer, and only a block it had already executed does not.
#[test]
fn executing_a_backlog_restarts_the_request_timer() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.input(1, Input::RequestsPending(true));
    c.propose(0, "a");
    c.propose(0, "b");
    // Deliver everything, but hold back replica 1's executions.
    let held = c.run_holding(|i, inp| i == 1 && matches!(inp, Input::Executed { .. }));
    assert_eq!(c.commits[1].len(), 2);
    assert_eq!(held.len(), 2);
    let restarts = |actions: &[Action]| {
        actions.iter().any(|a| {
            matches!(
                a,
                Action::SetTimer {
                    id: TimerId::Request,
                    after_ms: 100
                }
            )
        })
    };
    let again = held[0].clone();
    for inp in held {
        let out = c.reps[1].step(inp);
        assert!(restarts(&out), "an executed block restarts the timer");
    }
    let out = c.reps[1].step(again);
    assert!(!restarts(&out), "re-reporting an old block is no progress");
    // With nothing pending any more, the timer stops.
    let out = c.reps[1].step(Input::RequestsPending(false));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::CancelTimer {
            id: TimerId::Request
        }
    )));
}

/// Each view change doubles the request timeout (at most twice), so blocks
/// that take longer than the configured timeout do not make every new
/// primary fail the same way; each checkpoint interval committed in one view
/// gives one doubling back.
#[test]
fn view_changes_stretch_the_request_timeout_and_calm_intervals_restore_it() {
    fn timeout(c: &Cluster, i: usize) -> u64 {
        c.reps[i].status().request_timeout_ms
    }
    /// The replicas outside `silent` time out on their primary.
    fn depose(c: &mut Cluster, silent: &'static [usize]) {
        c.filter = Box::new(move |from, to, _| !silent.contains(&from) && !silent.contains(&to));
        for i in (0..c.n()).filter(|i| !silent.contains(i)) {
            c.input(i, Input::RequestsPending(true));
            c.fire(i, TimerId::Request);
        }
        c.run();
    }

    let mut c = Cluster::new(7, cfg(2, 4));
    assert_eq!(timeout(&c, 3), 100);
    depose(&mut c, &[0]);
    assert_eq!(c.reps[3].status().view, 1);
    assert_eq!(timeout(&c, 3), 200, "one view change: twice the timeout");
    // The timer a backup arms in the new view runs for the longer timeout.
    let out = c.reps[3].step(Input::RequestsPending(false));
    assert!(out.iter().any(|a| matches!(a, Action::CancelTimer { .. })));
    let out = c.reps[3].step(Input::RequestsPending(true));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::SetTimer {
            id: TimerId::Request,
            after_ms: 200
        }
    )));
    depose(&mut c, &[0, 1]);
    assert_eq!(c.reps[3].status().view, 2);
    assert_eq!(timeout(&c, 3), 400, "two view changes: four times");
    // A third (which cannot complete: too few replicas left) stays capped.
    depose(&mut c, &[0, 1, 2]);
    assert!(c.reps[3].status().view_change_in_progress);
    assert_eq!(timeout(&c, 3), 400, "capped at four times");

    // A consortium calm again gives the doublings back.
    let mut c = Cluster::new(4, cfg(2, 4));
    depose(&mut c, &[0]);
    assert_eq!(timeout(&c, 2), 200);
    // The first stable checkpoint in view 1 only marks the view calm...
    c.propose(1, "a");
    c.propose(1, "b");
    c.run();
    assert_eq!(c.reps[2].status().stable_checkpoint, 2);
    assert_eq!(timeout(&c, 2), 200);
    // ...a whole interval committed in it gives the doubling back.
    c.propose(1, "c");
    c.propose(1, "d");
    c.run();
    assert_eq!(c.reps[2].status().stable_checkpoint, 4);
    assert_eq!(timeout(&c, 2), 100);
}

/// Committed blocks `actions` send to replica `to`.
fn catch_up_sent_to(actions: &[Action], to: ReplicaIndex) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(a, Action::Send { to: t, msg }
                if *t == to && matches!(msg.message, Message::Committed { .. }))
        })
        .count()
}

#[test]
fn a_replayed_view_change_gets_no_catch_up_twice() {
    // Replica 3 misses blocks 1..=3; the others commit them.
    let mut c = Cluster::new(4, cfg(10, 20));
    c.filter = Box::new(|_, to, _| to != 3);
    for k in 0..3 {
        c.propose(0, &format!("tx{k}"));
    }
    c.run();
    assert_eq!(c.commits[0].len(), 3);
    let view_change = |c: &Cluster, new_view| {
        c.sign(
            3,
            Message::ViewChange(ViewChange {
                new_view,
                stable_seq: 0,
                checkpoint_proof: Vec::new(),
                prepared: Vec::new(),
                last_committed: 0,
            }),
        )
    };
    let vc = view_change(&c, 1);
    let deliver = |c: &mut Cluster, msg: &SignedMessage| {
        c.reps[0].step(Input::Message {
            from: 3,
            msg: msg.clone(),
        })
    };
    // The first VIEW-CHANGE brings the three blocks it lacks.
    assert_eq!(catch_up_sent_to(&deliver(&mut c, &vc), 3), 3);
    // Replayed, it costs nothing: no block signed or sent again.
    for _ in 0..5 {
        assert_eq!(catch_up_sent_to(&deliver(&mut c, &vc), 3), 0);
    }
    // Blocks committed since are still sent once, even on a replay.
    c.propose(0, "tx3");
    c.run();
    assert_eq!(c.commits[0].len(), 4);
    assert_eq!(catch_up_sent_to(&deliver(&mut c, &vc), 3), 1);
    assert_eq!(catch_up_sent_to(&deliver(&mut c, &vc), 3), 0);
    // A VIEW-CHANGE for a higher view, which only replica 3 can sign, starts
    // over from what it says it has (earlier catch-up may have been lost).
    let higher = view_change(&c, 2);
    assert_eq!(catch_up_sent_to(&deliver(&mut c, &higher), 3), 4);
    assert_eq!(catch_up_sent_to(&deliver(&mut c, &higher), 3), 0);
}

/// Replica 0 (primary) orders one block every 30 ms from t = `from` on,
/// while time runs to `until`.
fn keep_committing(c: &mut Cluster, from: u64, until: u64, tag: &str) {
    let mut t = from;
    while t <= until {
        c.advance(t);
        c.propose(0, &format!("{tag}{t}"));
        c.run();
        t += 30;
    }
    c.advance(until);
}

/// A primary that keeps the chain moving but leaves one request out: the
/// request timer, restarted by every commit, never fires; the censorship
/// timer, which commits do not restart, does.
#[test]
fn a_backup_replaces_a_primary_that_keeps_leaving_a_request_out() {
    let mut c = Cluster::new(4, cfg(4, 8));
    for i in 1..4 {
        c.input(i, Input::RequestsPending(true));
    }
    c.input(1, Input::Overlooked(Some(7)));
    assert_eq!(c.deadline(1, TimerId::Censorship), Some(100));
    keep_committing(&mut c, 10, 99, "other");
    assert!(c.commits[1].len() >= 3, "the primary makes progress");
    assert_eq!(
        c.deadline(1, TimerId::Censorship),
        Some(100),
        "commits do not restart the censorship timer"
    );
    assert!(c.deadline(1, TimerId::Request).unwrap() > 100);
    assert!(!c.reps[1].status().view_change_in_progress);
    c.advance(100);
    let st = c.reps[1].status();
    assert!(
        st.view_change_in_progress,
        "the backup suspects the primary"
    );
    assert_eq!(st.view, 1);
    assert_eq!(c.reps[1].stats().censorship_suspected, 1);
    // The backups that were not told of an overlooked request, whose
    // request timers every commit restarted, carry on in view 0.
    for i in 2..4 {
        let st = c.reps[i].status();
        assert_eq!((st.view, st.view_change_in_progress), (0, false));
        assert_eq!(c.reps[i].stats().censorship_suspected, 0);
    }
}

/// The watched request was ordered and the node reports the next one: the
/// timer starts over, so the old deadline passes without a view change.
#[test]
fn a_new_overlooked_ticket_restarts_the_censorship_timer() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.input(2, Input::Overlooked(Some(7)));
    assert_eq!(c.deadline(2, TimerId::Censorship), Some(100));
    c.advance(60);
    c.propose(0, "ticket-7");
    c.run();
    c.input(2, Input::Overlooked(Some(8)));
    assert_eq!(c.deadline(2, TimerId::Censorship), Some(160));
    // Reporting the same ticket again is no change.
    c.advance(70);
    c.input(2, Input::Overlooked(Some(8)));
    assert_eq!(c.deadline(2, TimerId::Censorship), Some(160));
    c.advance(159);
    assert!(!c.reps[2].status().view_change_in_progress);
    assert_eq!(c.reps[2].stats().censorship_suspected, 0);
    c.advance(160);
    assert!(c.reps[2].status().view_change_in_progress);
    assert_eq!(c.reps[2].stats().censorship_suspected, 1);
}

#[test]
fn no_overlooked_request_cancels_the_censorship_timer() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.input(3, Input::Overlooked(Some(7)));
    assert_eq!(c.deadline(3, TimerId::Censorship), Some(100));
    c.advance(50);
    c.input(3, Input::Overlooked(None));
    assert_eq!(c.deadline(3, TimerId::Censorship), None);
    c.advance(1_000);
    // A late fire the node failed to suppress changes nothing either.
    c.input(3, Input::TimerFired(TimerId::Censorship));
    let st = c.reps[3].status();
    assert_eq!((st.view, st.view_change_in_progress), (0, false));
    assert_eq!(c.reps[3].stats().censorship_suspected, 0);
}

#[test]
fn the_primary_does_not_suspect_itself_of_censorship() {
    let mut c = Cluster::new(4, cfg(4, 8));
    c.input(0, Input::Overlooked(Some(7)));
    assert_eq!(c.deadline(0, TimerId::Censorship), None);
    c.input(0, Input::TimerFired(TimerId::Censorship));
    c.advance(1_000);
    let st = c.reps[0].status();
    assert_eq!((st.view, st.view_change_in_progress), (0, false));
    assert_eq!(c.reps[0].stats().censorship_suspected, 0);
}

/// Each new primary gets a full (patience-scaled) timeout for a request
/// still overlooked, the deposed primary starts watching as a backup, and
/// during a view change the censorship timer stays out of the way.
#[test]
fn a_new_view_rearms_the_censorship_timer() {
    let mut c = Cluster::new(4, cfg(4, 8));
    for i in 0..4 {
        c.input(i, Input::Overlooked(Some(7)));
    }
    assert_eq!(c.deadline(0, TimerId::Censorship), None);
    c.advance(100);
    for i in 0..4 {
        let st = c.reps[i].status();
        assert_eq!((st.view, st.view_change_in_progress), (1, false), "{i}");
    }
    assert_eq!(c.reps[1].status().request_timeout_ms, 200);
    assert_eq!(c.deadline(1, TimerId::Censorship), None, "the new primary");
    for i in [0, 2, 3] {
        assert_eq!(c.deadline(i, TimerId::Censorship), Some(300), "{i}");
    }
    // The new primary does not order the request either: it is replaced in
    // turn, one (longer) timeout later.
    c.advance(299);
    assert_eq!(c.reps[2].status().view, 1);
    c.advance(300);
    assert_eq!(c.reps[2].status().view, 2);
    assert!(c.reps[2].stats().censorship_suspected >= 1);

    // While a view change is in progress (here: one that cannot complete,
    // replica 3 alone), the censorship timer does not escalate it.
    let mut c = Cluster::new(4, cfg(4, 8));
    c.filter = Box::new(|from, _, _| from != 3);
    c.input(3, Input::Overlooked(Some(7)));
    c.input(3, Input::RequestsPending(true));
    c.fire(3, TimerId::Request);
    assert!(c.reps[3].status().view_change_in_progress);
    assert_eq!(c.deadline(3, TimerId::Censorship), None);
    c.input(3, Input::Overlooked(Some(8)));
    assert_eq!(c.deadline(3, TimerId::Censorship), None);
    c.input(3, Input::TimerFired(TimerId::Censorship));
    assert_eq!(c.reps[3].status().view, 1);
    assert_eq!(c.reps[3].stats().censorship_suspected, 0);
}

/// Replica 3 asks for a view change while far behind an idle cluster. Its
/// peers answer with the stable certificate of 4 and block 5; the
/// certificate starts a state transfer, and block 5, arriving during it, is
/// outside its window and dropped. Once the transfer is done, retransmitting
/// the VIEW-CHANGE it signed before would look like a replay and get
/// nothing: it re-signs it with its progress, and the peers answer again.
#[test]
fn catch_up_dropped_during_a_state_transfer_is_asked_for_again() {
    let mut c = Cluster::new(4, cfg(2, 4));
    c.filter = Box::new(|_, to, _| to != 3);
    for k in 0..5 {
        c.propose(0, &format!("tx{k}"));
        c.run();
    }
    assert_eq!(c.reps[0].status().stable_checkpoint, 4);
    assert_eq!(c.commits[0].len(), 5);
    c.filter = Box::new(|_, _, _| true);
    c.input(3, Input::RequestsPending(true));
    c.fire(3, TimerId::Request);
    c.run();
    let st = c.reps[3].status();
    assert!(st.view_change_in_progress);
    assert_eq!(c.fetches[3], vec![4]);
    assert_eq!(st.last_committed, 0);
    assert!(c.reps[3].stats().out_of_window > 0, "block 5 was dropped");
    // The node fetched blocks 1..=4 and reports the state.
    let (mut state_root, mut block_hash) = ([0; 32], [0; 32]);
    for (_, d) in &c.commits[0][..4] {
        (state_root, block_hash) = (h2(&state_root, d), h2(&block_hash, d));
    }
    c.input(
        3,
        Input::StateTransferred {
            seq: 4,
            state_root,
            block_hash,
        },
    );
    c.commits[3] = c.commits[0][..4].to_vec();
    c.roots[3] = (state_root, block_hash);
    c.run();
    assert_eq!(c.reps[3].status().last_committed, 4);
    // Its VIEW-CHANGE retransmission brings block 5.
    c.fire(3, TimerId::ViewChange);
    c.run();
    let st = c.reps[3].status();
    assert_eq!((st.stable_checkpoint, st.last_committed), (4, 5));
    assert_eq!(c.commits[3], c.commits[0]);
    assert!(st.view_change_in_progress, "nobody else wants view 1");
}

/// K = 2, L = 4. Replica 3 loses every CHECKPOINT, so its stable checkpoint
/// stays 0 while it executes 1..=3; then it learns the certificate of 4 and
/// fetches the state. While fetching, its window runs from 4 and it
/// prepares 5..=7. A VIEW-CHANGE it signs now must be one its peers accept:
/// it claims the checkpoint it is fetching (its certificates reach past
/// 0 + L), not its old stable one.
#[test]
fn a_view_change_signed_while_fetching_state_is_valid() {
    let mut c = Cluster::new(4, cfg(2, 4));
    c.filter = Box::new(|_, to, m| !(to == 3 && matches!(m.message, Message::Checkpoint(_))));
    for k in 0..3 {
        c.propose(0, &format!("tx{k}"));
        c.run();
    }
    c.filter = Box::new(|_, to, _| to != 3);
    c.propose(0, "tx3");
    c.run();
    assert_eq!(c.reps[0].status().stable_checkpoint, 4);
    let proof = c.reps[0].persistent().stable.proof.clone();
    c.input(3, Input::StableCertificate(proof));
    let st = c.reps[3].status();
    assert_eq!((st.stable_checkpoint, st.last_committed), (0, 3));
    assert_eq!(st.state_transfer_target, Some(4));
    // The fetch is slow; blocks 5..=7 are ordered with replica 3.
    c.filter = Box::new(|_, _, _| true);
    for k in 4..7 {
        c.propose(0, &format!("tx{k}"));
    }
    c.run();
    let prepared = |c: &Cluster| {
        c.reps[3]
            .persistent()
            .slots
            .iter()
            .filter(|(_, s)| s.prepared.is_some())
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
    };
    assert!(prepared(&c).contains(&7), "prepared past 0 + L");
    // Replicas 1 and 2 time out; replica 3 joins their view change.
    c.capture = Box::new(|from, _, m| from == 3 && matches!(m.message, Message::ViewChange(_)));
    for i in 1..3 {
        c.input(i, Input::RequestsPending(true));
        c.fire(i, TimerId::Request);
    }
    c.run();
    let (_, _, vc) = c.captured.first().cloned().expect("replica 3 joined");
    let Message::ViewChange(body) = &vc.message else {
        unreachable!()
    };
    for i in 0..3 {
        let before = c.reps[i].stats().invalid_view_changes;
        let _ = c.reps[i].step(Input::Message {
            from: 3,
            msg: vc.clone(),
        });
        assert_eq!(
            c.reps[i].stats().invalid_view_changes,
            before,
            "replica {i}"
        );
    }
    // The checkpoint being fetched (4, or 6 by the time 5..=7 committed).
    assert!(body.stable_seq >= 4, "claims {}", body.stable_seq);
}
