//! The Consortium's health monitor and healing: which nodes are restarted or
//! rebuilt, within the quorum budget and the restart cap, and what is reported.

use std::sync::Arc;

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use crate::controller::Context;
use crate::crd::{Consortium, ConsortiumStatus, Member, ValidatorStatus};
use crate::fixtures::api_server::{delete_call, Call};
use crate::fixtures::calls::{
    escrow_status_patch, event_call, genesis_copies, member_calls, member_pods_call,
    member_status_patch, members_list, node_pods_call, running_consortium_calls,
};
use crate::fixtures::objects::{
    consortium_with_genesis, consortium_with_genesis_of, host, org1_secret, ready_pod,
    with_finalizer,
};
use crate::fixtures::reconcile::{
    context_at, last_status, reconnected, run_consortium, run_consortium_in, run_member,
};
use crate::fixtures::{self};
use crate::probe::{NodeReport, StaticProber};

const T0: u64 = 1_764_000_000_000;
const NODES4: [(&str, &str); 4] = [
    ("org1-0", "org1"),
    ("org1-1", "org1"),
    ("org2-0", "org2"),
    ("org2-1", "org2"),
];

/// Four validators: org1 (2 nodes) and org2 (2 nodes), genesis fixed.
fn consortium_of_four() -> (Consortium, Vec<Member>) {
    let members = fixtures::members_with_keys_sized(2);
    let mut c = consortium_with_genesis_of(&members);
    if let Some(s) = c.status.as_mut() {
        s.genesis_namespaces = vec!["org1".into(), "org2".into()];
    }
    (c, members)
}

/// Heights answered now: `frozen` nodes at 10, the others at 160.
fn prober_with_frozen(frozen: &[&str]) -> StaticProber {
    StaticProber(
        NODES4
            .iter()
            .map(|(n, m)| {
                let height = if frozen.contains(n) { 10 } else { 160 };
                (
                    host(n, m),
                    NodeReport {
                        height,
                        view: 2,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    )
}

/// [`prober_with_frozen`] to which `silent` (a node name) does not answer.
fn prober_without(frozen: &[&str], silent: &str) -> StaticProber {
    let prefix = format!("{silent}.");
    StaticProber(
        prober_with_frozen(frozen)
            .0
            .into_iter()
            .filter(|(h, _)| !h.starts_with(&prefix))
            .collect(),
    )
}

/// The monitor's memory: polls every 30 s over the last 150 s in which the
/// `frozen` nodes stayed at height 10 while the others advanced.
fn seed_history(ctx: &Context, frozen: &[&str], now: u64) {
    use crate::health::classify::{NodeObservation, PodObservation, Sample};
    for i in (1..=5u64).rev() {
        let at = now - i * 30_000;
        let consortium = 160 - i * 30;
        for (n, _) in NODES4 {
            let height = if frozen.contains(&n) { 10 } else { consortium };
            ctx.health.record(
                &format!("escrow/{n}"),
                Sample {
                    at_ms: at,
                    pod: PodObservation::READY,
                    node: Some(NodeObservation {
                        height,
                        view: 2,
                        corrupt: None,
                    }),
                    consortium_height: Some(consortium),
                },
                u64::MAX,
            );
        }
    }
}

/// The Members' list, the genesis copies and the monitor's pod lists.
fn running_calls(members: &[Member], pods_org1: Value, pods_org2: Value) -> Vec<Call> {
    let mut calls = vec![members_list(members)];
    calls.extend(genesis_copies(&["org1", "org2"]));
    calls.push(node_pods_call("org1", pods_org1));
    calls.push(node_pods_call("org2", pods_org2));
    calls
}

/// [`running_calls`] with every pod of the four validators ready.
fn running_ready_calls(members: &[Member]) -> Vec<Call> {
    let (p1, p2) = four_ready_pods();
    running_calls(members, p1, p2)
}

fn four_ready_pods() -> (Value, Value) {
    (
        json!([ready_pod("org1-0", 0), ready_pod("org1-1", 0)]),
        json!([ready_pod("org2-0", 0), ready_pod("org2-1", 0)]),
    )
}

#[tokio::test]
async fn two_of_four_stuck_only_one_pod_is_deleted() {
    let (c, members) = consortium_of_four();
    let frozen = ["org1-1", "org2-1"];
    let (ctx, handle) = context_at(prober_with_frozen(&frozen), Some(T0));
    seed_history(&ctx, &frozen, T0);
    let mut calls = running_ready_calls(&members);
    calls.extend([
        // One pod deleted: the StatefulSet recreates it, state transfer catches up.
        delete_call("/api/v1/namespaces/org1/pods/org1-1?"),
        event_call("org1", "NodeRestarted").check(|b| {
            assert_eq!(b["type"], "Normal");
            assert_eq!(b["regarding"]["kind"], "Member");
            let note = b["note"].as_str().unwrap_or_default();
            assert!(
                note.starts_with("Deleted pod org1-1 (Stuck: height 10 for 150s"),
                "{note}"
            );
            assert!(note.ends_with("restart 1 of at most 3 per hour"), "{note}");
        }),
        // The other would make two of four out: held, and said so once.
        event_call("default", "QuorumGuard").check(|b| {
            assert_eq!(b["type"], "Warning");
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.starts_with("Not restarting org2-1 is Stuck"), "{note}");
            assert!(
                note.contains("1 of 4 validators out already, at most 1"),
                "{note}"
            );
        }),
        escrow_status_patch(&c, |b| {
            let s = &b["status"];
            assert_eq!(s["height"], 160);
            assert_eq!(s["nodesSummary"], "2/4");
            let v = &s["validators"];
            assert_eq!(v[1]["name"], "org1-1");
            assert_eq!(v[1]["health"], "Stuck");
            assert_eq!(v[1]["healing"], "Restarting");
            assert_eq!(v[1]["lastRestartTime"], "2025-11-24T16:00:00Z");
            assert_eq!(v[1]["recentRestarts"], json!(["2025-11-24T16:00:00Z"]));
            assert!(v[1]["lastRestartReason"]
                .as_str()
                .is_some_and(|r| r.starts_with("Stuck: height 10")));
            assert_eq!(v[1]["unhealthySince"], "2025-11-24T15:57:30Z");
            assert_eq!(v[3]["health"], "Stuck");
            assert_eq!(v[3]["healing"], "QuorumGuard");
            assert_eq!(v[0]["health"], "Healthy");
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx.clone(), handle, c.clone(), calls).await;
    let text = ctx.metrics.encode();
    for line in [
        r#"kubeledger_operator_node_restarts_total{consortium="escrow",reason="Stuck"} 1"#,
        r#"kubeledger_operator_nodes{consortium="escrow",health="Stuck"} 2"#,
        r#"kubeledger_operator_nodes{consortium="escrow",health="Healthy"} 2"#,
        r#"kubeledger_operator_healing_held_total{consortium="escrow",hold="QuorumGuard"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }

    // 30 s later: org1-1's pod is gone (being recreated), org2-1 still stuck.
    // Still only one out at a time: no DELETE, no repeated Warning.
    let mut c2 = c;
    c2.status = Some(last_status::<ConsortiumStatus>(&bodies));
    ctx.clock.set(T0 + 30_000);
    let (mut next, handle) = reconnected(&ctx);
    next.prober = Arc::new(prober_without(&frozen, "org1-1"));
    let mut calls = running_calls(
        &members,
        json!([ready_pod("org1-0", 0)]),
        four_ready_pods().1,
    );
    calls.push(escrow_status_patch(&c2, |b| {
        let v = &b["status"]["validators"];
        assert_eq!(v[1]["health"], "Unreachable");
        assert_eq!(v[1]["healthReason"], "pod missing");
        assert_eq!(v[1]["healing"], "Restarting");
        assert_eq!(v[3]["healing"], "QuorumGuard");
    }));
    run_consortium_in(Arc::new(next), handle, c2, calls).await;
}

#[tokio::test]
async fn restart_cap_holds_and_marks_the_member_degraded() {
    let (mut c, members) = consortium_of_four();
    let frozen = ["org1-1"];
    // Three restarts of org1-1 within the last hour already.
    if let Some(s) = c.status.as_mut() {
        let times = [50, 30, 10].map(|m| crate::probe::rfc3339_ms(T0 - m * 60_000).expect("t"));
        s.validators = vec![ValidatorStatus {
            name: "org1-1".into(),
            recent_restarts: times.to_vec(),
            last_restart_time: Some(times[2].clone()),
            last_restart_reason: Some("Stuck: height 10".into()),
            ..Default::default()
        }];
    }
    let (ctx, handle) = context_at(prober_with_frozen(&frozen), Some(T0));
    seed_history(&ctx, &frozen, T0);
    let mut calls = running_ready_calls(&members);
    calls.extend([
        // No DELETE: the cap is reached. A Warning on the Member instead.
        event_call("org1", "RestartCapReached").check(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["regarding"]["name"], "org1");
            let note = b["note"].as_str().unwrap_or_default();
            assert!(
                note.contains("restarted 3 time(s) in the last hour"),
                "{note}"
            );
        }),
        escrow_status_patch(&c, |b| {
            let v = &b["status"]["validators"][1];
            assert_eq!(v["healing"], "RestartCapReached");
            assert_eq!(v["recentRestarts"].as_array().map(Vec::len), Some(3));
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx, handle, c.clone(), calls).await;

    // The Member reads it from the Consortium: Degraded, and per-node healing status.
    let mut c2 = c;
    c2.status = last_status(&bodies);
    let secret = org1_secret(json!({"kubeledger.io/consortium": "escrow"}));
    let m = with_finalizer(fixtures::member());
    let mut calls = member_calls(&c2, "org1", Some(secret), Some(2));
    calls.push(member_pods_call(
        "org1",
        json!([ready_pod("org1-0", 0), ready_pod("org1-1", 0)]),
    ));
    calls.push(event_call("org1", "Active"));
    calls.push(member_status_patch("org1", &m, |b| {
        let s = &b["status"];
        assert_eq!(s["conditions"][2]["type"], "Degraded");
        assert_eq!(s["conditions"][2]["status"], "True");
        assert_eq!(s["conditions"][2]["reason"], "RestartCapReached");
        let node = &s["nodes"][1];
        assert_eq!(node["health"], "Stuck");
        assert_eq!(node["healingRestarts"], 3);
        assert_eq!(node["lastRestartReason"], "Stuck: height 10");
        assert!(node["lastRestartTime"].is_string());
    }));
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn healing_disabled_only_reports() {
    let (mut c, members) = consortium_of_four();
    c.spec.healing.enabled = false;
    let frozen = ["org2-0"];
    let (ctx, handle) = context_at(prober_with_frozen(&frozen), Some(T0));
    seed_history(&ctx, &frozen, T0);
    let mut calls = running_ready_calls(&members);
    calls.push(escrow_status_patch(&c, |b| {
        let v = &b["status"]["validators"][2];
        assert_eq!(v["health"], "Stuck");
        assert_eq!(v["healing"], "Disabled");
    }));
    run_consortium_in(ctx, handle, c, calls).await;
}

#[tokio::test]
async fn corrupt_replica_is_rebuilt_volume_first_when_allowed() {
    let (mut c, members) = consortium_of_four();
    c.spec.healing.rebuild_corrupt_replicas = true;
    let mut prober = prober_with_frozen(&[]);
    if let Some(r) = prober.0.get_mut(&host("org2-0", "org2")) {
        r.corrupt = Some("state root disagrees with checkpoint 100".into());
    }
    let (ctx, handle) = context_at(prober, Some(T0));
    let mut calls = running_ready_calls(&members);
    calls.extend([
        // The claim first (held by pvc-protection until the pod is gone), then
        // the pod: the StatefulSet recreates both, the keys stay.
        delete_call("/api/v1/namespaces/org2/persistentvolumeclaims/data-org2-0?"),
        delete_call("/api/v1/namespaces/org2/pods/org2-0?"),
        event_call("org2", "NodeRebuilt").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(
                note.starts_with(
                    "Deleted pod org2-0 and its volume (Corrupt: reports corruption: state root"
                ),
                "{note}"
            );
        }),
        escrow_status_patch(&c, |b| {
            let v = &b["status"]["validators"][2];
            assert_eq!(v["health"], "Corrupt");
            assert_eq!(v["healing"], "Restarting");
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
}

#[tokio::test]
async fn unhealthy_node_status_is_not_rewritten_every_poll() {
    let (c, members) = consortium_of_four();
    // org2-1's pod is Ready but its Status does not answer; the chain is idle.
    let (ctx, _) = context_at(prober_without(&[], "org2-1"), Some(T0));
    let mut stored = c;
    let mut writes = Vec::new();
    for poll in 0..3u64 {
        ctx.clock.set(T0 + poll * 30_000);
        let (next, handle) = reconnected(&ctx);
        let mut calls = running_ready_calls(&members);
        // First poll: everything new; second: the rate becomes known; third: nothing.
        if poll < 2 {
            calls.push(escrow_status_patch(&stored, |b| {
                let v = &b["status"]["validators"][3];
                assert_eq!(v["health"], "Unreachable");
                assert_eq!(v["healthReason"], "pod ready but Status unanswered");
                assert_eq!(v["unhealthySince"], "2025-11-24T16:00:00Z");
                assert!(v.get("healing").is_none(), "not silent for stuckAfter yet");
            }));
        }
        let (_, bodies) = run_consortium_in(Arc::new(next), handle, stored.clone(), calls).await;
        if poll < 2 {
            stored.status = last_status(&bodies);
            writes.push(poll);
        }
    }
    assert_eq!(writes, [0, 1]);
}

#[tokio::test]
async fn genesis_copy_is_removed_where_no_member_is_left() {
    let mut c = consortium_with_genesis();
    if let Some(s) = c.status.as_mut() {
        // A copy was distributed to "retired" for a Member deleted since.
        s.genesis_namespaces = vec!["org1".into(), "org2".into(), "retired".into()];
    }
    let members = fixtures::members_with_keys();
    let mut calls = running_consortium_calls(&members);
    calls.insert(
        3,
        delete_call("/api/v1/namespaces/retired/configmaps/escrow-genesis?"),
    );
    calls.push(escrow_status_patch(&c, |b| {
        assert_eq!(b["status"]["genesisNamespaces"], json!(["org1", "org2"]))
    }));
    run_consortium(c, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn unparsable_healing_settings_are_refused_with_a_warning() {
    let mut c = consortium_with_genesis();
    c.spec.healing.stuck_after = "soon".into();
    let calls = vec![
        members_list(&fixtures::members_with_keys()),
        event_call("default", "InvalidSpec").check(|b| {
            assert_eq!(b["type"], "Warning");
            let note = b["note"].as_str().unwrap_or_default();
            assert!(
                note.contains("spec.healing") && note.contains("soon"),
                "{note}"
            );
        }),
        escrow_status_patch(&c, |b| assert_eq!(b["status"]["phase"], "Degraded")),
    ];
    // No pod is listed, polled or deleted with settings that do not parse.
    let (action, _) = run_consortium(c, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}
