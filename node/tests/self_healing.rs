//! Self-healing with real node processes on loopback.
//!
//! 1. The operator's health monitor, fed by real `Status` polls, finds a
//!    replica whose consensus loop is frozen (test fault hook) stuck while
//!    the consortium advances, and plans one restart. The test plays the
//!    StatefulSet: it deletes the "pod" (SIGKILL) and starts a fresh one. The
//!    replica catches up and is classified healthy again. Freeze-to-decision
//!    and restart-to-healthy times are printed.
//! 2. The node's own watchdog ends a frozen process once liveness has failed
//!    for its grace period, so the supervisor restarts it even when nothing
//!    polls `/healthz`.
//!
//! Only the operator's decision logic is exercised here (pure functions over
//! the polls); its pod deletion, Events and status writes have call-contract
//! tests in the operator crate, as has the quorum guard for several failing
//! nodes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use kubeledger_node::consensus::replica_task::FREEZE_HOOK_ENV;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::local::LocalNode;
use kubeledger_node::proto;
use kubeledger_node::runtime::WATCHDOG_EXIT_CODE;
use kubeledger_node::tx::envelope::put;
use kubeledger_operator::health::classify::{NodeObservation, PodObservation};
use kubeledger_operator::health::{self, Decision, HealthClass, Policy, Sample, Thresholds};
use kubeledger_operator::probe::{GrpcProber, NodeProber};

const N: usize = 4;
const FROZEN: usize = 3;
/// Bound on every wait; each failure says what did not happen.
const WAIT: Duration = Duration::from_secs(60);

fn params() -> ChainParams {
    ChainParams {
        block_interval_ms: 100,
        checkpoint_interval: 10,
        view_change_timeout_ms: 2000,
        ..ChainParams::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Rewrites a node's config with other health settings.
fn set_health(node: &mut LocalNode, loop_timeout_s: u64, watchdog_s: u64) {
    node.config.health.loop_timeout_s = loop_timeout_s;
    node.config.health.watchdog_s = watchdog_s;
    std::fs::write(&node.config_path, node.config.to_toml()).expect("write config");
}

/// Steady load (a batch of 20 puts every 100 ms) to replicas 0..=2.
fn spawn_load(nodes: &[LocalNode], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let endpoints: Vec<String> = nodes[..FROZEN].iter().map(LocalNode::endpoint).collect();
    let nonce = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let key = client_key(41);
        let mut turn = 0;
        while !stop.load(Ordering::SeqCst) {
            turn += 1;
            if let Ok(mut c) =
                kubeledger_node::client::Client::connect(&endpoints[turn % endpoints.len()]).await
            {
                let txs = (0..20)
                    .map(|_| {
                        let n = nonce.fetch_add(1, Ordering::SeqCst);
                        signed(&key, n, put(format!("heal/{n}"), "v"))
                    })
                    .collect();
                let _ = c
                    .inner
                    .submit_batch(proto::SubmitBatchRequest { txs })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The operator's view of the consortium: one poll of every node through
/// the operator's own gRPC prober, classified from each node's history.
struct Monitor {
    probers: Vec<GrpcProber>,
    history: Vec<Vec<Sample>>,
    thresholds: Thresholds,
}

impl Monitor {
    fn new(nodes: &[LocalNode], thresholds: Thresholds) -> Self {
        Self {
            probers: nodes
                .iter()
                .map(|n| GrpcProber {
                    port: i32::from(n.config.listen.grpc.port()),
                    timeout: Duration::from_millis(800),
                })
                .collect(),
            history: vec![Vec::new(); nodes.len()],
            thresholds,
        }
    }

    /// Polls every node once; returns each node's assessment.
    async fn poll(&mut self) -> Vec<health::Assessment> {
        let at_ms = now_ms();
        let mut reports = Vec::new();
        for p in &self.probers {
            reports.push(p.status("127.0.0.1").await);
        }
        let consortium = reports.iter().flatten().map(|r| r.height).max();
        for (i, r) in reports.into_iter().enumerate() {
            self.history[i].push(Sample {
                at_ms,
                // A process runs for every node here; the kubelet's view
                // adds nothing the Status poll does not show.
                pod: PodObservation::READY,
                node: r.map(|r| NodeObservation {
                    height: r.height,
                    view: r.view,
                    corrupt: r.corrupt,
                }),
                consortium_height: consortium,
            });
        }
        self.history
            .iter()
            .map(|h| health::classify(h, &self.thresholds))
            .collect()
    }

    /// After a restart the operator judges the node from fresh polls only.
    fn reset(&mut self, i: usize) {
        self.history[i].clear();
    }
}

/// The planner's input: each node's assessment and the restarts done so far.
fn planner_view(
    nodes: &[LocalNode],
    assessments: &[health::Assessment],
    restarts: &HashMap<String, Vec<u64>>,
) -> Vec<health::NodeState> {
    assessments
        .iter()
        .zip(nodes)
        .map(|(a, n)| health::NodeState {
            name: n.name.clone(),
            assessment: a.clone(),
            restarts_ms: restarts.get(&n.name).cloned().unwrap_or_default(),
            recovering: false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_is_found_stuck_restarted_once_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = consortium(dir.path(), N, params());
    for n in &mut nodes {
        // The watchdog would heal the frozen node by itself; this test is
        // about the operator's decision.
        set_health(n, 10, 0);
    }
    let freeze = dir.path().join("freeze-consensus");
    let mut children: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Some(if i == FROZEN {
                spawn_node_process_env(n, &[(FREEZE_HOOK_ENV, freeze.as_path())])
            } else {
                spawn_node_process(n)
            })
        })
        .collect();
    for n in &nodes {
        let _ = connect_retry(&n.endpoint(), WAIT).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&nodes, stop.clone());

    // Short stuck threshold so the test is quick; the defaults are 120 s.
    let thresholds = Thresholds {
        stuck_after_ms: 3_000,
        max_lag: 1_000,
        lag_for_ms: 300_000,
    };
    let policy = Policy {
        enabled: true,
        max_restarts_per_hour: 3,
        backoff_base_ms: 60_000,
        rebuild_corrupt: false,
    };
    let mut monitor = Monitor::new(&nodes, thresholds);
    let started = Instant::now();
    loop {
        let a = monitor.poll().await;
        let heights: Vec<u64> = monitor
            .history
            .iter()
            .filter_map(|h| h.last()?.node.as_ref().map(|n| n.height))
            .collect();
        if a.iter().all(|x| x.class == HealthClass::Healthy) && heights.iter().all(|h| *h >= 5) {
            break;
        }
        assert!(started.elapsed() < WAIT, "consortium never healthy: {a:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    std::fs::write(&freeze, b"frozen by the test").expect("freeze");
    let frozen_at = Instant::now();
    let mut restarts: HashMap<String, Vec<u64>> = HashMap::new();
    let (decided_at, found_as) = loop {
        let a = monitor.poll().await;
        let decisions = health::plan(&planner_view(&nodes, &a, &restarts), &policy, now_ms());
        let restart: Vec<&Decision> = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Restart { .. }))
            .collect();
        if !restart.is_empty() {
            assert_eq!(restart.len(), 1, "one restart at a time: {decisions:?}");
            assert_eq!(
                restart[0],
                &Decision::Restart {
                    node: nodes[FROZEN].name.clone(),
                    rebuild: false
                },
                "only the frozen replica is restarted: {a:?}"
            );
            // Stuck when its Status still answers with a frozen height;
            // Unreachable when the frozen loop also holds up the answer.
            assert!(
                matches!(
                    a[FROZEN].class,
                    HealthClass::Stuck | HealthClass::Unreachable
                ),
                "{:?}",
                a[FROZEN]
            );

            for (i, x) in a.iter().enumerate() {
                if i != FROZEN {
                    assert_eq!(x.class, HealthClass::Healthy, "replica {i}: {x:?}");
                }
            }
            break (Instant::now(), a[FROZEN].class);
        }
        assert!(
            frozen_at.elapsed() < WAIT,
            "the frozen replica was never found stuck: {:?}",
            a[FROZEN]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    restarts
        .entry(nodes[FROZEN].name.clone())
        .or_default()
        .push(now_ms());

    // The restart: the pod is deleted and the StatefulSet starts a fresh
    // one, which has no fault.
    if let Some(mut c) = children[FROZEN].take() {
        c.start_kill().expect("SIGKILL");
        let _ = c.wait().await;
    }
    std::fs::remove_file(&freeze).expect("unfreeze");
    children[FROZEN] = Some(spawn_node_process(&nodes[FROZEN]));
    monitor.reset(FROZEN);
    let healthy_at = loop {
        let a = monitor.poll().await;
        let h = &monitor.history[FROZEN];
        let caught_up = h.last().is_some_and(|s| {
            s.node
                .as_ref()
                .is_some_and(|n| Some(n.height) >= s.consortium_height)
        });
        if a[FROZEN].class == HealthClass::Healthy && caught_up && h.len() >= 2 {
            break Instant::now();
        }
        assert!(
            decided_at.elapsed() < WAIT,
            "the restarted replica never became healthy: {:?}",
            a[FROZEN]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // A second plan after recovery restarts nothing.
    let a = monitor.poll().await;
    let again = health::plan(&planner_view(&nodes, &a, &restarts), &policy, now_ms());
    assert!(
        !again.iter().any(|d| matches!(d, Decision::Restart { .. })),
        "{again:?}"
    );
    println!(
        "freeze -> restart decision {:.1} s (found {}, stuckAfter 3 s), restart -> healthy and caught up {:.1} s",
        (decided_at - frozen_at).as_secs_f64(),
        found_as.as_str(),
        (healthy_at - decided_at).as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    let _ = load.await;
    for c in children.iter_mut().flatten() {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_ends_a_process_whose_consensus_loop_is_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = consortium(dir.path(), 1, params());
    set_health(&mut nodes[0], 1, 2);
    let freeze = dir.path().join("freeze-consensus");
    std::fs::write(&freeze, b"frozen from the start").expect("freeze");
    let mut child = spawn_node_process_env(&nodes[0], &[(FREEZE_HOOK_ENV, freeze.as_path())]);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the watchdog ends the frozen process")
        .expect("wait");
    assert_eq!(status.code(), Some(WATCHDOG_EXIT_CODE), "{status:?}");
    let log = std::fs::read_to_string(nodes[0].dir.join("node.log")).unwrap_or_default();
    assert!(log.contains("consensus loop silent"), "{log}");
    assert!(Path::new(&freeze).exists());
}
