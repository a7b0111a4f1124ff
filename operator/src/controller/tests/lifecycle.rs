//! A Member's and a Consortium's life: creation, updates, status, teardown,
//! and API errors.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use crate::controller::{member, FINALIZER, POLL_INTERVAL, WAIT_INTERVAL, WATCH_TIMEOUT_SECS};
use crate::crd::{ConsortiumStatus, MemberStatus};
use crate::fixtures::api_server::{apply_call, delete_call, Call};
use crate::fixtures::calls::{
    escrow_status_patch, event_call, genesis_copies, get_consortium, key_secret_apply,
    member_calls, member_finalizer_patch, member_pods_call, member_reads, member_status_patch,
    member_teardown_deletes, members_list, node_pods_call, running_consortium_calls,
};
use crate::fixtures::objects::{
    active_members, being_deleted, consortium_with_genesis, key_file, org1_secret,
    prober_answering, ready_pod, retained_secret, with_finalizer, NODES3,
};
use crate::fixtures::reconcile::{
    context, last_status, reconcile_member, run_consortium, run_member,
};
use crate::fixtures::{self};
use crate::probe::{NodeReport, StaticProber};

#[tokio::test]
async fn member_create_generates_keys_and_applies_everything() {
    let c = consortium_with_genesis();
    let m = with_finalizer(fixtures::member());
    let mut calls = member_calls(&c, "org1", None, Some(2));
    calls.push(member_pods_call("org1", json!([])));
    calls.push(member_status_patch("org1", &m, |b| {
        assert_eq!(b["status"]["phase"], "Admitted");
        assert_eq!(
            b["status"]["nodePublicKeys"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(b["status"]["readyNodes"], 0);
    }));
    let (action, bodies) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::requeue(WAIT_INTERVAL));
    // The generated keys were written, never logged: three files, 64 hex chars each.
    let data = bodies[3]["data"].as_object().expect("secret data");
    assert_eq!(data.len(), 3);
}

#[tokio::test]
async fn member_update_keeps_issued_keys_and_skips_unchanged_status() {
    let c = consortium_with_genesis();
    let secret = org1_secret(json!({}));
    let m = with_finalizer(fixtures::member());
    let prober = prober_answering(
        &NODES3[..2],
        &NodeReport {
            height: 7,
            view: 1,
            ..Default::default()
        },
    );
    let pods = json!([ready_pod("org1-0", 0), ready_pod("org1-1", 2)]);

    // First pass: status changes (becomes Active) and is written once.
    let mut calls = member_calls(&c, "org1", Some(secret.clone()), Some(2));
    calls[3] = key_secret_apply("org1", |b| {
        assert_eq!(
            b["data"]["org1-0.key"],
            key_file(&"01".repeat(32)),
            "an issued key was regenerated"
        );
    });
    calls.push(member_pods_call("org1", pods.clone()));
    calls.push(event_call("org1", "Active"));
    calls.push(member_status_patch("org1", &m, |b| {
        assert_eq!(b["status"]["phase"], "Active");
        assert_eq!(b["status"]["height"], 7);
        assert_eq!(b["status"]["nodes"][1]["restarts"], 2);
    }));
    let (action, bodies) = run_member(m.clone(), prober.clone(), calls).await;
    assert_eq!(action, Action::requeue(POLL_INTERVAL));

    // Second pass with that status stored: nothing to write, no status patch.
    let mut m2 = m;
    m2.status = Some(last_status::<MemberStatus>(&bodies));
    let mut calls = member_calls(&c, "org1", Some(secret), Some(2));
    calls.push(member_pods_call("org1", pods));
    run_member(m2, prober, calls).await;
}

#[tokio::test]
async fn member_waits_for_genesis_without_statefulset() {
    let mut c = with_finalizer(fixtures::consortium());
    c.status = None;
    let m = with_finalizer(fixtures::member());
    let mut calls = member_calls(&c, "org1", None, None);
    calls.push(member_status_patch("org1", &m, |b| {
        assert_eq!(b["status"]["phase"], "Pending");
        assert_eq!(b["status"]["conditions"][1]["reason"], "WaitingForGenesis");
    }));
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn member_without_finalizer_gets_one_first() {
    let m = fixtures::member();
    let calls = vec![
        member_finalizer_patch("org1", &with_finalizer(m.clone())).check(|b| {
            let ops = b.as_array().expect("json patch");
            assert!(ops
                .iter()
                .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])));
        }),
    ];
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

/// Asserts that a JSON patch removes something (the finalizer).
fn removes_an_entry(b: &Value) {
    assert!(b
        .as_array()
        .expect("ops")
        .iter()
        .any(|op| op["op"] == "remove"))
}

#[tokio::test]
async fn member_teardown_deletes_in_order_and_keeps_volumes() {
    let m = being_deleted(with_finalizer(fixtures::member()));
    // The Member has no storage of its own: the Consortium's default decides.
    let mut calls = vec![
        get_consortium(&fixtures::consortium()),
        event_call("org1", "TearingDown").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("org1-keys are kept"), "{note}");
        }),
    ];
    calls.extend(member_teardown_deletes("org1"));
    calls[6] = Call::new("DELETE", "/api/v1/namespaces/org1/configmaps/org1-config?").not_found();
    // No PVC deletion (storage.deleteOnTeardown defaults to false) and so no
    // key deletion either: a re-created org1 gets its old identities back.
    calls.push(member_finalizer_patch("org1", &m).check(removes_an_entry));
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn recreated_member_adopts_retained_keys_without_issuing_new_ones() {
    let c = consortium_with_genesis();
    // A new org1 (new uid) after the old one was deleted with its volumes kept.
    let mut m = with_finalizer(fixtures::member());
    m.metadata.uid = Some("33333333-3333-3333-3333-333333333333".into());
    // No KeysGenerated event: nothing was issued.
    let mut calls = member_calls(&c, "org1", Some(retained_secret("escrow")), Some(2));
    calls[3] = key_secret_apply("org1", |b| {
        for (file, seed) in [
            ("org1-0.key", "01"),
            ("org1-1.key", "02"),
            ("admin.key", "03"),
        ] {
            assert_eq!(
                b["data"][file],
                key_file(&seed.repeat(32)),
                "{file} was reissued"
            );
        }
    });
    calls.push(member_pods_call("org1", json!([])));
    calls.push(member_status_patch("org1", &m, |b| {
        let expected = crate::keys::public_key_hex(&"01".repeat(32)).expect("key");
        assert_eq!(b["status"]["nodePublicKeys"][0]["publicKey"], expected);
    }));
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn retained_keys_of_another_consortium_are_refused() {
    let c = consortium_with_genesis();
    let m = with_finalizer(fixtures::member());
    let (ctx, handle) = context(StaticProber::default());
    let mut calls = member_reads(&c, "org1", Some(retained_secret("other-chain")));
    calls.push(event_call("org1", "RetainedKeysMismatch").check(|b| {
        assert_eq!(b["type"], "Warning");
        let note = b["note"].as_str().unwrap_or_default();
        assert!(note.contains("other-chain"), "{note}");
    }));
    let (result, _) = reconcile_member(ctx, handle, Arc::new(m), calls).await;
    let err = result.expect_err("keys of another chain must not be adopted");
    assert!(err.to_string().contains("other-chain"), "{err}");
}

#[tokio::test]
async fn consortium_creates_genesis_once_and_distributes_it() {
    let c = with_finalizer(fixtures::consortium());
    let members = fixtures::members_with_keys();
    let mut calls = vec![
        members_list(&members),
        escrow_status_patch(&c, |b| {
            let g: Value = serde_json::from_str(b["status"]["genesis"].as_str().expect("genesis"))
                .expect("json");
            assert_eq!(g["chain_id"], "escrow-prod");
            assert_eq!(g["validators"].as_array().map(Vec::len), Some(3));
        }),
        event_call("default", "GenesisCreated"),
    ];
    calls.extend(genesis_copies(&["org1", "org2"]));
    calls[4] = apply_call("/api/v1/namespaces/org2/configmaps/escrow-genesis")
        .check(|b| assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Consortium"));
    calls.extend([
        // The health monitor starts with the first genesis: no pods yet.
        node_pods_call("org1", json!([])),
        node_pods_call("org2", json!([])),
        escrow_status_patch(&c, |b| {
            assert_eq!(b["status"]["phase"], "Bootstrapping");
            assert_eq!(b["status"]["membersSummary"], "0/2");
            assert_eq!(b["status"]["genesisNamespaces"], json!(["org1", "org2"]));
        }),
    ]);
    let (_, bodies) = run_consortium(c, StaticProber::default(), calls).await;
    // The final status still carries the very genesis written first.
    assert_eq!(
        bodies[1]["status"]["genesis"],
        bodies[7]["status"]["genesis"]
    );
}

#[tokio::test]
async fn consortium_waits_for_founder_keys() {
    let c = with_finalizer(fixtures::consortium());
    let mut members = fixtures::members_with_keys();
    members[1].status = None;
    let calls = vec![
        members_list(&members),
        escrow_status_patch(&c, |b| {
            assert_eq!(b["status"]["phase"], "Pending");
            assert!(b["status"].get("genesis").is_none());
        }),
    ];
    let (action, _) = run_consortium(c, StaticProber::default(), calls).await;
    assert_eq!(action, Action::requeue(WAIT_INTERVAL));
}

#[tokio::test]
async fn consortium_aggregates_node_status() {
    let c = consortium_with_genesis();
    let members = active_members();
    let primary = members[0].status.as_ref().expect("s").node_public_keys[0]
        .public_key
        .clone();
    let prober = prober_answering(
        &NODES3,
        &NodeReport {
            height: 42,
            view: 3,
            primary,
            last_block_time_ms: 1_764_000_000_000,
            txs_committed: 1000,
            ..Default::default()
        },
    );
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Running");
            assert_eq!(s["height"], 42);
            assert_eq!(s["view"], 3);
            assert_eq!(s["primary"], "org1-0");
            assert_eq!(s["membersSummary"], "2/2");
            assert_eq!(s["lastBlockTime"], "2025-11-24T16:00:00Z");
            assert_eq!(s["conditions"][0]["type"], "Ready");
            assert_eq!(s["conditions"][0]["status"], "True");
            assert_eq!(s["nodesSummary"], "3/3");
            assert_eq!(s["validators"][0]["health"], "Healthy");
            assert_eq!(s["validators"][0]["view"], 3);
            assert!(s["validators"][0].get("healing").is_none());
        }),
    ]);
    let (action, _) = run_consortium(c, prober, calls).await;
    assert_eq!(action, Action::requeue(POLL_INTERVAL));
}

#[tokio::test]
async fn consortium_deletion_waits_for_its_members() {
    let c = being_deleted(consortium_with_genesis());
    let members = fixtures::members_with_keys();
    // Members still exist: no genesis copy is deleted, the finalizer stays.
    let calls = vec![
        members_list(&members),
        event_call("default", "WaitingForMembers").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("org1/org1, org2/org2"), "{note}");
        }),
        escrow_status_patch(&c, |b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Terminating");
            assert_eq!(s["conditions"][1]["type"], "Progressing");
            assert_eq!(s["conditions"][1]["reason"], "WaitingForMembers");
            // The genesis is still there for the Members' pods.
            assert!(s["genesis"].is_string());
        }),
    ];
    let (action, bodies) = run_consortium(c.clone(), StaticProber::default(), calls).await;
    assert_eq!(action, Action::requeue(WAIT_INTERVAL));

    // Checked again later with the same Members: no new Event, no status write.
    let mut c2 = c;
    c2.status = Some(last_status::<ConsortiumStatus>(&bodies));
    let (action, _) =
        run_consortium(c2, StaticProber::default(), vec![members_list(&members)]).await;
    assert_eq!(action, Action::requeue(WAIT_INTERVAL));
}

#[tokio::test]
async fn consortium_teardown_removes_genesis_copies_after_the_members() {
    let mut c = being_deleted(consortium_with_genesis());
    if let Some(s) = c.status.as_mut() {
        s.genesis_namespaces = vec!["org1".into(), "org2".into()];
    }
    let calls = vec![
        members_list(&[]),
        event_call("default", "TearingDown"),
        delete_call("/api/v1/namespaces/org1/configmaps/escrow-genesis?"),
        Call::new(
            "DELETE",
            "/api/v1/namespaces/org2/configmaps/escrow-genesis?",
        )
        .not_found(),
        Call::new("PATCH", "/apis/kubeledger.io/v1alpha1/consortia/escrow?")
            .respond(serde_json::to_value(&c).expect("json"))
            .check(removes_an_entry),
    ];
    run_consortium(c, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn member_teardown_deletes_volumes_when_asked() {
    let mut m = being_deleted(with_finalizer(fixtures::member()));
    m.spec.storage = Some(crate::crd::StorageSpec {
        delete_on_teardown: true,
        ..Default::default()
    });
    let ns = "/api/v1/namespaces/org1";
    let mut calls = vec![event_call("org1", "TearingDown")];
    calls.extend(member_teardown_deletes("org1"));
    // Volumes after the pods' StatefulSet is gone, by the node selector ...
    calls.push(
        Call::new(
            "DELETE",
            format!("{ns}/persistentvolumeclaims?&labelSelector=app.kubernetes.io%2Fname%3Dkubeledger-node%2Capp.kubernetes.io%2Finstance%3Dorg1"),
        )
        .respond(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": []})),
    );
    // ... and the keys only with them, last.
    calls.push(delete_call(format!("{ns}/secrets/org1-keys?")));
    calls.push(member_finalizer_patch("org1", &m));
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    let c = consortium_with_genesis();
    let m = Arc::new(with_finalizer(fixtures::member()));
    let (ctx, handle) = context(StaticProber::default());
    // The API server fails the first apply: the reconcile stops there.
    let mut calls = member_reads(&c, "org1", None);
    calls.push(apply_call("/api/v1/namespaces/org1/serviceaccounts/org1-node").fail(500));
    let (result, _) = reconcile_member(ctx.clone(), handle, m.clone(), calls).await;
    let err = result.expect_err("a failed apply fails the reconcile");
    assert!(err.to_string().contains("etcd unavailable"), "{err}");
    // The error says what was done to which object.
    assert!(
        err.to_string()
            .contains("apply ServiceAccount org1/org1-node: "),
        "{err}"
    );

    // Retries back off exponentially per object, capped at five minutes.
    let delays: Vec<Action> = (0..8)
        .map(|_| member::error_policy(m.clone(), &err, ctx.clone()))
        .collect();
    let secs = [5, 10, 20, 40, 80, 160, 300, 300];
    for (delay, s) in delays.iter().zip(secs) {
        assert_eq!(*delay, Action::requeue(Duration::from_secs(s)));
    }
    let text = ctx.metrics.encode();
    assert!(
        text.contains(
            r#"kubeledger_operator_reconcile_failures_total{controller="member",error="kube"} 8"#
        ),
        "{text}"
    );
    // Another object has its own back-off.
    let other = Arc::new(fixtures::member_named("org2", 1));
    assert_eq!(
        member::error_policy(other, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[test]
fn watches_end_before_load_balancers_drop_them() {
    // Common idle timeouts: AWS NLB 350 s, Azure LB 4 min (240 s) is configurable
    // up, GCP 600 s; 290 s stays under the usual 300 s default of proxies.
    const { assert!(WATCH_TIMEOUT_SECS < 300) };
}

#[tokio::test]
async fn consortium_status_is_not_rewritten_when_nothing_changed() {
    let c = consortium_with_genesis();
    let members = active_members();
    let prober = prober_answering(
        &NODES3,
        &NodeReport {
            height: 9,
            view: 0,
            txs_committed: 50,
            ..Default::default()
        },
    );
    let mut calls = running_consortium_calls(&members);
    calls.push(event_call("default", "Running"));
    calls.push(escrow_status_patch(&c, |_| {}));
    let (_, bodies) = run_consortium(c.clone(), prober.clone(), calls).await;
    let status: ConsortiumStatus = last_status(&bodies);
    assert_eq!(status.height, Some(9));

    // Second poll, no new transactions: the rate becomes known (0) and is written.
    let mut c2 = c;
    c2.status = Some(status);
    let mut calls = running_consortium_calls(&members);
    calls.push(escrow_status_patch(&c2, |b| {
        assert_eq!(b["status"]["recentTps"], 0.0)
    }));
    let (_, bodies) = run_consortium(c2.clone(), prober.clone(), calls).await;

    // Same cluster, same answers again: no status write and no second Running event.
    let mut c3 = c2;
    c3.status = Some(last_status(&bodies));
    let calls = running_consortium_calls(&members);
    let (action, _) = run_consortium(c3, prober, calls).await;
    assert_eq!(action, Action::requeue(POLL_INTERVAL));
}
