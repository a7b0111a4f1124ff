//! The operator exports exactly the metrics `tests/contract/metrics.yaml` lists
//! under `operator` (the Grafana dashboard is checked against that list).

use std::collections::BTreeMap;

use kubeledger_operator::metrics::Metrics;

/// `# TYPE <name> <type>` lines, with counters named as exposed (`_total`).
fn exported(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            (name, kind.to_string())
        })
        .collect()
}

#[test]
fn operator_metrics_match_the_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let text = std::fs::read_to_string(root.join("tests/contract/metrics.yaml")).expect("read");
    let contract: BTreeMap<String, BTreeMap<String, String>> =
        serde_yaml::from_str(&text).expect("yaml");
    let metrics = Metrics::default();
    // Families show up once they have a series.
    drop(metrics.count_and_measure("member"));
    metrics.reconcile_failure("member", &kubeledger_operator::Error::MissingField("x"));
    metrics.status_write("member");
    metrics.node_restart("c", "Stuck");
    metrics.healing_hold("c", "QuorumGuard");
    metrics.set_nodes_by_health("c", &[("Healthy", 1)]);
    assert_eq!(
        exported(&metrics.encode()),
        contract["operator"].clone(),
        "operator/src/metrics.rs and tests/contract/metrics.yaml disagree"
    );
}
