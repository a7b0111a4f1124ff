//! Prometheus metrics of the controllers, served at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub consortium: String,
    /// The health class that caused the restart.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub consortium: String,
    pub health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabels {
    pub consortium: String,
    pub hold: String,
}

/// Counters and histograms shared by both controllers.
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub status_writes: Family<ControllerLabels, Counter>,
    pub leader: Gauge,
    /// Pods deleted (or replicas rebuilt) by healing.
    pub node_restarts: Family<RestartLabels, Counter>,
    /// Validators by health class, as last classified.
    pub nodes: Family<HealthLabels, Gauge>,
    /// Restarts held back, counted when a node enters the hold.
    pub healing_held: Family<HoldLabels, Counter>,
    pub registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubeledger_operator");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let status_writes = Family::<ControllerLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "status_writes",
            "Status patches actually sent",
            status_writes.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let node_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "node_restarts",
            "Validator pods deleted by healing, by health class",
            node_restarts.clone(),
        );
        let nodes = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "nodes",
            "Validators by health class (Healthy, Unreachable, Stuck, Lagging, CrashLooping, Corrupt)",
            nodes.clone(),
        );
        let healing_held = Family::<HoldLabels, Counter>::default();
        registry.register(
            "healing_held",
            "Restarts held back (quorum guard, hourly cap, back-off, ...)",
            healing_held.clone(),
        );
        Self {
            node_restarts,
            nodes,
            healing_held,
            reconciliations,
            failures,
            duration,
            status_writes,
            leader,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard recording its duration on drop.
    pub fn count_and_measure(&self, controller: &str) -> ReconcileMeasurer {
        let labels = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileMeasurer {
            start: Instant::now(),
            metric: self.duration.clone(),
            labels,
        }
    }

    pub fn reconcile_failure(&self, controller: &str, error: &crate::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.metric_label(),
            })
            .inc();
    }

    pub fn status_write(&self, controller: &str) {
        self.status_writes
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
    }

    pub fn node_restart(&self, consortium: &str, reason: &str) {
        self.node_restarts
            .get_or_create(&RestartLabels {
                consortium: consortium.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn healing_hold(&self, consortium: &str, hold: &str) {
        self.healing_held
            .get_or_create(&HoldLabels {
                consortium: consortium.into(),
                hold: hold.into(),
            })
            .inc();
    }

    /// Sets the per-class node counts of one consortium (every class, zeros too).
    pub fn set_nodes_by_health(&self, consortium: &str, counts: &[(&str, i64)]) {
        for (health, n) in counts {
            self.nodes
                .get_or_create(&HealthLabels {
                    consortium: consortium.into(),
                    health: (*health).into(),
                })
                .set(*n);
        }
    }

    /// Drops the per-class node gauges of a deleted consortium.
    pub fn forget_consortium(&self, consortium: &str, classes: &[&str]) {
        for health in classes {
            self.nodes.remove(&HealthLabels {
                consortium: consortium.into(),
                health: (*health).into(),
            });
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records the elapsed time of one reconcile when dropped.
pub struct ReconcileMeasurer {
    start: Instant,
    metric: Family<ControllerLabels, Histogram>,
    labels: ControllerLabels,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.metric
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_gauges_go_with_their_consortium() {
        let m = Metrics::default();
        m.set_nodes_by_health("escrow", &[("Healthy", 3), ("Stuck", 1)]);
        assert!(m
            .encode()
            .contains(r#"kubeledger_operator_nodes{consortium="escrow",health="Stuck"} 1"#));
        m.forget_consortium("escrow", &["Healthy", "Stuck"]);
        assert!(!m.encode().contains(r#"consortium="escrow""#));
    }

    #[test]
    fn encodes_counters() {
        let m = Metrics::default();
        drop(m.count_and_measure("member"));
        let text = m.encode();
        assert!(text.contains("kubeledger_operator_reconciliations_total{controller=\"member\"} 1"));
    }
}
