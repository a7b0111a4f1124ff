//! The checked-in CRDs match the Rust types, and their CEL rules accept valid
//! and reject invalid resources (evaluated offline with `kube-cel`).
//!
//! Regenerate after changing the types:
//! `cargo run -p kubeledger-operator -- crd > crds/kubeledger.io.yaml && cp crds/kubeledger.io.yaml charts/kubeledger/crds/`

use kube::CustomResourceExt;
use kube_cel::Validator;
use kubeledger_operator::crd::{crds_yaml, Consortium, Member, CRD_FILE};
use serde_json::{json, Value};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn checked_in_crds_match_the_types() {
    let generated = crds_yaml().expect("yaml");
    for path in [
        CRD_FILE.to_string(),
        format!("charts/kubeledger/{CRD_FILE}"),
    ] {
        let on_disk = std::fs::read_to_string(repo_root().join(&path)).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{path} is out of date; regenerate with `cargo run -p kubeledger-operator -- crd > {CRD_FILE}` and copy it to charts/kubeledger/crds/"
        );
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let v = serde_json::to_value(crd).expect("json");
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn rules(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rs)) = map.get("x-kubernetes-validations") {
                out.extend(
                    rs.iter()
                        .filter_map(|r| r["rule"].as_str().map(String::from)),
                );
            }
            map.values().for_each(|v| rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn cel_rules_are_in_the_schema() {
    let mut found = Vec::new();
    rules(&schema_of(&Consortium::crd()), &mut found);
    for expected in [
        "self == oldSelf",
        "size(self) >= 1",
        "self.maxTxBytes <= self.maxBlockBytes",
        "duration(self) >= duration('10ms') && duration(self) <= duration('1m')",
    ] {
        assert!(
            found.iter().any(|r| r == expected),
            "missing rule {expected}: {found:?}"
        );
    }
    let mut found = Vec::new();
    rules(&schema_of(&Member::crd()), &mut found);
    assert!(found.iter().any(|r| r == "self == oldSelf"));
}

fn consortium(spec: Value) -> Value {
    json!({"apiVersion": "kubeledger.io/v1alpha1", "kind": "Consortium", "metadata": {"name": "c"}, "spec": spec})
}

fn valid_spec() -> Value {
    json!({
        "chainId": "escrow-prod",
        "founders": [{"name": "org1", "namespace": "org1"}],
        "blockInterval": "200ms",
        "viewChangeTimeout": "2s",
        "maxBlockBytes": 4194304,
        "maxTxBytes": 65536
    })
}

fn check(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    let schema = schema_of(&Consortium::crd());
    Validator::new()
        .validate(&schema, obj, old)
        .map_err(|e| format!("{:?}", e.as_slice()))
}

#[test]
fn cel_accepts_a_valid_consortium() {
    let obj = consortium(valid_spec());
    check(&obj, None).expect("valid");
    check(&obj, Some(&obj)).expect("unchanged update is valid");
}

#[test]
fn cel_rejects_invalid_consortia() {
    let mut cases = Vec::new();
    let mut s = valid_spec();
    s["founders"] = json!([]);
    cases.push(("no founders", s));
    let mut s = valid_spec();
    s["blockInterval"] = json!("fast");
    cases.push(("unparsable duration", s));
    let mut s = valid_spec();
    s["blockInterval"] = json!("5m");
    cases.push(("block interval out of range", s));
    let mut s = valid_spec();
    s["maxTxBytes"] = json!(8_000_000);
    cases.push(("tx larger than block", s));
    let mut s = valid_spec();
    s["viewChangeTimeout"] = json!("100ms");
    cases.push(("view change shorter than block interval", s));
    let mut s = valid_spec();
    s["admission"] = json!({"mode": "Vote"});
    cases.push(("vote without settings", s));
    let mut s = valid_spec();
    s["viewChangeTimeout"] = json!("2x");
    cases.push(("view change timeout that does not parse", s));
    for (field, value, what) in [
        ("stuckAfter", "10s", "stuckAfter below the 30 s poll"),
        ("stuckAfter", "soon", "stuckAfter that does not parse"),
        ("lagFor", "48h", "lagFor above a day"),
        ("restartBackoff", "1s", "restartBackoff below 10 s"),
    ] {
        let mut s = valid_spec();
        s["healing"] = json!({ field: value });
        cases.push((what, s));
    }
    let mut s = valid_spec();
    s["healing"] = json!({"enabled": false, "rebuildCorruptReplicas": true});
    cases.push(("rebuild without healing", s));
    for (what, spec) in cases {
        assert!(
            check(&consortium(spec), None).is_err(),
            "{what} was accepted"
        );
    }
}

#[test]
fn cel_accepts_healing_settings() {
    let mut s = valid_spec();
    s["healing"] = json!({
        "enabled": true, "stuckAfter": "90s", "maxLag": 500, "lagFor": "10m",
        "maxRestartsPerHour": 5, "restartBackoff": "30s", "rebuildCorruptReplicas": true
    });
    check(&consortium(s), None).expect("valid healing settings");
    let mut s = valid_spec();
    s["healing"] = json!({"enabled": false});
    check(&consortium(s), None).expect("healing off");
}

#[test]
fn healing_defaults_are_in_the_schema() {
    let schema = schema_of(&Consortium::crd());
    let healing = &schema["properties"]["spec"]["properties"]["healing"];
    assert_eq!(healing["default"]["enabled"], true, "{healing}");
    let props = &healing["properties"];
    assert_eq!(props["stuckAfter"]["default"], "2m");
    assert_eq!(props["lagFor"]["default"], "5m");
    assert_eq!(props["maxLag"]["default"], 1000);
    assert_eq!(props["maxRestartsPerHour"]["default"], 3);
    assert_eq!(props["maxRestartsPerHour"]["maximum"].as_f64(), Some(60.0));
    assert_eq!(props["restartBackoff"]["default"], "1m");
    assert_eq!(props["rebuildCorruptReplicas"]["default"], false);
}

#[test]
fn cel_keeps_chain_id_immutable() {
    let old = consortium(valid_spec());
    let mut spec = valid_spec();
    spec["chainId"] = json!("other-chain");
    let new = consortium(spec);
    assert!(check(&new, Some(&old)).is_err());
}

fn member(spec: Value) -> Value {
    json!({"apiVersion": "kubeledger.io/v1alpha1", "kind": "Member", "metadata": {"name": "bank", "namespace": "bank"}, "spec": spec})
}

fn check_member(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    let schema = schema_of(&Member::crd());
    Validator::new()
        .validate(&schema, obj, old)
        .map_err(|e| format!("{:?}", e.as_slice()))
}

#[test]
fn cel_member_rules() {
    let spec = json!({"consortium": "escrow", "organization": "Mortgage Bank", "replicas": 1});
    let old = member(spec.clone());
    check_member(&old, None).expect("valid member");
    check_member(&old, Some(&old)).expect("unchanged update");
    let mut moved = spec.clone();
    moved["consortium"] = json!("other");
    assert!(
        check_member(&member(moved), Some(&old)).is_err(),
        "a Member moved to another consortium"
    );
    let mut votes = spec.clone();
    votes["approvals"] = json!([1, 2]);
    votes["rejections"] = json!([3]);
    check_member(&member(votes.clone()), None).expect("distinct approvals and rejections");
    votes["rejections"] = json!([3, 2]);
    assert!(
        check_member(&member(votes), None).is_err(),
        "a proposal both approved and rejected"
    );
    // Ranges (replicas 1..=16, block limits) are plain schema bounds, which
    // kube-cel does not evaluate: tests/operator/test_crd_schema.py checks them.
}
