//! Decides which validators to restart now: a pure function of their
//! assessments, their restart history and the time.
//!
//! Rules, in the order they are checked for each node that needs a restart:
//!
//! 1. healing must be enabled (a corrupt replica also needs
//!    `rebuildCorruptReplicas`);
//! 2. **hourly cap**: at most `maxRestartsPerHour` restarts of one node in any
//!    hour; past it the node is left alone (its Member is marked Degraded);
//! 3. **back-off**: after the k-th restart within the hour the next waits
//!    `restartBackoff · 2^(k-1)` (at most an hour);
//! 4. **observer check**: when no validator answered at all, the operator may
//!    be the one cut off, so nothing is restarted;
//! 5. **quorum guard**: with n validators and f = ⌊(n−1)/3⌋, at most
//!    n − quorum(n) validators may be out at once (n − (2f + 1) for n = 3f + 1;
//!    see [`quorum`] for other sizes). Out are the nodes that do not
//!    vote (unreachable, crash-looping, corrupt), those restarted and not yet
//!    seen healthy again, and those chosen in this round. Restarting a node that
//!    is already out does not add to that count; when the count is already over
//!    budget, such a node is still restarted, but only one at a time (nothing
//!    else in flight), so healing never makes matters worse and still makes
//!    progress.
//!
//! Nodes already out are considered first (restarting them costs nothing),
//! then by how long they have been unhealthy, then by name: the plan is
//! deterministic.

use super::classify::{Assessment, HealthClass, Remedy};

pub const HOUR_MS: u64 = 3_600_000;

/// Healing settings, resolved from the Consortium spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enabled: bool,
    pub max_restarts_per_hour: u32,
    pub backoff_base_ms: u64,
    pub rebuild_corrupt: bool,
}

/// One validator as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub assessment: Assessment,
    /// Unix ms of the operator's restarts of this node (older ones are ignored).
    pub restarts_ms: Vec<u64>,
    /// Restarted by the operator and not seen healthy since.
    pub recovering: bool,
}

impl NodeState {
    fn is_out(&self) -> bool {
        self.recovering || self.assessment.class.is_out()
    }
}

/// Why a node that needs a restart is not restarted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    Disabled,
    RebuildDisabled,
    CapReached,
    BackOff { until_ms: u64 },
    ObserverBlind,
    QuorumGuard { out: usize, max_out: usize },
}

impl Hold {
    /// The name used in status (`validators[].healing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Disabled => "Disabled",
            Hold::RebuildDisabled => "RebuildDisabled",
            Hold::CapReached => "RestartCapReached",
            Hold::BackOff { .. } => "BackingOff",
            Hold::ObserverBlind => "NoValidatorAnswers",
            Hold::QuorumGuard { .. } => "QuorumGuard",
        }
    }
}

/// The decision for one node that needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart {
        node: String,
        /// Also delete the volume (corrupt replica).
        rebuild: bool,
    },
    Hold {
        node: String,
        hold: Hold,
    },
}

impl Decision {
    pub fn node(&self) -> &str {
        match self {
            Decision::Restart { node, .. } | Decision::Hold { node, .. } => node,
        }
    }
}

/// The node's PBFT quorum (node/pbft/src/quorum.rs): ⌊(n + f)/2⌋ + 1 with
/// f = ⌊(n−1)/3⌋, which is 2f + 1 when n = 3f + 1 and larger otherwise (two
/// quorums must share f + 1 replicas), e.g. 4 of 5.
pub fn quorum(n: usize) -> usize {
    let f = n.saturating_sub(1) / 3;
    (n + f) / 2 + 1
}

/// Validators that may be out at once: n − quorum(n), i.e. n − (2f + 1) for
/// n = 3f + 1. Using 2f + 1 for other sizes would halt the chain (5 nodes need 4).
pub fn max_out(n: usize) -> usize {
    n.saturating_sub(quorum(n))
}

/// Whether a node the operator restarted is still coming back: not yet seen
/// healthy, and not yet unhealthy for long enough to need another restart (a
/// node that returns stuck or silent becomes a candidate again, under the
/// back-off and the cap, instead of blocking the budget for ever).
pub fn still_recovering(was_restarting: bool, a: &Assessment) -> bool {
    was_restarting
        && a.class != HealthClass::Healthy
        && !matches!(a.remedy, Remedy::RestartPod | Remedy::RebuildReplica)
}

/// Restarts within the hour before `now` (inclusive of `now`).
pub fn restarts_in_last_hour(restarts_ms: &[u64], now_ms: u64) -> usize {
    restarts_ms
        .iter()
        .filter(|&&t| t <= now_ms && now_ms - t < HOUR_MS)
        .count()
}

/// Earliest time the next restart of a node is allowed by the back-off.
pub fn backoff_until(restarts_ms: &[u64], base_ms: u64, now_ms: u64) -> Option<u64> {
    let k = restarts_in_last_hour(restarts_ms, now_ms);
    let last = restarts_ms.iter().filter(|&&t| t <= now_ms).max()?;
    if k == 0 {
        return None;
    }
    let factor = 1u64 << (k - 1).min(20);
    Some(last.saturating_add(base_ms.saturating_mul(factor).min(HOUR_MS)))
}

/// The decisions for every node whose assessment calls for a restart or rebuild.
pub fn plan(nodes: &[NodeState], policy: &Policy, now_ms: u64) -> Vec<Decision> {
    let limit = max_out(nodes.len());
    let blind = !nodes.iter().any(|n| n.assessment.answered);
    let mut out: usize = nodes.iter().filter(|n| n.is_out()).count();
    let mut in_flight: usize = nodes.iter().filter(|n| n.recovering).count();

    let mut candidates: Vec<&NodeState> = nodes
        .iter()
        .filter(|n| {
            !n.recovering
                && matches!(
                    n.assessment.remedy,
                    Remedy::RestartPod | Remedy::RebuildReplica
                )
        })
        .collect();
    candidates.sort_by(|a, b| {
        (!a.is_out(), a.assessment.since_ms, &a.name).cmp(&(
            !b.is_out(),
            b.assessment.since_ms,
            &b.name,
        ))
    });

    let mut decisions = Vec::new();
    for node in candidates {
        let rebuild = node.assessment.remedy == Remedy::RebuildReplica;
        let hold = |hold| Decision::Hold {
            node: node.name.clone(),
            hold,
        };
        if !policy.enabled {
            decisions.push(hold(Hold::Disabled));
            continue;
        }
        if rebuild && !policy.rebuild_corrupt {
            decisions.push(hold(Hold::RebuildDisabled));
            continue;
        }
        let cap = usize::try_from(policy.max_restarts_per_hour).unwrap_or(usize::MAX);
        if restarts_in_last_hour(&node.restarts_ms, now_ms) >= cap {
            decisions.push(hold(Hold::CapReached));
            continue;
        }
        if let Some(until_ms) = backoff_until(&node.restarts_ms, policy.backoff_base_ms, now_ms) {
            if now_ms < until_ms {
                decisions.push(hold(Hold::BackOff { until_ms }));
                continue;
            }
        }
        if blind {
            decisions.push(hold(Hold::ObserverBlind));
            continue;
        }
        let already_out = node.is_out();
        let out_after = out + usize::from(!already_out);
        let allowed = out_after <= limit || (already_out && in_flight == 0);
        if !allowed {
            decisions.push(hold(Hold::QuorumGuard {
                out,
                max_out: limit,
            }));
            continue;
        }
        out = out_after;
        in_flight += 1;
        decisions.push(Decision::Restart {
            node: node.name.clone(),
            rebuild,
        });
    }
    decisions
}

/// Whether a class is one the planner can act on (for tests and docs).
pub fn restartable(class: HealthClass) -> bool {
    matches!(
        class,
        HealthClass::Stuck | HealthClass::Lagging | HealthClass::Unreachable | HealthClass::Corrupt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const NOW: u64 = 10 * HOUR_MS;
    const POLICY: Policy = Policy {
        enabled: true,
        max_restarts_per_hour: 3,
        backoff_base_ms: MIN,
        rebuild_corrupt: true,
    };

    fn assessment(class: HealthClass) -> Assessment {
        let (remedy, answered) = match class {
            HealthClass::Healthy => (Remedy::None, true),
            HealthClass::Stuck | HealthClass::Lagging => (Remedy::RestartPod, true),
            // Ready but silent for stuckAfter.
            HealthClass::Unreachable => (Remedy::RestartPod, false),
            HealthClass::CrashLooping => (Remedy::LeaveToKubernetes, false),
            HealthClass::Corrupt => (Remedy::RebuildReplica, true),
        };
        Assessment {
            class,
            reason: String::new(),
            detail: String::new(),
            since_ms: 0,
            remedy,
            answered,
        }
    }

    fn node(name: &str, class: HealthClass) -> NodeState {
        NodeState {
            name: name.into(),
            assessment: assessment(class),
            restarts_ms: Vec::new(),
            recovering: false,
        }
    }

    fn restarted(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Restart { node, .. } => Some(node.as_str()),
                Decision::Hold { .. } => None,
            })
            .collect()
    }

    #[test]
    fn quorum_budget_per_size() {
        let expected = [
            (1, 0),
            (2, 0),
            (3, 1),
            (4, 1),
            (5, 1),
            (6, 2),
            (7, 2),
            (10, 3),
            (13, 4),
        ];
        for (n, m) in expected {
            assert_eq!(max_out(n), m, "n = {n}");
        }
        // n = 3f + 1: exactly n − (2f + 1).
        for f in 0..10 {
            assert_eq!(max_out(3 * f + 1), f, "f = {f}");
        }
        assert_eq!(max_out(0), 0);
    }

    #[test]
    fn two_of_four_stuck_restart_one_at_a_time() {
        use HealthClass::*;
        let mut nodes = vec![
            node("a", Stuck),
            node("b", Stuck),
            node("c", Healthy),
            node("d", Healthy),
        ];
        nodes[1].assessment.since_ms = 5; // a is unhealthy longer
        let d = plan(&nodes, &POLICY, NOW);
        assert_eq!(restarted(&d), ["a"]);
        assert_eq!(
            d[1],
            Decision::Hold {
                node: "b".into(),
                hold: Hold::QuorumGuard { out: 1, max_out: 1 }
            }
        );
        // Next poll: a is restarting (not back yet): b still waits.
        nodes[0] = NodeState {
            recovering: true,
            restarts_ms: vec![NOW],
            ..node("a", Unreachable)
        };
        nodes[0].assessment.remedy = Remedy::LeaveToKubernetes;
        let d = plan(&nodes, &POLICY, NOW + 30_000);
        assert!(restarted(&d).is_empty(), "{d:?}");
        // a is back and healthy: b's turn.
        nodes[0] = node("a", Healthy);
        let d = plan(&nodes, &POLICY, NOW + 60_000);
        assert_eq!(restarted(&d), ["b"]);
    }

    #[test]
    fn down_nodes_count_against_the_budget() {
        use HealthClass::*;
        // One crash-looping (out, Kubernetes' business) and one stuck, of four.
        let nodes = vec![
            node("a", CrashLooping),
            node("b", Stuck),
            node("c", Healthy),
            node("d", Healthy),
        ];
        let d = plan(&nodes, &POLICY, NOW);
        assert_eq!(
            d,
            [Decision::Hold {
                node: "b".into(),
                hold: Hold::QuorumGuard { out: 1, max_out: 1 }
            }]
        );
    }

    #[test]
    fn already_out_nodes_are_healed_one_at_a_time_when_over_budget() {
        use HealthClass::*;
        let nodes = vec![
            node("a", Unreachable),
            node("b", Unreachable),
            node("c", Healthy),
            node("d", Healthy),
        ];
        let d = plan(&nodes, &POLICY, NOW);
        assert_eq!(restarted(&d), ["a"]);
        assert!(matches!(
            d[1],
            Decision::Hold {
                hold: Hold::QuorumGuard { out: 2, max_out: 1 },
                ..
            }
        ));
    }

    #[test]
    fn nothing_is_restarted_when_no_validator_answers() {
        use HealthClass::*;
        let nodes: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| node(n, Unreachable))
            .collect();
        let d = plan(&nodes, &POLICY, NOW);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::Hold {
                hold: Hold::ObserverBlind,
                ..
            }
        )));
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn disabled_and_rebuild_settings_are_respected() {
        use HealthClass::*;
        let nodes = vec![
            node("a", Stuck),
            node("b", Corrupt),
            node("c", Healthy),
            node("d", Healthy),
        ];
        let off = Policy {
            enabled: false,
            ..POLICY
        };
        let d = plan(&nodes, &off, NOW);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::Hold {
                hold: Hold::Disabled,
                ..
            }
        )));
        let no_rebuild = Policy {
            rebuild_corrupt: false,
            ..POLICY
        };
        let d = plan(&nodes, &no_rebuild, NOW);
        assert_eq!(
            d[0],
            Decision::Hold {
                node: "b".into(),
                hold: Hold::RebuildDisabled
            }
        );
        // Corrupt is out: a's restart would make two of four out.
        assert!(matches!(
            d[1],
            Decision::Hold {
                hold: Hold::QuorumGuard { .. },
                ..
            }
        ));
        let d = plan(&nodes, &POLICY, NOW);
        assert_eq!(
            d[0],
            Decision::Restart {
                node: "b".into(),
                rebuild: true
            }
        );
    }

    #[test]
    fn recovery_ends_healthy_or_when_a_restart_is_due_again() {
        let mut a = assessment(HealthClass::Unreachable);
        a.remedy = Remedy::LeaveToKubernetes; // pod starting
        assert!(still_recovering(true, &a));
        assert!(!still_recovering(false, &a));
        a.remedy = Remedy::None; // answering soon, not silent for long yet
        assert!(still_recovering(true, &a));
        // Back but silent for stuckAfter, or stuck again: a candidate once more.
        assert!(!still_recovering(
            true,
            &assessment(HealthClass::Unreachable)
        ));
        assert!(!still_recovering(true, &assessment(HealthClass::Stuck)));
        assert!(!still_recovering(true, &assessment(HealthClass::Healthy)));
    }

    #[test]
    fn backoff_doubles_per_restart_within_the_hour() {
        let base = MIN;
        assert_eq!(backoff_until(&[], base, NOW), None);
        assert_eq!(backoff_until(&[NOW - 10], base, NOW), Some(NOW - 10 + MIN));
        let two = [NOW - 5 * MIN, NOW - MIN];
        assert_eq!(backoff_until(&two, base, NOW), Some(NOW - MIN + 2 * MIN));
        let three = [NOW - 20 * MIN, NOW - 10 * MIN, NOW - MIN];
        assert_eq!(backoff_until(&three, base, NOW), Some(NOW - MIN + 4 * MIN));
        // Restarts older than an hour no longer count.
        let old = [NOW - 2 * HOUR_MS, NOW - HOUR_MS - 1, NOW - MIN];
        assert_eq!(backoff_until(&old, base, NOW), Some(NOW));
        // Never more than an hour.
        let many: Vec<u64> = (0..30).map(|i| NOW - 30 + i).collect();
        assert_eq!(backoff_until(&many, base, NOW), Some(NOW - 1 + HOUR_MS));
    }

    /// A stuck node that never recovers, planned every 30 s for three hours:
    /// restarts at t, t+1m, t+3m (back-off 1m, then 2m); then the cap holds
    /// until the oldest restart is an hour old. From then on never more than
    /// three in any hour, two minutes apart (two restarts in the window).
    #[test]
    fn backoff_and_hourly_cap_over_time() {
        let mut n = node("a", HealthClass::Stuck);
        let others: Vec<_> = ["b", "c", "d"]
            .iter()
            .map(|x| node(x, HealthClass::Healthy))
            .collect();
        let mut holds = Vec::new();
        let start = NOW;
        for i in 0..(3 * 120) {
            let now = start + i * 30_000;
            let mut all = vec![n.clone()];
            all.extend(others.iter().cloned());
            match plan(&all, &POLICY, now).as_slice() {
                [Decision::Restart { .. }] => n.restarts_ms.push(now),
                [Decision::Hold { hold, .. }] => holds.push((now, *hold)),
                other => panic!("{other:?}"),
            }
            // Every hour window holds at most three restarts.
            assert!(restarts_in_last_hour(&n.restarts_ms, now) <= 3);
        }
        let rel: Vec<u64> = n.restarts_ms.iter().map(|t| (t - start) / 1000).collect();
        assert_eq!(
            rel,
            [0, 60, 180, 3600, 3720, 3840, 7200, 7320, 7440],
            "restart times in seconds"
        );
        assert!(holds.contains(&(
            start + 120_000,
            Hold::BackOff {
                until_ms: start + 180_000
            }
        )));
        assert!(holds.contains(&(start + 1_800_000, Hold::CapReached)));
    }

    #[test]
    fn zero_cap_only_reports() {
        let nodes = vec![
            node("a", HealthClass::Stuck),
            node("b", HealthClass::Healthy),
        ];
        let p = Policy {
            max_restarts_per_hour: 0,
            ..POLICY
        };
        assert_eq!(
            plan(&nodes, &p, NOW),
            [Decision::Hold {
                node: "a".into(),
                hold: Hold::CapReached
            }]
        );
    }

    /// Tiny deterministic generator for the property tests.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % bound as u64) as usize
        }
    }

    fn check_invariants(nodes: &[NodeState]) {
        let d = plan(nodes, &POLICY, NOW);
        let limit = max_out(nodes.len());
        let out_before = nodes.iter().filter(|n| n.is_out()).count();
        let in_flight = nodes.iter().filter(|n| n.recovering).count();
        let chosen: Vec<&NodeState> = restarted(&d)
            .iter()
            .filter_map(|name| nodes.iter().find(|n| n.name == *name))
            .collect();
        let out_after = out_before + chosen.iter().filter(|n| !n.is_out()).count();
        let ctx = format!("{nodes:?} -> {d:?}");
        // Never more out than the budget, unless already over it, and then no worse.
        assert!(out_after <= limit.max(out_before), "{ctx}");
        if out_after > limit {
            assert_eq!(out_after, out_before, "{ctx}");
            // Over budget: at most one restart, and only with none in flight.
            assert!(
                chosen.is_empty() || (chosen.len() == 1 && in_flight == 0),
                "{ctx}"
            );
        }
        for n in &chosen {
            assert!(restartable(n.assessment.class), "{ctx}");
            assert!(!n.recovering, "{ctx}");
        }
        // Every node that needs a restart gets exactly one decision.
        let needing = nodes
            .iter()
            .filter(|n| {
                !n.recovering
                    && matches!(
                        n.assessment.remedy,
                        Remedy::RestartPod | Remedy::RebuildReplica
                    )
            })
            .count();
        assert_eq!(d.len(), needing, "{ctx}");
        // Liveness: if something needs a restart, someone answered and nothing is
        // in flight, at least one restart happens.
        let answered = nodes.iter().any(|n| n.assessment.answered);
        if needing > 0 && answered && in_flight == 0 {
            let first_fits = out_before < limit
                || nodes.iter().any(|n| {
                    n.is_out()
                        && !n.recovering
                        && matches!(
                            n.assessment.remedy,
                            Remedy::RestartPod | Remedy::RebuildReplica
                        )
                });
            if first_fits {
                assert!(!chosen.is_empty(), "{ctx}");
            }
        }
    }

    #[test]
    fn quorum_guard_holds_for_every_small_consortium() {
        // Every combination of classes and in-flight restarts for n ≤ 4.
        for n in 1..=4usize {
            let combos = 6usize.pow(n as u32) * (1 << n);
            for code in 0..combos {
                let mut c = code;
                let nodes: Vec<NodeState> = (0..n)
                    .map(|i| {
                        let class = HealthClass::ALL[c % 6];
                        c /= 6;
                        let mut s = node(&format!("n{i}"), class);
                        s.recovering = c % 2 == 1 && class != HealthClass::Healthy;
                        c /= 2;
                        s
                    })
                    .collect();
                check_invariants(&nodes);
            }
        }
    }

    #[test]
    fn quorum_guard_holds_for_random_larger_consortia() {
        let mut rng = Lcg(7);
        for _ in 0..20_000 {
            let n = 5 + rng.next(12);
            let nodes: Vec<NodeState> = (0..n)
                .map(|i| {
                    let mut s = node(&format!("n{i:02}"), HealthClass::ALL[rng.next(6)]);
                    s.recovering = rng.next(5) == 0 && s.assessment.class != HealthClass::Healthy;
                    s.assessment.since_ms = rng.next(1000) as u64;
                    s
                })
                .collect();
            check_invariants(&nodes);
        }
    }
}
