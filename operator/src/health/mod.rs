//! Health monitoring and healing of validators, as pure functions over
//! explicit time: [`classify`](fn@classify) turns a node's recent polls into a
//! [`HealthClass`]; [`plan`](fn@plan) decides which pods to delete without
//! endangering the quorum; [`history`] keeps the recent polls.
//! [`controller::healing`](crate::controller::healing) does the I/O around them.

pub mod classify;
pub mod history;
pub mod plan;

pub use classify::{classify, Assessment, HealthClass, Remedy, Sample, Thresholds};
pub use plan::{plan, Decision, Hold, NodeState, Policy};

use crate::crd::{parse_duration, DurationError, HealingSpec};

/// Thresholds and policy from a Consortium's healing settings.
pub fn settings(spec: &HealingSpec) -> Result<(Thresholds, Policy), DurationError> {
    let ms = |s: &str| -> Result<u64, DurationError> {
        Ok(u64::try_from(parse_duration(s)?.as_millis()).unwrap_or(u64::MAX))
    };
    Ok((
        Thresholds {
            stuck_after_ms: ms(&spec.stuck_after)?,
            max_lag: spec.max_lag,
            lag_for_ms: ms(&spec.lag_for)?,
        },
        Policy {
            enabled: spec.enabled,
            max_restarts_per_hour: spec.max_restarts_per_hour,
            backoff_base_ms: ms(&spec.restart_backoff)?,
            rebuild_corrupt: spec.rebuild_corrupt_replicas,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let (t, p) = settings(&HealingSpec::default()).expect("defaults parse");
        assert_eq!(
            t,
            Thresholds {
                stuck_after_ms: 120_000,
                max_lag: 1000,
                lag_for_ms: 300_000
            }
        );
        assert_eq!(
            p,
            Policy {
                enabled: true,
                max_restarts_per_hour: 3,
                backoff_base_ms: 60_000,
                rebuild_corrupt: false
            }
        );
        let bad = HealingSpec {
            stuck_after: "soon".into(),
            ..HealingSpec::default()
        };
        assert!(settings(&bad).is_err());
    }

    /// The figure in the README: with the default settings and the 30 s poll,
    /// a node whose height freezes at `freeze` (the chain advancing one block a
    /// second) is restarted at the first poll at least `stuckAfter` after the
    /// first poll that saw the frozen height: 120–150 s after the freeze,
    /// decided in the same reconcile that first classifies it stuck.
    #[test]
    fn freeze_to_restart_decision_with_defaults() {
        let (t, p) = settings(&HealingSpec::default()).expect("defaults");
        let poll = crate::controller::POLL_INTERVAL.as_millis() as u64;
        let mut delays = Vec::new();
        for freeze in (0..poll).step_by(5_000).map(|o| 600_000 + o) {
            let mut series = Vec::new();
            let mut decided = None;
            for i in 0..40u64 {
                let now = i * poll;
                let height = now.min(freeze) / 1000;
                series.push(Sample {
                    at_ms: now,
                    pod: classify::PodObservation::READY,
                    node: Some(classify::NodeObservation {
                        height,
                        ..Default::default()
                    }),
                    consortium_height: Some(now / 1000),
                });
                let a = classify(&series, &t);
                let others = (0..3).map(|k| NodeState {
                    name: format!("peer-{k}"),
                    assessment: Assessment {
                        class: HealthClass::Healthy,
                        reason: String::new(),
                        detail: String::new(),
                        since_ms: now,
                        remedy: Remedy::None,
                        answered: true,
                    },
                    restarts_ms: vec![],
                    recovering: false,
                });
                let mut nodes = vec![NodeState {
                    name: "frozen".into(),
                    assessment: a.clone(),
                    restarts_ms: vec![],
                    recovering: false,
                }];
                nodes.extend(others);
                if plan(&nodes, &p, now)
                    .iter()
                    .any(|d| matches!(d, Decision::Restart { .. }))
                {
                    assert_eq!(a.class, HealthClass::Stuck);
                    decided = Some(now - freeze);
                    break;
                }
            }
            delays.push(decided.expect("restart decided"));
        }
        let (min, max) = (
            delays.iter().min().copied().unwrap_or_default(),
            delays.iter().max().copied().unwrap_or_default(),
        );
        assert!(
            min >= t.stuck_after_ms && max <= t.stuck_after_ms + poll,
            "{delays:?}"
        );
        assert_eq!((min, max), (120_000, 145_000), "{delays:?}");
    }
}
