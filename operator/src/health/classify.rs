//! Classifies one validator from its recent polls: a pure function of the
//! samples and the thresholds; time is the samples' own timestamps.
//!
//! Precedence when several apply: corrupt, crash-looping, unreachable, stuck,
//! lagging, healthy.

use std::fmt;

/// Health of one validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthClass {
    Healthy,
    /// Its Status RPC does not answer (pod missing, not ready, or silent).
    Unreachable,
    /// Height not moving for `stuckAfter` while the consortium's height moved.
    Stuck,
    /// More than `maxLag` blocks behind for `lagFor`.
    Lagging,
    /// The kubelet is backing off restarts of its container.
    CrashLooping,
    /// The node reports corrupt storage or state.
    Corrupt,
}

impl HealthClass {
    pub const ALL: [HealthClass; 6] = [
        HealthClass::Healthy,
        HealthClass::Unreachable,
        HealthClass::Stuck,
        HealthClass::Lagging,
        HealthClass::CrashLooping,
        HealthClass::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthClass::Healthy => "Healthy",
            HealthClass::Unreachable => "Unreachable",
            HealthClass::Stuck => "Stuck",
            HealthClass::Lagging => "Lagging",
            HealthClass::CrashLooping => "CrashLooping",
            HealthClass::Corrupt => "Corrupt",
        }
    }

    /// Not taking part in consensus: counted against the quorum budget. A stuck
    /// or lagging node still runs and may still vote; restarting it takes it out.
    pub fn is_out(self) -> bool {
        matches!(
            self,
            HealthClass::Unreachable | HealthClass::CrashLooping | HealthClass::Corrupt
        )
    }
}

impl fmt::Display for HealthClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Kubernetes says about the node's pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodObservation {
    pub exists: bool,
    pub ready: bool,
    /// Some container is waiting in `CrashLoopBackOff`.
    pub crash_looping: bool,
}

impl PodObservation {
    pub const READY: PodObservation = PodObservation {
        exists: true,
        ready: true,
        crash_looping: false,
    };
}

/// What the node answered to `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeObservation {
    pub height: u64,
    pub view: u64,
    /// Set when the node reports corrupt storage or a state commitment that
    /// disagrees with a stable checkpoint (`Status.corruption`).
    pub corrupt: Option<String>,
}

/// One poll of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Unix milliseconds of the poll.
    pub at_ms: u64,
    pub pod: PodObservation,
    /// `None` when the node did not answer.
    pub node: Option<NodeObservation>,
    /// Highest height any validator of the consortium reported in this poll.
    pub consortium_height: Option<u64>,
}

impl Sample {
    fn height(&self) -> Option<u64> {
        self.node.as_ref().map(|n| n.height)
    }

    fn lag(&self) -> Option<u64> {
        Some(self.consortium_height?.saturating_sub(self.height()?))
    }
}

/// Thresholds from the Consortium's healing settings, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub stuck_after_ms: u64,
    pub max_lag: u64,
    pub lag_for_ms: u64,
}

/// What would fix the node; whether and when it is done is the planner's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    None,
    /// Delete the pod; the StatefulSet recreates it and it catches up.
    RestartPod,
    /// Delete the pod and its volume; the new replica transfers state.
    RebuildReplica,
    /// Kubernetes is already acting (pod missing, starting, crash back-off).
    LeaveToKubernetes,
}

/// The classification of one node at the time of its newest sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub class: HealthClass,
    /// Human-readable cause that stays the same while the condition lasts
    /// (for status: no rewrite on every poll).
    pub reason: String,
    /// The cause with the current figures (for Events and logs).
    pub detail: String,
    /// When the current condition began (Unix ms).
    pub since_ms: u64,
    pub remedy: Remedy,
    /// Whether the node answered in the newest sample.
    pub answered: bool,
}

/// Start of the trailing run of samples satisfying `pred` (None when the newest
/// sample does not).
fn streak_start(samples: &[Sample], pred: impl Fn(&Sample) -> bool) -> Option<&Sample> {
    samples.iter().rev().take_while(|s| pred(s)).last()
}

fn secs(ms: u64) -> String {
    format!("{}s", ms / 1000)
}

/// Classifies a node from its samples since its last restart, oldest first.
pub fn classify(samples: &[Sample], t: &Thresholds) -> Assessment {
    let Some(now) = samples.last() else {
        return Assessment {
            class: HealthClass::Unreachable,
            reason: "not polled yet".into(),
            detail: "not polled yet".into(),
            since_ms: 0,
            remedy: Remedy::LeaveToKubernetes,
            answered: false,
        };
    };
    let answered = now.node.is_some();
    let detailed = |class, reason: String, detail: String, since: &Sample, remedy| Assessment {
        class,
        reason,
        detail,
        since_ms: since.at_ms,
        remedy,
        answered,
    };
    let assessment = |class, reason: String, since: &Sample, remedy| {
        detailed(class, reason.clone(), reason, since, remedy)
    };

    if let Some(why) = now.node.as_ref().and_then(|n| n.corrupt.clone()) {
        let since = streak_start(samples, |s| {
            s.node.as_ref().is_some_and(|n| n.corrupt.is_some())
        })
        .unwrap_or(now);
        return assessment(
            HealthClass::Corrupt,
            format!("reports corruption: {why}"),
            since,
            Remedy::RebuildReplica,
        );
    }
    if now.pod.crash_looping {
        let since = streak_start(samples, |s| s.pod.crash_looping).unwrap_or(now);
        return assessment(
            HealthClass::CrashLooping,
            "container in CrashLoopBackOff".into(),
            since,
            Remedy::LeaveToKubernetes,
        );
    }
    if !answered {
        if !now.pod.exists {
            let since = streak_start(samples, |s| !s.pod.exists).unwrap_or(now);
            return assessment(
                HealthClass::Unreachable,
                "pod missing".into(),
                since,
                Remedy::LeaveToKubernetes,
            );
        }
        if !now.pod.ready {
            let since = streak_start(samples, |s| s.node.is_none() && !s.pod.ready).unwrap_or(now);
            return assessment(
                HealthClass::Unreachable,
                "pod not ready (starting or failing its probes)".into(),
                since,
                Remedy::LeaveToKubernetes,
            );
        }
        // Ready by the kubelet's probes yet silent to the operator.
        let since = streak_start(samples, |s| s.node.is_none() && s.pod.ready).unwrap_or(now);
        let silent = now.at_ms.saturating_sub(since.at_ms);
        let remedy = if silent >= t.stuck_after_ms {
            Remedy::RestartPod
        } else {
            Remedy::None
        };
        return detailed(
            HealthClass::Unreachable,
            "pod ready but Status unanswered".into(),
            format!("pod ready but Status unanswered for {}", secs(silent)),
            since,
            remedy,
        );
    }

    let height = now.height().unwrap_or_default();
    let consortium = now.consortium_height.unwrap_or(height);
    if let Some(start) = streak_start(samples, |s| s.height() == Some(height)) {
        let stalled = now.at_ms.saturating_sub(start.at_ms);
        let consortium_moved = consortium > start.consortium_height.unwrap_or(height);
        if stalled >= t.stuck_after_ms && consortium_moved && consortium > height {
            return detailed(
                HealthClass::Stuck,
                format!("height {height} not advancing while the consortium does"),
                format!(
                    "height {height} for {} while the consortium reached {consortium}",
                    secs(stalled)
                ),
                start,
                Remedy::RestartPod,
            );
        }
    }
    if let Some(start) = streak_start(samples, |s| s.lag().is_some_and(|l| l > t.max_lag)) {
        let behind_for = now.at_ms.saturating_sub(start.at_ms);
        if behind_for >= t.lag_for_ms {
            return detailed(
                HealthClass::Lagging,
                format!("more than {} blocks behind", t.max_lag),
                format!(
                    "{} blocks behind (more than {}) for {}",
                    consortium.saturating_sub(height),
                    t.max_lag,
                    secs(behind_for)
                ),
                start,
                Remedy::RestartPod,
            );
        }
    }
    assessment(HealthClass::Healthy, String::new(), now, Remedy::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        stuck_after_ms: 120_000,
        max_lag: 100,
        lag_for_ms: 300_000,
    };
    const POLL: u64 = 30_000;

    fn answered(at_ms: u64, height: u64, consortium: u64) -> Sample {
        Sample {
            at_ms,
            pod: PodObservation::READY,
            node: Some(NodeObservation {
                height,
                view: 0,
                corrupt: None,
            }),
            consortium_height: Some(consortium),
        }
    }

    fn silent(at_ms: u64, pod: PodObservation) -> Sample {
        Sample {
            at_ms,
            pod,
            node: None,
            consortium_height: Some(1000),
        }
    }

    /// Polls every 30 s from 0 to `until` (inclusive), heights from `f(t)`.
    fn series(until: u64, f: impl Fn(u64) -> (u64, u64)) -> Vec<Sample> {
        (0..=until / POLL)
            .map(|i| {
                let t = i * POLL;
                let (h, c) = f(t);
                answered(t, h, c)
            })
            .collect()
    }

    #[test]
    fn nothing_polled_is_unreachable_and_left_to_kubernetes() {
        let a = classify(&[], &T);
        assert_eq!(a.class, HealthClass::Unreachable);
        assert_eq!(a.remedy, Remedy::LeaveToKubernetes);
    }

    #[test]
    fn advancing_node_is_healthy() {
        let s = series(600_000, |t| (t / 1000, t / 1000));
        let a = classify(&s, &T);
        assert_eq!(a.class, HealthClass::Healthy);
        assert_eq!(a.remedy, Remedy::None);
        assert!(a.answered);
    }

    #[test]
    fn idle_consortium_is_not_stuck() {
        // Nobody advances (no transactions): not the node's fault.
        let s = series(600_000, |_| (50, 50));
        assert_eq!(classify(&s, &T).class, HealthClass::Healthy);
        // Behind by one block of an idle chain: still healthy.
        let s = series(600_000, |_| (49, 50));
        assert_eq!(classify(&s, &T).class, HealthClass::Healthy);
    }

    #[test]
    fn frozen_node_becomes_stuck_exactly_after_stuck_after() {
        // Frozen at height 10 from t = 60 s; the consortium keeps going.
        let f = |t: u64| ((t / 1000).min(60), t / 1000);
        // First sample at height 60 is t = 60 s; stuck from t = 180 s on.
        let a = classify(&series(150_000, f), &T);
        assert_eq!(a.class, HealthClass::Healthy, "{a:?}");
        let a = classify(&series(180_000, f), &T);
        assert_eq!(a.class, HealthClass::Stuck, "{a:?}");
        assert_eq!(a.since_ms, 60_000);
        assert_eq!(a.remedy, Remedy::RestartPod);
        assert_eq!(
            a.detail,
            "height 60 for 120s while the consortium reached 180"
        );
        // The status text does not change from poll to poll.
        let later = classify(&series(210_000, f), &T);
        assert_eq!(later.reason, a.reason);
        assert_eq!(
            a.reason,
            "height 60 not advancing while the consortium does"
        );
    }

    #[test]
    fn lagging_needs_lag_for_above_max_lag() {
        // 150 blocks behind and keeping pace: lagging once that lasted 5 min.
        let f = |t: u64| (t / 1000, t / 1000 + 150);
        assert_eq!(
            classify(&series(270_000, f), &T).class,
            HealthClass::Healthy
        );
        let a = classify(&series(300_000, f), &T);
        assert_eq!(a.class, HealthClass::Lagging, "{a:?}");
        assert_eq!(a.since_ms, 0);
        // Exactly maxLag behind is not lagging.
        let f = |t: u64| (t / 1000, t / 1000 + 100);
        assert_eq!(
            classify(&series(900_000, f), &T).class,
            HealthClass::Healthy
        );
        // Catching up resets the clock.
        let f = |t: u64| {
            let lag = if t == 240_000 { 10 } else { 150 };
            (t / 1000, t / 1000 + lag)
        };
        let a = classify(&series(400_000, f), &T);
        assert_eq!(a.class, HealthClass::Healthy, "{a:?}");
    }

    #[test]
    fn stuck_takes_precedence_over_lagging() {
        let f = |t: u64| (0, t / 100);
        let a = classify(&series(600_000, f), &T);
        assert_eq!(a.class, HealthClass::Stuck);
    }

    #[test]
    fn silent_ready_pod_is_restarted_after_stuck_after() {
        let mut s = series(60_000, |t| (t / 1000, t / 1000));
        for i in 3..=6 {
            s.push(silent(i * POLL, PodObservation::READY));
        }
        // Silent from 90 s to 180 s: 90 s < 120 s.
        let a = classify(&s, &T);
        assert_eq!(
            (a.class, a.remedy),
            (HealthClass::Unreachable, Remedy::None)
        );
        assert!(!a.answered);
        s.push(silent(210_000, PodObservation::READY));
        let a = classify(&s, &T);
        assert_eq!(
            (a.class, a.remedy, a.since_ms),
            (HealthClass::Unreachable, Remedy::RestartPod, 90_000)
        );
    }

    #[test]
    fn missing_or_starting_pods_are_left_to_kubernetes() {
        let missing = PodObservation::default();
        let starting = PodObservation {
            exists: true,
            ready: false,
            crash_looping: false,
        };
        for pod in [missing, starting] {
            let s: Vec<_> = (0..100).map(|i| silent(i * POLL, pod)).collect();
            let a = classify(&s, &T);
            assert_eq!(a.class, HealthClass::Unreachable);
            assert_eq!(a.remedy, Remedy::LeaveToKubernetes, "{pod:?}");
        }
    }

    #[test]
    fn crash_loop_and_corruption_win() {
        let looping = PodObservation {
            exists: true,
            ready: false,
            crash_looping: true,
        };
        let mut s = series(60_000, |t| (t / 1000, t / 1000));
        s.push(silent(90_000, looping));
        let a = classify(&s, &T);
        assert_eq!(
            (a.class, a.remedy, a.since_ms),
            (HealthClass::CrashLooping, Remedy::LeaveToKubernetes, 90_000)
        );

        let mut corrupt = answered(120_000, 5, 5);
        if let Some(n) = corrupt.node.as_mut() {
            n.corrupt = Some("block 3 hash mismatch".into());
        }
        s.push(corrupt);
        let a = classify(&s, &T);
        assert_eq!(a.class, HealthClass::Corrupt);
        assert_eq!(a.remedy, Remedy::RebuildReplica);
        assert!(a.reason.contains("block 3 hash mismatch"));
    }

    #[test]
    fn out_classes_are_the_ones_not_voting() {
        let out: Vec<_> = HealthClass::ALL.iter().filter(|c| c.is_out()).collect();
        assert_eq!(
            out,
            [
                &HealthClass::Unreachable,
                &HealthClass::CrashLooping,
                &HealthClass::Corrupt
            ]
        );
    }
}
