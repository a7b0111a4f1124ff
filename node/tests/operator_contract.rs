//! The operator renders `node.toml`, `genesis.json` and key files for every
//! node it runs. `tests/contract/` holds golden copies of what its builders
//! produce (the operator's own tests keep them current); this test is the
//! node's half of the contract: it must accept them exactly as rendered.

use std::path::PathBuf;

use kubeledger_node::config::NodeConfig;
use kubeledger_node::crypto::keys;
use kubeledger_node::genesis::Genesis;

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/contract")
}

#[test]
fn rendered_node_config_loads_and_validates() {
    let config = NodeConfig::load(&contract_dir().join("node.toml")).expect("node.toml loads");
    config.validate().expect("node.toml validates");
    assert_eq!(config.name, "bank-0");
    assert_eq!(config.listen.grpc.port(), 7050);
    assert_eq!(config.listen.peer.port(), 7051);
    assert_eq!(config.listen.metrics.port(), 9100);
    assert_eq!(
        config.genesis_file,
        PathBuf::from("/etc/kubeledger/genesis/genesis.json")
    );
    assert_eq!(
        config.backup.dir,
        Some(PathBuf::from("/var/lib/kubeledger-backups"))
    );
    assert_eq!(config.backup.interval_s, 6 * 3600);
    assert_eq!(config.backup.keep, 3);
}

#[test]
fn rendered_genesis_loads_and_names_the_rendered_key() {
    let genesis = Genesis::load(&contract_dir().join("genesis.json")).expect("genesis.json loads");
    genesis.validate().expect("genesis validates");
    assert_eq!(genesis.validators.len(), 4, "four founding validators");

    let key = keys::load(&contract_dir().join("bank-0.key")).expect("bank-0.key loads");
    let public = hex::encode(key.verifying_key().as_bytes());
    let entry = genesis
        .validators
        .iter()
        .find(|v| v.name == "bank-0")
        .expect("bank-0 is a validator");
    assert_eq!(
        entry.public_key, public,
        "the key file matches its genesis entry"
    );
    assert_eq!(entry.member, "bank");
    assert!(entry.peer_address.ends_with(":7051"));
}
