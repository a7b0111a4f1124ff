//! ConfigMaps: the per-node `node.toml` files of a member, and the consortium
//! genesis copied into each member namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::ObjectMeta;
use kube::Resource;

use super::{names, MemberInputs};
use crate::crd::{parse_duration, BackupSpec, Consortium};
use crate::{Error, Result};

pub const DATA_DIR: &str = "/var/lib/kubeledger";
pub const KEYS_DIR: &str = "/etc/kubeledger/keys";
pub const GENESIS_DIR: &str = "/etc/kubeledger/genesis";
pub const GENESIS_FILE: &str = "genesis.json";
pub const CONFIG_PATH: &str = "/etc/kubeledger/node.toml";
/// Each node's backup volume (`spec.backup`).
pub const BACKUP_DIR: &str = "/var/lib/kubeledger-backups";
/// The claim a node is seeded from (`spec.seedFrom`), read-only.
pub const SEED_DIR: &str = "/var/lib/kubeledger-seed";
pub const MEMPOOL_MAX_TXS: u64 = 200_000;

/// The node configuration of node `name`, with scheduled backups into its
/// backup volume when the Member asks for them.
pub fn node_toml(name: &str, backup: Option<&BackupSpec>) -> Result<String> {
    let mut toml = format!(
        r#"name = "{name}"
data_dir = "{DATA_DIR}"
key_file = "{KEYS_DIR}/{name}.key"
genesis_file = "{GENESIS_DIR}/{GENESIS_FILE}"

[listen]
grpc = "0.0.0.0:{grpc}"
peer = "0.0.0.0:{peer}"
metrics = "0.0.0.0:{metrics}"

[mempool]
max_txs = {MEMPOOL_MAX_TXS}
"#,
        grpc = names::GRPC_PORT,
        peer = names::PEER_PORT,
        metrics = names::METRICS_PORT,
    );
    if let Some(b) = backup {
        let every = parse_duration(&b.interval)
            .map_err(|e| Error::InvalidSpec(format!("spec.backup.interval: {e}")))?;
        toml.push_str(&format!(
            "\n[backup]\ndir = \"{BACKUP_DIR}\"\ninterval_s = {}\nkeep = {}\n",
            every.as_secs().max(1),
            b.keep
        ));
    }
    Ok(toml)
}

/// `<member>-config`: one `<node>.toml` entry per node; each pod mounts its own
/// entry at `/etc/kubeledger/node.toml` (`subPathExpr: $(POD_NAME).toml`).
pub fn build_node_config(inputs: &MemberInputs<'_>) -> Result<ConfigMap> {
    let member = inputs.name()?;
    let data: BTreeMap<String, String> = inputs
        .node_names()?
        .into_iter()
        .map(|n| Ok((format!("{n}.toml"), node_toml(&n, inputs.backup())?)))
        .collect::<Result<_>>()?;
    Ok(ConfigMap {
        metadata: inputs.metadata(names::config_map(&member))?,
        data: Some(data),
        ..Default::default()
    })
}

/// `<consortium>-genesis` in `namespace`, owned by the Consortium and holding the
/// exact genesis text. Immutable: genesis never changes once issued.
pub fn build_genesis(
    consortium: &Consortium,
    namespace: &str,
    genesis_json: &str,
) -> Result<ConfigMap> {
    let name = consortium
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::genesis_config_map(&name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".into(),
                    crate::FIELD_MANAGER.into(),
                ),
                ("app.kubernetes.io/part-of".into(), "kubeledger".into()),
                ("kubeledger.io/consortium".into(), name.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                "kubeledger.io/genesis-sha256".into(),
                crate::genesis::genesis_hash(genesis_json),
            )])),
            owner_references: consortium.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            GENESIS_FILE.into(),
            genesis_json.to_string(),
        )])),
        immutable: Some(true),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn node_config_has_one_file_per_node() {
        let (c, m, s) = fixtures::inputs();
        let cm = build_node_config(&MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        })
        .expect("build");
        let data = cm.data.expect("data");
        assert_eq!(data.len(), 2);
        let toml = &data["org1-1.toml"];
        assert!(toml.contains(r#"name = "org1-1""#));
        assert!(toml.contains(r#"key_file = "/etc/kubeledger/keys/org1-1.key""#));
        assert!(toml.contains(r#"genesis_file = "/etc/kubeledger/genesis/genesis.json""#));
        assert!(toml.contains("max_txs = 200000"));
        assert!(!toml.contains("[backup]"));
        assert_eq!(cm.metadata.name.as_deref(), Some("org1-config"));
        assert_eq!(
            cm.metadata.owner_references.expect("owner")[0].kind,
            "Member"
        );
    }

    #[test]
    fn backups_go_to_the_backup_volume_on_the_member_s_schedule() {
        let backup = BackupSpec {
            interval: "1h30m".into(),
            keep: 5,
            size: "20Gi".into(),
            storage_class_name: None,
        };
        let toml = node_toml("org1-0", Some(&backup)).expect("toml");
        // The node's own parser reads this shape (node/src/config.rs,
        // `parses_the_operator_config_shape`).
        let config: toml::Table = toml.parse().expect("parses");
        let b = &config["backup"];
        assert_eq!(b["dir"].as_str(), Some(BACKUP_DIR));
        assert_eq!(b["interval_s"].as_integer(), Some(5400));
        assert_eq!(b["keep"].as_integer(), Some(5));
        let bad = BackupSpec {
            interval: "soon".into(),
            ..backup
        };
        let e = node_toml("org1-0", Some(&bad)).expect_err("refused");
        assert!(e.to_string().contains("spec.backup.interval"), "{e}");
    }

    #[test]
    fn genesis_config_map_is_immutable_and_hashed() {
        let c = fixtures::consortium();
        let cm = build_genesis(&c, "org2", "{}").expect("build");
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(cm.metadata.name.as_deref(), Some("escrow-genesis"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("org2"));
        assert!(cm
            .metadata
            .annotations
            .expect("ann")
            .contains_key("kubeledger.io/genesis-sha256"));
    }
}
