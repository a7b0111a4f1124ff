//! Reconcile call-contract tests against a mocked API server (tower-test): every
//! request's method, path and body is asserted and answered in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};

use super::{consortium, member, Context, FINALIZER};
use crate::crd::{Consortium, ConsortiumStatus, Member, MemberStatus};
use crate::fixtures;
use crate::fixtures::recording_chain::RecordingChain;
use crate::genesis::{build_genesis, genesis_hash, GenesisText};
use crate::metrics::Metrics;
use crate::probe::{NodeReport, StaticProber};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Check = Box<dyn Fn(&Value) + Send>;

/// One expected request and the answer to give.
struct Call {
    method: &'static str,
    uri: String,
    status: u16,
    respond: Option<Value>,
    check: Option<Check>,
}

impl Call {
    fn new(method: &'static str, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            status: 200,
            respond: None,
            check: None,
        }
    }
    fn respond(mut self, v: Value) -> Self {
        self.respond = Some(v);
        self
    }
    fn not_found(mut self) -> Self {
        self.status = 404;
        self.respond = Some(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
        );
        self
    }
    fn fail(mut self, code: u16) -> Self {
        self.status = code;
        self.respond = Some(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "InternalError", "message": "etcd unavailable", "code": code}),
        );
        self
    }
    fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
    }
}

/// The status patch of the `escrow` Consortium, answered with `c`, its
/// body checked by `check`.
fn escrow_status_patch(c: &Consortium, check: impl Fn(&Value) + Send + 'static) -> Call {
    Call::new(
        "PATCH",
        apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
    )
    .respond(serde_json::to_value(c).expect("json"))
    .check(check)
}

const APPLY: &str = "?&force=true&fieldManager=kubeledger-operator";

fn apply_uri(path: &str) -> String {
    format!("{path}{APPLY}")
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

/// Answers `calls` in order; returns the request bodies.
fn serve(mut handle: Handle, calls: Vec<Call>) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        for call in calls {
            let (request, send) = handle.next_request().await.expect("service not called");
            assert_eq!(
                (request.method().as_str(), request.uri().to_string()),
                (call.method, call.uri.clone()),
                "unexpected request"
            );
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("json body")
            };
            if let Some(check) = &call.check {
                check(&body);
            }
            let answer = call.respond.unwrap_or_else(|| body.clone());
            let response = Response::builder()
                .status(call.status)
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("response");
            send.send_response(response);
            bodies.push(body);
        }
        bodies
    })
}

fn context(prober: StaticProber) -> (Arc<Context>, Handle) {
    context_at(prober, None)
}

/// A context whose health monitor sees the time `now` (the real clock if None).
fn context_at(prober: StaticProber, now: Option<u64>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut ctx = Context::new(
        client,
        fixtures::settings(),
        Arc::new(Metrics::default()),
        Arc::new(prober),
    );
    if let Some(now) = now {
        ctx.clock = super::Clock::manual(now);
    }
    // No test talks to a real node.
    ctx.chain = Arc::new(RecordingChain::default());
    (Arc::new(ctx), handle)
}

async fn run_member(m: Member, prober: StaticProber, calls: Vec<Call>) -> (Action, Vec<Value>) {
    let (ctx, handle) = context(prober);
    let server = serve(handle, calls);
    let action = tokio::time::timeout(Duration::from_secs(5), member::reconcile(Arc::new(m), ctx))
        .await
        .expect("reconcile timed out (an unexpected API call?)")
        .expect("reconcile");
    let bodies = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("not every expected call was made")
        .expect("verifier");
    (action, bodies)
}

async fn run_consortium(
    c: Consortium,
    prober: StaticProber,
    calls: Vec<Call>,
) -> (Action, Vec<Value>) {
    let (ctx, handle) = context(prober);
    run_consortium_in(ctx, handle, c, calls).await
}

async fn run_consortium_in(
    ctx: Arc<Context>,
    handle: Handle,
    c: Consortium,
    calls: Vec<Call>,
) -> (Action, Vec<Value>) {
    let server = serve(handle, calls);
    let action = tokio::time::timeout(
        Duration::from_secs(5),
        consortium::reconcile(Arc::new(c), ctx),
    )
    .await
    .expect("reconcile timed out (an unexpected API call?)")
    .expect("reconcile");
    let bodies = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("not every expected call was made")
        .expect("verifier");
    (action, bodies)
}

fn with_finalizer<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().finalizers = Some(vec![FINALIZER.into()]);
    obj
}

/// The fixture Consortium after genesis (org1 with 2 nodes, org2 with 1).
fn consortium_with_genesis() -> Consortium {
    let mut c = with_finalizer(fixtures::consortium());
    let g = build_genesis(&c, &fixtures::members_with_keys(), 1, "cluster.local")
        .expect("valid")
        .expect("ready");
    let text = g.to_json();
    c.status = Some(ConsortiumStatus {
        genesis_hash: Some(genesis_hash(&text)),
        genesis: Some(text),
        config: Some(g.effective_config()),
        ..Default::default()
    });
    c
}

fn member_json(m: &Member) -> Value {
    serde_json::to_value(m).expect("json")
}

fn member_apply_calls(c: &Consortium, existing_secret: Option<Value>) -> Vec<Call> {
    let ns = "/api/v1/namespaces/org1";
    let mut calls = vec![
        Call::new("GET", "/apis/kubeledger.io/v1alpha1/consortia/escrow")
            .respond(serde_json::to_value(c).expect("json")),
    ];
    let secret_get = Call::new("GET", format!("{ns}/secrets/org1-keys"));
    calls.push(match existing_secret {
        Some(s) => secret_get.respond(s),
        None => secret_get.not_found(),
    });
    calls.push(
        Call::new(
            "PATCH",
            apply_uri(&format!("{ns}/serviceaccounts/org1-node")),
        )
        .check(|b| assert_eq!(b["automountServiceAccountToken"], false)),
    );
    calls.push(
        Call::new("PATCH", apply_uri(&format!("{ns}/secrets/org1-keys"))).check(|b| {
            assert_eq!(b["kind"], "Secret");
            // Keys follow the volumes, not the Member: never garbage-collected with it.
            assert!(b["metadata"].get("ownerReferences").is_none(), "{b}");
        }),
    );
    calls
}

fn member_workload_calls() -> Vec<Call> {
    let ns = "/api/v1/namespaces/org1";
    vec![
        Call::new("PATCH", apply_uri(&format!("{ns}/configmaps/org1-config"))),
        Call::new("PATCH", apply_uri(&format!("{ns}/services/org1-nodes")))
            .check(|b| assert_eq!(b["spec"]["clusterIP"], "None")),
        Call::new("PATCH", apply_uri(&format!("{ns}/services/org1-client"))),
        Call::new(
            "PATCH",
            apply_uri("/apis/policy/v1/namespaces/org1/poddisruptionbudgets/org1"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/apis/apps/v1/namespaces/org1/statefulsets/org1"),
        )
        .check(|b| assert_eq!(b["spec"]["replicas"], 2)),
    ]
}

fn pods_call(pods: Value) -> Call {
    Call::new(
        "GET",
        "/api/v1/namespaces/org1/pods?&labelSelector=app.kubernetes.io%2Fname%3Dkubeledger-node%2Capp.kubernetes.io%2Finstance%3Dorg1",
    )
    .respond(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}))
}

/// The health monitor's pod LIST in one member namespace.
fn node_pods_call(ns: &str, pods: Value) -> Call {
    Call::new(
        "GET",
        format!("/api/v1/namespaces/{ns}/pods?&labelSelector=app.kubernetes.io%2Fname%3Dkubeledger-node%2Ckubeledger.io%2Fconsortium%3Descrow"),
    )
    .respond(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}))
}

/// Both member namespaces with every node's pod ready (fixture sizes).
fn all_pods_ready() -> Vec<Call> {
    vec![
        node_pods_call(
            "org1",
            json!([ready_pod("org1-0", 0), ready_pod("org1-1", 0)]),
        ),
        node_pods_call("org2", json!([ready_pod("org2-0", 0)])),
    ]
}

fn event_call(ns: &str, reason: &'static str) -> Call {
    Call::new(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{ns}/events?"),
    )
    .check(move |b| assert_eq!(b["reason"], reason))
}

fn ready_pod(name: &str, restarts: i32) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "org1"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "node", "ready": true, "restartCount": restarts, "image": "x", "imageID": "x"}]
        }
    })
}

#[tokio::test]
async fn member_create_generates_keys_and_applies_everything() {
    let c = consortium_with_genesis();
    let m = with_finalizer(fixtures::member());
    let mut calls = member_apply_calls(&c, None);
    calls.insert(4, event_call("org1", "KeysGenerated"));
    calls.extend(member_workload_calls());
    calls.push(pods_call(json!([])));
    let m_answer = member_json(&m);
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1/status"),
        )
        .respond(m_answer)
        .check(|b| {
            assert_eq!(b["status"]["phase"], "Admitted");
            assert_eq!(
                b["status"]["nodePublicKeys"].as_array().map(Vec::len),
                Some(2)
            );
            assert_eq!(b["status"]["readyNodes"], 0);
        }),
    );
    let (action, bodies) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::requeue(super::WAIT_INTERVAL));
    // The generated keys were written, never logged: three files, 64 hex chars each.
    let data = bodies[3]["data"].as_object().expect("secret data");
    assert_eq!(data.len(), 3);
}

#[tokio::test]
async fn member_update_keeps_issued_keys_and_skips_unchanged_status() {
    let c = consortium_with_genesis();
    let keys = fixtures::keys();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "org1-keys", "namespace": "org1"},
        "data": keys.to_files().into_iter().map(|(k, v)| (k, Value::from(base64(v.as_bytes())))).collect::<serde_json::Map<_, _>>()
    });
    let m = with_finalizer(fixtures::member());
    let reports: HashMap<String, NodeReport> = ["org1-0", "org1-1"]
        .iter()
        .map(|n| {
            (
                format!("{n}.org1-nodes.org1.svc.cluster.local"),
                NodeReport {
                    height: 7,
                    view: 1,
                    ..Default::default()
                },
            )
        })
        .collect();
    let prober = StaticProber(reports);
    let pods = json!([ready_pod("org1-0", 0), ready_pod("org1-1", 2)]);

    // First pass: status changes (becomes Active) and is written once.
    let mut calls = member_apply_calls(&c, Some(secret.clone()));
    calls[3] = Call::new(
        "PATCH",
        apply_uri("/api/v1/namespaces/org1/secrets/org1-keys"),
    )
    .check(move |b| {
        let expected = base64(format!("{}\n", "01".repeat(32)).as_bytes());
        assert_eq!(
            b["data"]["org1-0.key"],
            Value::from(expected),
            "an issued key was regenerated"
        );
    });
    calls.extend(member_workload_calls());
    calls.push(pods_call(pods.clone()));
    calls.push(event_call("org1", "Active"));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1/status"),
        )
        .respond(member_json(&m))
        .check(|b| {
            assert_eq!(b["status"]["phase"], "Active");
            assert_eq!(b["status"]["height"], 7);
            assert_eq!(b["status"]["nodes"][1]["restarts"], 2);
        }),
    );
    let (action, bodies) = run_member(m.clone(), prober.clone(), calls).await;
    assert_eq!(action, Action::requeue(super::POLL_INTERVAL));

    // Second pass with that status stored: nothing to write, no status patch.
    let status: MemberStatus =
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status");
    let mut m2 = m;
    m2.status = Some(status);
    let mut calls = member_apply_calls(&c, Some(secret));
    calls.extend(member_workload_calls());
    calls.push(pods_call(pods));
    run_member(m2, prober, calls).await;
}

#[tokio::test]
async fn member_waits_for_genesis_without_statefulset() {
    let mut c = with_finalizer(fixtures::consortium());
    c.status = None;
    let m = with_finalizer(fixtures::member());
    let mut calls = member_apply_calls(&c, None);
    calls.insert(4, event_call("org1", "KeysGenerated"));
    calls.extend(member_workload_calls().into_iter().take(4));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1/status"),
        )
        .respond(member_json(&m))
        .check(|b| {
            assert_eq!(b["status"]["phase"], "Pending");
            assert_eq!(b["status"]["conditions"][1]["reason"], "WaitingForGenesis");
        }),
    );
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn member_without_finalizer_gets_one_first() {
    let m = fixtures::member();
    let answer = member_json(&with_finalizer(m.clone()));
    let calls = vec![Call::new(
        "PATCH",
        "/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1?",
    )
    .respond(answer)
    .check(|b| {
        let ops = b.as_array().expect("json patch");
        assert!(ops
            .iter()
            .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])));
    })];
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn member_teardown_deletes_in_order_and_keeps_volumes() {
    let mut m = with_finalizer(fixtures::member());
    m.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let ns = "/api/v1/namespaces/org1";
    let calls = vec![
        // The Member has no storage of its own: the Consortium's default decides.
        Call::new("GET", "/apis/kubeledger.io/v1alpha1/consortia/escrow")
            .respond(serde_json::to_value(fixtures::consortium()).expect("json")),
        event_call("org1", "TearingDown").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("org1-keys are kept"), "{note}");
        }),
        Call::new("DELETE", "/apis/apps/v1/namespaces/org1/statefulsets/org1?").respond(success()),
        Call::new(
            "DELETE",
            "/apis/policy/v1/namespaces/org1/poddisruptionbudgets/org1?",
        )
        .respond(success()),
        Call::new("DELETE", format!("{ns}/services/org1-client?")).respond(success()),
        Call::new("DELETE", format!("{ns}/services/org1-nodes?")).respond(success()),
        Call::new("DELETE", format!("{ns}/configmaps/org1-config?")).not_found(),
        Call::new("DELETE", format!("{ns}/serviceaccounts/org1-node?")).respond(success()),
        // No PVC deletion (storage.deleteOnTeardown defaults to false) and so no
        // key deletion either: a re-created org1 gets its old identities back.
        Call::new(
            "PATCH",
            "/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1?",
        )
        .respond(member_json(&m))
        .check(|b| {
            assert!(b
                .as_array()
                .expect("ops")
                .iter()
                .any(|op| op["op"] == "remove"))
        }),
    ];
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

/// The Secret a deleted org1 left behind (no owner, as the operator wrote it).
fn retained_secret(consortium: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "org1-keys", "namespace": "org1",
            "labels": {"kubeledger.io/member": "org1", "kubeledger.io/consortium": consortium}
        },
        "data": fixtures::keys().to_files().into_iter().map(|(k, v)| (k, Value::from(base64(v.as_bytes())))).collect::<serde_json::Map<_, _>>()
    })
}

#[tokio::test]
async fn recreated_member_adopts_retained_keys_without_issuing_new_ones() {
    let c = consortium_with_genesis();
    // A new org1 (new uid) after the old one was deleted with its volumes kept.
    let mut m = with_finalizer(fixtures::member());
    m.metadata.uid = Some("33333333-3333-3333-3333-333333333333".into());
    let mut calls = member_apply_calls(&c, Some(retained_secret("escrow")));
    calls[3] = Call::new(
        "PATCH",
        apply_uri("/api/v1/namespaces/org1/secrets/org1-keys"),
    )
    .check(|b| {
        for (file, seed) in [
            ("org1-0.key", "01"),
            ("org1-1.key", "02"),
            ("admin.key", "03"),
        ] {
            let expected = base64(format!("{}\n", seed.repeat(32)).as_bytes());
            assert_eq!(
                b["data"][file],
                Value::from(expected),
                "{file} was reissued"
            );
        }
    });
    // No KeysGenerated event: nothing was issued.
    calls.extend(member_workload_calls());
    calls.push(pods_call(json!([])));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1/status"),
        )
        .respond(member_json(&m))
        .check(|b| {
            let expected = crate::keys::public_key_hex(&"01".repeat(32)).expect("key");
            assert_eq!(b["status"]["nodePublicKeys"][0]["publicKey"], expected);
        }),
    );
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn retained_keys_of_another_consortium_are_refused() {
    let c = consortium_with_genesis();
    let m = with_finalizer(fixtures::member());
    let (ctx, handle) = context(StaticProber::default());
    let mut calls = member_apply_calls(&c, Some(retained_secret("other-chain")));
    calls.truncate(2);
    calls.push(event_call("org1", "RetainedKeysMismatch").check(|b| {
        assert_eq!(b["type"], "Warning");
        let note = b["note"].as_str().unwrap_or_default();
        assert!(note.contains("other-chain"), "{note}");
    }));
    let server = serve(handle, calls);
    let err = tokio::time::timeout(Duration::from_secs(5), member::reconcile(Arc::new(m), ctx))
        .await
        .expect("reconcile timed out (an unexpected API call?)")
        .expect_err("keys of another chain must not be adopted");
    assert!(err.to_string().contains("other-chain"), "{err}");
    server.await.expect("verifier");
}

fn members_list(members: &[Member]) -> Call {
    Call::new("GET", "/apis/kubeledger.io/v1alpha1/members?")
        .respond(json!({"apiVersion": "kubeledger.io/v1alpha1", "kind": "MemberList", "metadata": {}, "items": members}))
}

#[tokio::test]
async fn consortium_creates_genesis_once_and_distributes_it() {
    let c = with_finalizer(fixtures::consortium());
    let members = fixtures::members_with_keys();
    let answer = serde_json::to_value(&c).expect("json");
    let calls = vec![
        members_list(&members),
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
        )
        .respond(answer.clone())
        .check(|b| {
            let g: Value = serde_json::from_str(b["status"]["genesis"].as_str().expect("genesis"))
                .expect("json");
            assert_eq!(g["chain_id"], "escrow-prod");
            assert_eq!(g["validators"].as_array().map(Vec::len), Some(3));
        }),
        event_call("default", "GenesisCreated"),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        )
        .check(|b| assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Consortium")),
        // The health monitor starts with the first genesis: no pods yet.
        node_pods_call("org1", json!([])),
        node_pods_call("org2", json!([])),
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
        )
        .respond(answer)
        .check(|b| {
            assert_eq!(b["status"]["phase"], "Bootstrapping");
            assert_eq!(b["status"]["membersSummary"], "0/2");
            assert_eq!(b["status"]["genesisNamespaces"], json!(["org1", "org2"]));
        }),
    ];
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
    assert_eq!(action, Action::requeue(super::WAIT_INTERVAL));
}

#[tokio::test]
async fn consortium_aggregates_node_status() {
    let c = consortium_with_genesis();
    let mut members = fixtures::members_with_keys();
    for m in &mut members {
        if let Some(s) = m.status.as_mut() {
            s.phase = Some("Active".into());
        }
    }
    let primary = members[0].status.as_ref().expect("s").node_public_keys[0]
        .public_key
        .clone();
    let hosts = [
        "org1-0.org1-nodes.org1.svc.cluster.local",
        "org1-1.org1-nodes.org1.svc.cluster.local",
        "org2-0.org2-nodes.org2.svc.cluster.local",
    ];
    let prober = StaticProber(
        hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    NodeReport {
                        height: 42,
                        view: 3,
                        primary: primary.clone(),
                        last_block_time_ms: 1_764_000_000_000,
                        txs_committed: 1000,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    );
    let mut calls = vec![
        members_list(&members),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        ),
    ];
    calls.extend(all_pods_ready());
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
    assert_eq!(action, Action::requeue(super::POLL_INTERVAL));
}

#[tokio::test]
async fn consortium_deletion_waits_for_its_members() {
    let mut c = consortium_with_genesis();
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
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
    assert_eq!(action, Action::requeue(super::WAIT_INTERVAL));

    // Checked again later with the same Members: no new Event, no status write.
    let status: ConsortiumStatus =
        serde_json::from_value(bodies[2]["status"].clone()).expect("status");
    let mut c2 = c;
    c2.status = Some(status);
    let (action, _) =
        run_consortium(c2, StaticProber::default(), vec![members_list(&members)]).await;
    assert_eq!(action, Action::requeue(super::WAIT_INTERVAL));
}

#[tokio::test]
async fn consortium_teardown_removes_genesis_copies_after_the_members() {
    let mut c = consortium_with_genesis();
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    if let Some(s) = c.status.as_mut() {
        s.genesis_namespaces = vec!["org1".into(), "org2".into()];
    }
    let calls = vec![
        members_list(&[]),
        event_call("default", "TearingDown"),
        Call::new(
            "DELETE",
            "/api/v1/namespaces/org1/configmaps/escrow-genesis?",
        )
        .respond(success()),
        Call::new(
            "DELETE",
            "/api/v1/namespaces/org2/configmaps/escrow-genesis?",
        )
        .not_found(),
        Call::new("PATCH", "/apis/kubeledger.io/v1alpha1/consortia/escrow?")
            .respond(serde_json::to_value(&c).expect("json"))
            .check(|b| {
                assert!(b
                    .as_array()
                    .expect("ops")
                    .iter()
                    .any(|op| op["op"] == "remove"))
            }),
    ];
    run_consortium(c, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn member_teardown_deletes_volumes_when_asked() {
    let mut m = with_finalizer(fixtures::member());
    m.spec.storage = Some(crate::crd::StorageSpec {
        delete_on_teardown: true,
        ..Default::default()
    });
    m.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let ns = "/api/v1/namespaces/org1";
    let mut calls = vec![event_call("org1", "TearingDown")];
    for path in [
        "/apis/apps/v1/namespaces/org1/statefulsets/org1?".to_string(),
        "/apis/policy/v1/namespaces/org1/poddisruptionbudgets/org1?".to_string(),
        format!("{ns}/services/org1-client?"),
        format!("{ns}/services/org1-nodes?"),
        format!("{ns}/configmaps/org1-config?"),
        format!("{ns}/serviceaccounts/org1-node?"),
    ] {
        calls.push(Call::new("DELETE", path).respond(success()));
    }
    // Volumes after the pods' StatefulSet is gone, by the node selector ...
    calls.push(
        Call::new(
            "DELETE",
            format!("{ns}/persistentvolumeclaims?&labelSelector=app.kubernetes.io%2Fname%3Dkubeledger-node%2Capp.kubernetes.io%2Finstance%3Dorg1"),
        )
        .respond(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": []})),
    );
    // ... and the keys only with them, last.
    calls.push(Call::new("DELETE", format!("{ns}/secrets/org1-keys?")).respond(success()));
    calls.push(
        Call::new(
            "PATCH",
            "/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1?",
        )
        .respond(member_json(&m)),
    );
    let (action, _) = run_member(m, StaticProber::default(), calls).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    let c = consortium_with_genesis();
    let m = with_finalizer(fixtures::member());
    let (ctx, handle) = context(StaticProber::default());
    let mut calls = member_apply_calls(&c, None);
    // The API server fails the first apply: the reconcile stops there.
    calls.truncate(3);
    calls[2] = Call::new(
        "PATCH",
        apply_uri("/api/v1/namespaces/org1/serviceaccounts/org1-node"),
    )
    .fail(500);
    let server = serve(handle, calls);
    let m = Arc::new(m);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        member::reconcile(m.clone(), ctx.clone()),
    )
    .await
    .expect("reconcile timed out")
    .expect_err("a failed apply fails the reconcile");
    assert!(err.to_string().contains("etcd unavailable"), "{err}");
    server.await.expect("verifier");

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
    const { assert!(super::WATCH_TIMEOUT_SECS < 300) };
}

#[tokio::test]
async fn consortium_status_is_not_rewritten_when_nothing_changed() {
    let c = consortium_with_genesis();
    let mut members = fixtures::members_with_keys();
    for m in &mut members {
        if let Some(s) = m.status.as_mut() {
            s.phase = Some("Active".into());
        }
    }
    let hosts = [
        "org1-0.org1-nodes.org1.svc.cluster.local",
        "org1-1.org1-nodes.org1.svc.cluster.local",
        "org2-0.org2-nodes.org2.svc.cluster.local",
    ];
    let prober = StaticProber(
        hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    NodeReport {
                        height: 9,
                        view: 0,
                        txs_committed: 50,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    );
    let genesis_applies = || {
        let mut calls = vec![
            Call::new(
                "PATCH",
                apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
            ),
            Call::new(
                "PATCH",
                apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
            ),
        ];
        calls.extend(all_pods_ready());
        calls
    };
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_applies());
    calls.push(event_call("default", "Running"));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
        )
        .respond(serde_json::to_value(&c).expect("json")),
    );
    let (_, bodies) = run_consortium(c.clone(), prober.clone(), calls).await;
    let status: ConsortiumStatus =
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status");
    assert_eq!(status.height, Some(9));

    // Second poll, no new transactions: the rate becomes known (0) and is written.
    let mut c2 = c;
    c2.status = Some(status);
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_applies());
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
        )
        .respond(serde_json::to_value(&c2).expect("json"))
        .check(|b| assert_eq!(b["status"]["recentTps"], 0.0)),
    );
    let (_, bodies) = run_consortium(c2.clone(), prober.clone(), calls).await;
    let status: ConsortiumStatus =
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status");

    // Same cluster, same answers again: no status write and no second Running event.
    let mut c3 = c2;
    c3.status = Some(status);
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_applies());
    let (action, _) = run_consortium(c3, prober, calls).await;
    assert_eq!(action, Action::requeue(super::POLL_INTERVAL));
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- health monitor and healing ------------------------------------------------

const T0: u64 = 1_764_000_000_000;
const NODES4: [(&str, &str); 4] = [
    ("org1-0", "org1"),
    ("org1-1", "org1"),
    ("org2-0", "org2"),
    ("org2-1", "org2"),
];

fn host(node: &str, member: &str) -> String {
    format!("{node}.{member}-nodes.{member}.svc.cluster.local")
}

/// Four validators: org1 (2 nodes) and org2 (2 nodes), genesis fixed.
fn consortium_of_four() -> (Consortium, Vec<Member>) {
    let members = fixtures::members_with_keys_sized(2);
    let mut c = with_finalizer(fixtures::consortium());
    let g = build_genesis(&c, &members, 1, "cluster.local")
        .expect("valid")
        .expect("ready");
    let text = g.to_json();
    c.status = Some(ConsortiumStatus {
        genesis_hash: Some(genesis_hash(&text)),
        genesis: Some(text),
        config: Some(g.effective_config()),
        genesis_namespaces: vec!["org1".into(), "org2".into()],
        ..Default::default()
    });
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

fn genesis_and_pods(pods_org1: Value, pods_org2: Value) -> Vec<Call> {
    vec![
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        ),
        node_pods_call("org1", pods_org1),
        node_pods_call("org2", pods_org2),
    ]
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
    let (p1, p2) = four_ready_pods();
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_and_pods(p1, p2));
    calls.extend([
        // One pod deleted: the StatefulSet recreates it, state transfer catches up.
        Call::new("DELETE", "/api/v1/namespaces/org1/pods/org1-1?").respond(success()),
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
    let status: ConsortiumStatus =
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status");
    let mut c2 = c;
    c2.status = Some(status);
    ctx.clock.set(T0 + 30_000);
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut next = (*ctx).clone();
    next.client = Client::new(service, "default");
    next.prober = Arc::new(StaticProber(
        prober_with_frozen(&frozen)
            .0
            .into_iter()
            .filter(|(h, _)| !h.starts_with("org1-1."))
            .collect(),
    ));
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_and_pods(
        json!([ready_pod("org1-0", 0)]),
        four_ready_pods().1,
    ));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
        )
        .respond(serde_json::to_value(&c2).expect("json"))
        .check(|b| {
            let v = &b["status"]["validators"];
            assert_eq!(v[1]["health"], "Unreachable");
            assert_eq!(v[1]["healthReason"], "pod missing");
            assert_eq!(v[1]["healing"], "Restarting");
            assert_eq!(v[3]["healing"], "QuorumGuard");
        }),
    );
    run_consortium_in(Arc::new(next), handle, c2, calls).await;
}

#[tokio::test]
async fn restart_cap_holds_and_marks_the_member_degraded() {
    let (mut c, members) = consortium_of_four();
    let frozen = ["org1-1"];
    // Three restarts of org1-1 within the last hour already.
    if let Some(s) = c.status.as_mut() {
        let times = [50, 30, 10].map(|m| crate::probe::rfc3339_ms(T0 - m * 60_000).expect("t"));
        s.validators = vec![crate::crd::ValidatorStatus {
            name: "org1-1".into(),
            recent_restarts: times.to_vec(),
            last_restart_time: Some(times[2].clone()),
            last_restart_reason: Some("Stuck: height 10".into()),
            ..Default::default()
        }];
    }
    let (ctx, handle) = context_at(prober_with_frozen(&frozen), Some(T0));
    seed_history(&ctx, &frozen, T0);
    let (p1, p2) = four_ready_pods();
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_and_pods(p1, p2));
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
    c2.status =
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status");
    let keys = fixtures::keys();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "org1-keys", "namespace": "org1", "labels": {"kubeledger.io/consortium": "escrow"}},
        "data": keys.to_files().into_iter().map(|(k, v)| (k, Value::from(base64(v.as_bytes())))).collect::<serde_json::Map<_, _>>()
    });
    let m = with_finalizer(fixtures::member());
    let mut calls = member_apply_calls(&c2, Some(secret));
    calls.extend(member_workload_calls());
    calls.push(pods_call(json!([
        ready_pod("org1-0", 0),
        ready_pod("org1-1", 0)
    ])));
    calls.push(event_call("org1", "Active"));
    calls.push(
        Call::new(
            "PATCH",
            apply_uri("/apis/kubeledger.io/v1alpha1/namespaces/org1/members/org1/status"),
        )
        .respond(member_json(&m))
        .check(|b| {
            let s = &b["status"];
            assert_eq!(s["conditions"][2]["type"], "Degraded");
            assert_eq!(s["conditions"][2]["status"], "True");
            assert_eq!(s["conditions"][2]["reason"], "RestartCapReached");
            let node = &s["nodes"][1];
            assert_eq!(node["health"], "Stuck");
            assert_eq!(node["healingRestarts"], 3);
            assert_eq!(node["lastRestartReason"], "Stuck: height 10");
            assert!(node["lastRestartTime"].is_string());
        }),
    );
    run_member(m, StaticProber::default(), calls).await;
}

#[tokio::test]
async fn healing_disabled_only_reports() {
    let (mut c, members) = consortium_of_four();
    c.spec.healing.enabled = false;
    let frozen = ["org2-0"];
    let (ctx, handle) = context_at(prober_with_frozen(&frozen), Some(T0));
    seed_history(&ctx, &frozen, T0);
    let (p1, p2) = four_ready_pods();
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_and_pods(p1, p2));
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
    let (p1, p2) = four_ready_pods();
    let mut calls = vec![members_list(&members)];
    calls.extend(genesis_and_pods(p1, p2));
    calls.extend([
        // The claim first (held by pvc-protection until the pod is gone), then
        // the pod: the StatefulSet recreates both, the keys stay.
        Call::new(
            "DELETE",
            "/api/v1/namespaces/org2/persistentvolumeclaims/data-org2-0?",
        )
        .respond(success()),
        Call::new("DELETE", "/api/v1/namespaces/org2/pods/org2-0?").respond(success()),
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
    let prober = StaticProber(
        prober_with_frozen(&[])
            .0
            .into_iter()
            .filter(|(h, _)| !h.starts_with("org2-1."))
            .collect(),
    );
    let (ctx, _) = context_at(prober, Some(T0));
    let mut stored = c;
    let mut writes = Vec::new();
    for poll in 0..3u64 {
        ctx.clock.set(T0 + poll * 30_000);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut next = (*ctx).clone();
        next.client = Client::new(service, "default");
        let (p1, p2) = four_ready_pods();
        let mut calls = vec![members_list(&members)];
        calls.extend(genesis_and_pods(p1, p2));
        // First poll: everything new; second: the rate becomes known; third: nothing.
        if poll < 2 {
            calls.push(
                Call::new(
                    "PATCH",
                    apply_uri("/apis/kubeledger.io/v1alpha1/consortia/escrow/status"),
                )
                .respond(serde_json::to_value(&stored).expect("json"))
                .check(|b| {
                    let v = &b["status"]["validators"][3];
                    assert_eq!(v["health"], "Unreachable");
                    assert_eq!(v["healthReason"], "pod ready but Status unanswered");
                    assert_eq!(v["unhealthySince"], "2025-11-24T16:00:00Z");
                    assert!(v.get("healing").is_none(), "not silent for stuckAfter yet");
                }),
            );
        }
        let (_, bodies) = run_consortium_in(Arc::new(next), handle, stored.clone(), calls).await;
        if poll < 2 {
            stored.status =
                serde_json::from_value(bodies.last().expect("status")["status"].clone())
                    .expect("status");
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
    let mut calls = vec![
        members_list(&members),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        ),
        Call::new(
            "DELETE",
            "/api/v1/namespaces/retired/configmaps/escrow-genesis?",
        )
        .respond(success()),
    ];
    calls.extend(all_pods_ready());
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

// ---- on-chain configuration ------------------------------------------------------

/// A context whose chain is `chain` (shared with the test, to inspect it).
fn context_with_chain(prober: StaticProber, chain: Arc<RecordingChain>) -> (Arc<Context>, Handle) {
    let (ctx, handle) = context(prober);
    let mut ctx = (*ctx).clone();
    ctx.chain = chain;
    (Arc::new(ctx), handle)
}

/// The chain of [`consortium_with_genesis`] at `height`, as its genesis made
/// it: org1 (consortium admin) and org2, Automatic admission.
fn genesis_chain(height: u64) -> RecordingChain {
    use crate::proto;
    let c = consortium_with_genesis();
    let text = c
        .status
        .as_ref()
        .and_then(|s| s.genesis.clone())
        .expect("genesis");
    let g: crate::genesis::Genesis = serde_json::from_str(&text).expect("genesis");
    let params = proto::ChainParameters {
        block_interval_ms: g.params.block_interval_ms,
        max_block_txs: g.params.max_block_txs,
        max_block_bytes: g.params.max_block_bytes,
        max_tx_bytes: g.params.max_tx_bytes,
        max_key_bytes: g.params.max_key_bytes,
        max_value_bytes: g.params.max_value_bytes,
        checkpoint_interval: g.params.checkpoint_interval,
        view_change_timeout_ms: g.params.view_change_timeout_ms,
    };
    let members = g
        .members
        .iter()
        .map(|m| proto::MemberInfo {
            name: m.name.clone(),
            organization: m.organization.clone(),
            admin_key: hex::decode(&m.admin_key).expect("hex"),
            nodes: g
                .validators
                .iter()
                .filter(|v| v.member == m.name)
                .map(|v| proto::NodeInfo {
                    name: v.name.clone(),
                    public_key: hex::decode(&v.public_key).expect("hex"),
                    peer_address: v.peer_address.clone(),
                })
                .collect(),
            admitted_at: 0,
        })
        .collect();
    RecordingChain::new(
        proto::GetConfigResponse {
            config: Some(proto::ConsortiumConfig {
                version: 0,
                params: Some(params),
                members,
                admission: Some(proto::AdmissionPolicy {
                    mode: proto::AdmissionMode::Automatic as i32,
                    threshold_percent: 67,
                    comparator: proto::VoteComparator::AtLeast as i32,
                    expiry_ms: 86_400_000,
                    consortium_admin: "org1".into(),
                }),
                next_proposal_id: 1,
                ..Default::default()
            }),
            height,
            effective_params: Some(params),
        },
        Vec::new(),
    )
}

/// Every validator of the fixture answers at `height`.
fn all_nodes_answer(height: u64) -> StaticProber {
    StaticProber(
        [("org1-0", "org1"), ("org1-1", "org1"), ("org2-0", "org2")]
            .iter()
            .map(|(n, m)| {
                (
                    host(n, m),
                    NodeReport {
                        height,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    )
}

fn active_members() -> Vec<Member> {
    let mut members = fixtures::members_with_keys();
    for m in &mut members {
        if let Some(s) = m.status.as_mut() {
            s.phase = Some("Active".into());
        }
    }
    members
}

/// The key Secret of member `name` (admin key from the fixtures).
fn admin_secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-keys"), "namespace": name},
        "data": {"admin.key": base64(format!("{}\n", fixtures::admin_seed(name)).as_bytes())}
    })
}

/// Genesis copies and the health monitor's pod lists of a running fixture.
fn running_consortium_calls(members: &[Member]) -> Vec<Call> {
    let mut calls = vec![
        members_list(members),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        ),
    ];
    calls.extend(all_pods_ready());
    calls
}

#[tokio::test]
async fn a_new_block_interval_is_proposed_once_with_the_consortium_admin_key() {
    let mut c = consortium_with_genesis();
    c.spec.block_interval = "500ms".into();
    c.metadata.generation = Some(2);
    let members = active_members();
    let chain = Arc::new(genesis_chain(42));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        Call::new("GET", "/api/v1/namespaces/org1/secrets/org1-keys").respond(admin_secret("org1")),
        event_call("default", "ParamsProposed").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("blockInterval 500ms"), "{note}");
        }),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            // Still in force: genesis's 200 ms; proposal 1 pending.
            assert_eq!(cc["blockIntervalMs"], 200);
            assert_eq!(cc["height"], 42);
            assert_eq!(cc["pendingProposal"]["id"], 1);
            assert_eq!(cc["pendingProposal"]["kind"], "UpdateParams");
            assert_eq!(cc["pendingProposal"]["votesFor"], 1);
            assert_eq!(cc["members"], json!(["org1", "org2"]));
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx, handle, c.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    assert_eq!(submitted[0].chain_id, "escrow-prod");
    assert_eq!(
        submitted[0].host,
        "org1-0.org1-nodes.org1.svc.cluster.local"
    );
    assert_eq!(
        submitted[0].change,
        crate::proto::config_change::Change::UpdateParams(crate::proto::UpdateParams {
            block_interval_ms: Some(500),
            max_block_txs: None,
            max_block_bytes: None,
            view_change_timeout_ms: None,
        })
    );

    // Next poll: the open proposal already proposes these values. Nothing is
    // submitted, no Secret read, no Event (the status write is the
    // transaction rate becoming known).
    let mut c2 = c;
    c2.status = Some(
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status"),
    );
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.push(escrow_status_patch(&c2, |b| {
        let cc = &b["status"]["chainConfig"];
        assert_eq!(cc["pendingProposal"]["id"], 1);
        assert_eq!(
            cc["message"].as_str(),
            Some("proposal 1 proposes the spec's parameters")
        );
    }));
    run_consortium_in(ctx, handle, c2, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn parameters_the_chain_has_are_not_proposed() {
    let c = consortium_with_genesis();
    let members = active_members();
    let chain = Arc::new(genesis_chain(7));
    let (ctx, handle) = context_with_chain(all_nodes_answer(7), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            assert_eq!(cc["version"], 0);
            assert_eq!(cc["blockIntervalMs"], 200);
            assert_eq!(cc["fromHeight"], 0);
            assert!(cc.get("pendingProposal").is_none());
            assert!(cc.get("message").is_none());
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
    assert!(chain.submitted().is_empty());
}

#[tokio::test]
async fn a_foreign_admin_key_is_never_used() {
    let mut c = consortium_with_genesis();
    c.spec.block_interval = "500ms".into();
    let members = active_members();
    // The Secret holds another key than the chain's: nothing can be signed.
    let chain = Arc::new(genesis_chain(42));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        Call::new("GET", "/api/v1/namespaces/org1/secrets/org1-keys").respond(admin_secret("org2")),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let msg = b["status"]["chainConfig"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(msg.contains("not the one the chain knows"), "{msg}");
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
    assert!(chain.submitted().is_empty());
}

#[tokio::test]
async fn a_refused_parameter_change_is_not_repeated() {
    let mut c = consortium_with_genesis();
    c.spec.max_block_txs = 20;
    let members = active_members();
    let chain = Arc::new(genesis_chain(42));
    chain.refuse_with(Some(
        "parameters decided by proposal 9 take effect at height 50".into(),
    ));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        Call::new("GET", "/api/v1/namespaces/org1/secrets/org1-keys").respond(admin_secret("org1")),
        event_call("default", "ParamsRefused"),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            assert!(cc["refusedParams"]
                .as_str()
                .unwrap_or_default()
                .contains("maxBlockTxs 20"));
            assert!(cc["message"]
                .as_str()
                .unwrap_or_default()
                .contains("height 50"));
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx, handle, c.clone(), calls).await;
    assert_eq!(chain.submitted().len(), 1);

    let mut c2 = c;
    c2.status = Some(
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status"),
    );
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.push(escrow_status_patch(&c2, |b| {
        let cc = &b["status"]["chainConfig"];
        assert!(cc["refusedParams"].is_string(), "{cc}");
    }));
    run_consortium_in(ctx, handle, c2, calls).await;
    assert_eq!(
        chain.submitted().len(),
        1,
        "the same values are not proposed again"
    );
}

/// [`consortium_with_genesis`] whose validators all answered the last poll.
fn consortium_on_chain() -> Consortium {
    let mut c = consortium_with_genesis();
    if let Some(s) = c.status.as_mut() {
        let g: crate::genesis::Genesis =
            serde_json::from_str(s.genesis.as_deref().expect("genesis")).expect("genesis");
        s.validators = g
            .validators
            .iter()
            .map(|v| crate::crd::ValidatorStatus {
                name: v.name.clone(),
                member: v.member.clone(),
                public_key: v.public_key.clone(),
                peer_address: v.peer_address.clone(),
                reachable: true,
                ..Default::default()
            })
            .collect();
    }
    c
}

/// org2's key Secret: node org2-0 and the admin key the chain knows.
fn org2_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "org2-keys", "namespace": "org2", "labels": {"kubeledger.io/consortium": "escrow"}},
        "data": {
            "org2-0.key": base64(format!("{}\n", "05".repeat(32)).as_bytes()),
            "admin.key": base64(format!("{}\n", fixtures::admin_seed("org2")).as_bytes()),
        }
    })
}

/// A Member's reconcile up to its workload, in namespace = name, with the
/// key Secret `secret` (generated when None) and a StatefulSet only if `nodes_run`.
fn member_calls_in(
    c: &Consortium,
    name: &str,
    secret: Option<Value>,
    nodes_run: bool,
) -> Vec<Call> {
    let ns = format!("/api/v1/namespaces/{name}");
    let generated = secret.is_none();
    let get = Call::new("GET", format!("{ns}/secrets/{name}-keys"));
    let mut calls = vec![
        Call::new("GET", "/apis/kubeledger.io/v1alpha1/consortia/escrow")
            .respond(serde_json::to_value(c).expect("json")),
        match secret {
            Some(s) => get.respond(s),
            None => get.not_found(),
        },
        Call::new(
            "PATCH",
            apply_uri(&format!("{ns}/serviceaccounts/{name}-node")),
        ),
        Call::new("PATCH", apply_uri(&format!("{ns}/secrets/{name}-keys"))),
    ];
    if generated {
        calls.push(event_call(name, "KeysGenerated"));
    }
    calls.extend([
        Call::new(
            "PATCH",
            apply_uri(&format!("{ns}/configmaps/{name}-config")),
        ),
        Call::new("PATCH", apply_uri(&format!("{ns}/services/{name}-nodes"))),
        Call::new("PATCH", apply_uri(&format!("{ns}/services/{name}-client"))),
        Call::new(
            "PATCH",
            apply_uri(&format!(
                "/apis/policy/v1/namespaces/{name}/poddisruptionbudgets/{name}"
            )),
        ),
    ]);
    if nodes_run {
        calls.push(Call::new(
            "PATCH",
            apply_uri(&format!(
                "/apis/apps/v1/namespaces/{name}/statefulsets/{name}"
            )),
        ));
    }
    calls
}

fn member_pods_call(name: &str) -> Call {
    Call::new(
        "GET",
        format!("/api/v1/namespaces/{name}/pods?&labelSelector=app.kubernetes.io%2Fname%3Dkubeledger-node%2Capp.kubernetes.io%2Finstance%3D{name}"),
    )
    .respond(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
}

fn member_status_patch(name: &str, m: &Member, check: impl Fn(&Value) + Send + 'static) -> Call {
    Call::new(
        "PATCH",
        apply_uri(&format!(
            "/apis/kubeledger.io/v1alpha1/namespaces/{name}/members/{name}/status"
        )),
    )
    .respond(member_json(m))
    .check(check)
}

async fn run_member_in(
    ctx: Arc<Context>,
    handle: Handle,
    m: Member,
    calls: Vec<Call>,
) -> Vec<Value> {
    let server = serve(handle, calls);
    tokio::time::timeout(Duration::from_secs(5), member::reconcile(Arc::new(m), ctx))
        .await
        .expect("reconcile timed out (an unexpected API call?)")
        .expect("reconcile");
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("not every expected call was made")
        .expect("verifier")
}

/// Like [`run_member_in`], for a reconcile that waits (teardown held back):
/// it ends in a waiting error, which keeps the finalizer, and the error
/// policy requeues it at the fixed interval rather than backing off.
async fn run_member_waiting(ctx: Arc<Context>, handle: Handle, m: Member, calls: Vec<Call>) {
    let server = serve(handle, calls);
    let m = Arc::new(m);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        member::reconcile(m.clone(), ctx.clone()),
    )
    .await
    .expect("reconcile timed out (an unexpected API call?)")
    .expect_err("teardown waits");
    assert!(err.is_waiting(), "{err}");
    assert_eq!(
        member::error_policy(m, &err, ctx),
        Action::requeue(Duration::from_secs(10))
    );
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("not every expected call was made")
        .expect("verifier");
}

/// org1's open proposal 1 to change the block interval.
fn open_params_proposal(chain: &RecordingChain) {
    let key = ed25519_dalek::SigningKey::from_bytes(
        &hex::decode(fixtures::admin_seed("org1"))
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    );
    let propose = chain.submit_config(
        "setup",
        &key,
        "escrow-prod",
        crate::proto::config_change::Change::UpdateParams(crate::proto::UpdateParams {
            block_interval_ms: Some(500),
            ..Default::default()
        }),
    );
    futures::executor::block_on(propose).expect("proposal");
}

use crate::chain::ChainAdmin as _;

#[tokio::test]
async fn a_listed_approval_is_cast_once_with_the_members_own_key() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    open_params_proposal(&chain);
    let mut m = with_finalizer(fixtures::member_named("org2", 1));
    m.spec.approvals = vec![1];
    m.spec.rejections = vec![7];
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    let mut calls = member_calls_in(&c, "org2", Some(org2_secret()), true);
    calls.extend([
        event_call("org2", "VoteCast"),
        event_call("org2", "VoteSkipped").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("no proposal 7"), "{note}");
        }),
        member_pods_call("org2"),
        member_status_patch("org2", &m, |b| {
            let votes = &b["status"]["votes"];
            assert_eq!(votes[0]["proposalId"], 1);
            assert_eq!(votes[0]["state"], "Cast");
            assert_eq!(votes[1]["state"], "UnknownProposal");
        }),
    ]);
    let bodies = run_member_in(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 2, "the setup proposal and one vote");
    assert_eq!(submitted[1].signer, fixtures::admin_public_key("org2"));
    assert_eq!(
        submitted[1].change,
        crate::proto::config_change::Change::Vote(crate::proto::Vote {
            proposal_id: 1,
            approve: true
        })
    );
    let ballots = &chain.proposal_list()[0].ballots;
    assert_eq!(ballots.len(), 2);

    // Next reconcile: the ballot is on chain. Nothing is submitted and, the
    // status being the same, nothing is written.
    let mut m2 = m;
    m2.status = Some(
        serde_json::from_value(bodies.last().expect("status")["status"].clone()).expect("status"),
    );
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    let mut calls = member_calls_in(&c, "org2", Some(org2_secret()), true);
    calls.push(member_pods_call("org2"));
    run_member_in(ctx, handle, m2, calls).await;
    assert_eq!(chain.submitted().len(), 2);
}

#[tokio::test]
async fn votes_on_decided_proposals_are_skipped() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    open_params_proposal(&chain);
    let mut proposals = chain.proposal_list();
    proposals[0].state = crate::proto::ProposalState::Expired as i32;
    chain.set_proposals(proposals);
    let mut m = with_finalizer(fixtures::member_named("org2", 1));
    m.spec.rejections = vec![1];
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    let mut calls = member_calls_in(&c, "org2", Some(org2_secret()), true);
    calls.extend([
        event_call("org2", "VoteSkipped").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("Expired"), "{note}");
        }),
        member_pods_call("org2"),
        member_status_patch("org2", &m, |b| {
            assert_eq!(b["status"]["votes"][0]["state"], "Skipped");
            assert_eq!(b["status"]["votes"][0]["approve"], false);
        }),
    ]);
    run_member_in(ctx, handle, m, calls).await;
    assert_eq!(chain.submitted().len(), 1, "only the setup proposal");
}

#[tokio::test]
async fn a_member_joining_a_running_consortium_is_proposed_once_and_its_nodes_observe() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    let m = with_finalizer(fixtures::member_named("org3", 1));
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    // Its nodes start at once: outside the validator set, they observe.
    let mut calls = member_calls_in(&c, "org3", None, true);
    calls.extend([
        Call::new("GET", "/api/v1/namespaces/org1/secrets/org1-keys").respond(admin_secret("org1")),
        event_call("org3", "AdmissionProposed"),
        member_pods_call("org3"),
        member_status_patch("org3", &m, |b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Pending");
            assert_eq!(s["conditions"][0]["reason"], "AdmissionProposed");
            assert_eq!(s["admission"]["id"], 1);
            assert_eq!(s["admission"]["kind"], "AdmitMember");
            assert_eq!(s["admission"]["state"], "Open");
            assert_eq!(s["admission"]["votesFor"], 1);
        }),
    ]);
    let bodies = run_member_in(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    let status = &bodies.last().expect("status")["status"];
    let crate::proto::config_change::Change::Admit(admit) = &submitted[0].change else {
        panic!("not an admission: {:?}", submitted[0].change);
    };
    assert_eq!(admit.member, "org3");
    assert_eq!(admit.organization, "Org One");
    assert_eq!(
        hex::encode(&admit.admin_key),
        status["adminPublicKey"].as_str().expect("admin key")
    );
    assert_eq!(admit.nodes.len(), 1);
    assert_eq!(admit.nodes[0].name, "org3-0");
    assert_eq!(
        hex::encode(&admit.nodes[0].public_key),
        status["nodePublicKeys"][0]["publicKey"]
            .as_str()
            .expect("key")
    );
    assert_eq!(
        admit.nodes[0].peer_address,
        "org3-0.org3-nodes.org3.svc.cluster.local:7051"
    );

    // Next reconcile: the proposal is found by name, not made again.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "org3-keys", "namespace": "org3"},
        "data": bodies[3]["data"].clone(),
    });
    let mut m2 = m;
    m2.status = Some(serde_json::from_value(status.clone()).expect("status"));
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    let mut calls = member_calls_in(&c, "org3", Some(secret.clone()), true);
    calls.push(member_pods_call("org3"));
    run_member_in(ctx, handle, m2.clone(), calls).await;
    assert_eq!(chain.submitted().len(), 1);

    // Admitted on chain: the nodes keep observing, and the condition says
    // they wait for the validator-set switch.
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            cfg.members.push(crate::proto::MemberInfo {
                name: "org3".into(),
                ..Default::default()
            });
        }
    });
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    let mut calls = member_calls_in(&c, "org3", Some(secret), true);
    calls.push(member_pods_call("org3"));
    calls.push(member_status_patch("org3", &m2, |b| {
        let s = &b["status"];
        assert_eq!(s["phase"], "Admitted");
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(s["conditions"][0]["reason"], "AwaitingValidatorSwitch");
    }));
    run_member_in(ctx, handle, m2, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn deleting_a_member_that_joined_proposes_its_removal_first() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            cfg.members.push(crate::proto::MemberInfo {
                name: "org3".into(),
                ..Default::default()
            });
        }
    });
    let mut m = with_finalizer(fixtures::member_named("org3", 1));
    m.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    m.status = Some(MemberStatus {
        admission: Some(crate::crd::ProposalStatus {
            id: 1,
            state: "Approved".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let get_consortium = || {
        Call::new("GET", "/apis/kubeledger.io/v1alpha1/consortia/escrow")
            .respond(serde_json::to_value(&c).expect("json"))
    };
    // 1. The removal is proposed; the nodes keep running.
    let calls = vec![
        get_consortium(),
        Call::new("GET", "/api/v1/namespaces/org1/secrets/org1-keys").respond(admin_secret("org1")),
        event_call("org3", "RemovalProposed"),
    ];
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    run_member_waiting(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    assert_eq!(
        submitted[0].change,
        crate::proto::config_change::Change::Remove(crate::proto::RemoveMember {
            member: "org3".into()
        })
    );

    // 2. Removed on chain, but its nodes validate until the next set takes
    //    over: still nothing is torn down, nothing proposed again.
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            cfg.members.retain(|m| m.name != "org3");
            cfg.scheduled_validators = Some(crate::proto::ScheduledValidators {
                from_height: r.height + 30,
                validators: Vec::new(),
                proposal_id: 2,
            });
        }
    });
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    run_member_waiting(ctx, handle, m.clone(), vec![get_consortium()]).await;
    assert_eq!(chain.submitted().len(), 1);

    // 3. The new set is in force: the nodes (observers now) are torn down.
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            if let Some(s) = cfg.scheduled_validators.as_mut() {
                s.from_height = r.height;
            }
        }
    });
    let ns = "/api/v1/namespaces/org3";
    let mut calls = vec![get_consortium(), event_call("org3", "TearingDown")];
    for path in [
        "/apis/apps/v1/namespaces/org3/statefulsets/org3?".to_string(),
        "/apis/policy/v1/namespaces/org3/poddisruptionbudgets/org3?".to_string(),
        format!("{ns}/services/org3-client?"),
        format!("{ns}/services/org3-nodes?"),
        format!("{ns}/configmaps/org3-config?"),
        format!("{ns}/serviceaccounts/org3-node?"),
    ] {
        calls.push(Call::new("DELETE", path).respond(success()));
    }
    calls.push(
        Call::new(
            "PATCH",
            "/apis/kubeledger.io/v1alpha1/namespaces/org3/members/org3?",
        )
        .respond(member_json(&m)),
    );
    let (ctx, handle) = context_with_chain(StaticProber::default(), chain.clone());
    run_member_in(ctx, handle, m, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn running_does_not_wait_for_members_that_joined_after_genesis() {
    let c = consortium_with_genesis();
    let mut members = active_members();
    let mut joiner = fixtures::member_named("org3", 1);
    joiner.status = Some(MemberStatus {
        phase: Some("Admitted".into()),
        ..Default::default()
    });
    members.push(joiner);
    let (ctx, handle) = context_with_chain(all_nodes_answer(5), Arc::new(genesis_chain(5)));
    let mut calls = vec![
        members_list(&members),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org1/configmaps/escrow-genesis"),
        ),
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org2/configmaps/escrow-genesis"),
        ),
        // org3 mounts the genesis too.
        Call::new(
            "PATCH",
            apply_uri("/api/v1/namespaces/org3/configmaps/escrow-genesis"),
        ),
    ];
    calls.extend(all_pods_ready());
    calls.extend([
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            assert_eq!(b["status"]["phase"], "Running");
            assert_eq!(b["status"]["membersSummary"], "2/3");
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
}
