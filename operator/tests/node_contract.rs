//! The files the operator writes for each node, pinned as golden fixtures in
//! `tests/contract/` so the node side can parse exactly what the operator emits:
//!
//! - `node.toml`: the configuration of node `bank-0` of `examples/consortium.yaml`;
//! - `genesis.json`: the genesis of that consortium, built from fixed test seeds;
//! - `bank-0.key`: the (test-only!) key file of `bank-0`, a hex ed25519 seed.
//!
//! The founders' admin keys come from [`admin_seed`].
//!
//! Regenerate after an intended format change:
//! `UPDATE_CONTRACT=1 cargo test -p kubeledger-operator --test node_contract`

use std::path::PathBuf;

use kubeledger_operator::build::config_map::node_toml;
use kubeledger_operator::crd::{BackupSpec, MemberStatus, NodeKey};
use kubeledger_operator::genesis::{build_genesis, Genesis};
use kubeledger_operator::keys::public_key_hex;
use kubeledger_operator::render::parse_documents;

/// Creation time written into the pinned genesis (2025-11-24T16:00:00Z).
const CREATED_AT_MS: u64 = 1_764_000_000_000;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Test-only seed of the `index`-th node of the example: 32 bytes of `index + 1`.
fn seed(index: usize) -> String {
    format!("{:02x}", index + 1).repeat(32)
}

/// Test-only admin seed of the `index`-th member of the example: 32 bytes of `0x81 + index`.
fn admin_seed(index: usize) -> String {
    format!("{:02x}", 0x81 + index).repeat(32)
}

/// The example consortium's genesis, with node keys from [`seed`] and admin
/// keys from [`admin_seed`].
fn example_genesis() -> Genesis {
    let text = std::fs::read_to_string(repo_root().join("examples/consortium.yaml"))
        .expect("examples/consortium.yaml");
    let (consortia, mut members) = parse_documents(&text).expect("example parses");
    let mut index = 0;
    for (member_index, m) in members.iter_mut().enumerate() {
        let name = m.metadata.name.clone().expect("name");
        let keys = (0..m.spec.replicas)
            .map(|i| {
                let key = NodeKey {
                    name: format!("{name}-{i}"),
                    public_key: public_key_hex(&seed(index)).expect("seed"),
                };
                index += 1;
                key
            })
            .collect();
        m.status = Some(MemberStatus {
            node_public_keys: keys,
            admin_public_key: Some(public_key_hex(&admin_seed(member_index)).expect("seed")),
            ..Default::default()
        });
    }
    build_genesis(&consortia[0], &members, CREATED_AT_MS, "cluster.local")
        .expect("valid example")
        .expect("every founder has keys")
}

fn check_golden(file: &str, produced: &str) {
    let path = repo_root().join("tests/contract").join(file);
    if std::env::var_os("UPDATE_CONTRACT").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, produced).expect("write golden file");
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        golden == produced,
        "{} differs from what the operator produces; if the change is intended, \
         run `UPDATE_CONTRACT=1 cargo test -p kubeledger-operator --test node_contract` \
         and tell the node side.\n--- produced ---\n{produced}",
        path.display()
    );
}

#[test]
fn node_toml_matches_the_golden_file() {
    // With a backup schedule, so the node's half checks that section too.
    let backup = BackupSpec {
        interval: "6h".into(),
        keep: 3,
        size: "10Gi".into(),
        storage_class_name: None,
    };
    check_golden(
        "node.toml",
        &node_toml("bank-0", Some(&backup)).expect("node.toml"),
    );
}

#[test]
fn genesis_json_matches_the_golden_file() {
    let g = example_genesis();
    assert_eq!(g.validators.len(), 4);
    check_golden("genesis.json", &g.to_json());
}

#[test]
fn key_file_matches_the_genesis_validator() {
    let g = example_genesis();
    let bank = g
        .validators
        .iter()
        .position(|v| v.name == "bank-0")
        .expect("bank-0 is a validator");
    let key_file = format!("{}\n", seed(bank));
    check_golden("bank-0.key", &key_file);
    assert_eq!(
        public_key_hex(&key_file).expect("key"),
        g.validators[bank].public_key
    );
}

#[test]
fn genesis_has_every_field_of_the_node_format() {
    let value: serde_json::Value =
        serde_json::to_value(example_genesis()).expect("genesis as JSON");
    let params = value["params"].as_object().expect("params");
    let names: Vec<&str> = params.keys().map(String::as_str).collect();
    // Every field of the node's ChainParams, none more (it denies unknown fields).
    let mut expected = vec![
        "block_interval_ms",
        "checkpoint_interval",
        "max_block_bytes",
        "max_block_txs",
        "max_key_bytes",
        "max_tx_bytes",
        "max_value_bytes",
        "view_change_timeout_ms",
    ];
    expected.sort_unstable();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(names, expected);
    let v = &value["validators"][0];
    let mut fields: Vec<&str> = v
        .as_object()
        .expect("validator")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, vec!["member", "name", "peer_address", "public_key"]);
    let m = value["members"][0].as_object().expect("member");
    let fields: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(fields, vec!["admin_key", "name", "organization"]);
    let a = value["admission"].as_object().expect("admission");
    let fields: Vec<&str> = a.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        vec![
            "comparator",
            "consortium_admin",
            "expiry_ms",
            "mode",
            "threshold_percent"
        ]
    );
}
