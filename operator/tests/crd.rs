//! The checked-in CRDs match the Rust types and carry their CEL rules and
//! defaults. What the rules accept and refuse is tested on a real API server
//! (`tests/k8s/test_crds.py`).
//!
//! Regenerate after changing the types:
//! `cargo run -p kubeledger-operator -- crd > crds/kubeledger.io.yaml && cp crds/kubeledger.io.yaml charts/kubeledger/crds/`

use kube::CustomResourceExt;
use kubeledger_operator::crd::{crds_yaml, Consortium, Member, CRD_FILE};
use serde_json::Value;

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
