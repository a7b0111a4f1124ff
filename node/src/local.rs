//! Layout of a local consortium on loopback: keys, genesis and one config
//! per node in a directory. Used by `kubeledger up` and the process tests.
//!
//! Node `i` listens on 127.0.0.(i+1) when `distinct_hosts` is set (gRPC on
//! `base_port`, peers on `base_port + 1`, metrics on `base_port + 2`), or on
//! 127.0.0.1 with ports shifted by 10·i otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::{Listen, MempoolConfig, NodeConfig, StorageConfig};
use crate::crypto::keys;
use crate::genesis::{Admission, ChainParams, Genesis, Member, Validator};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "{dir} holds a consortium of {found} nodes, not {wanted}; use another --dir or remove it"
    )]
    SizeMismatch {
        dir: PathBuf,
        found: usize,
        wanted: usize,
    },
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub nodes: usize,
    pub chain_id: String,
    pub params: ChainParams,
    pub base_port: u16,
    pub distinct_hosts: bool,
    /// How configuration changes are decided; each node's organisation
    /// (`org1`, `org2`, ...) is a member with an admin key in
    /// `<dir>/<org>/admin.key`.
    pub admission: Admission,
    /// Extra nodes outside the validator set (`node-<nodes>`, ...): they
    /// run as observers.
    pub observers: usize,
}

/// Where a local member's admin key lives.
pub fn admin_key_path(dir: &Path, member: &str) -> PathBuf {
    dir.join(member).join("admin.key")
}

/// One node of a local consortium.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: NodeConfig,
}

impl LocalNode {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.config.listen.grpc)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_owned(),
        source,
    }
}

fn listen(options: &LocalOptions, i: usize) -> Listen {
    let (ip, base) = if options.distinct_hosts {
        (Ipv4Addr::new(127, 0, 0, (i + 1) as u8), options.base_port)
    } else {
        (Ipv4Addr::LOCALHOST, options.base_port + 10 * i as u16)
    };
    let addr = |port| SocketAddr::new(IpAddr::V4(ip), port);
    Listen {
        grpc: addr(base),
        peer: addr(base + 1),
        metrics: addr(base + 2),
    }
}

fn node_config(
    name: &str,
    node_dir: &Path,
    key_file: PathBuf,
    genesis_path: &Path,
    listen: Listen,
) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        data_dir: node_dir.join("data"),
        key_file,
        genesis_file: genesis_path.to_owned(),
        listen,
        mempool: MempoolConfig::default(),
        storage: StorageConfig::default(),
        health: Default::default(),
        peer: Default::default(),
        state_sync: Default::default(),
        backup: Default::default(),
    }
}

fn write_config(name: String, dir: PathBuf, config: NodeConfig) -> Result<LocalNode, LocalError> {
    let config_path = dir.join("node.toml");
    std::fs::write(&config_path, config.to_toml()).map_err(io_err(&config_path))?;
    Ok(LocalNode {
        name,
        dir,
        config_path,
        config,
    })
}

/// Creates the consortium in `dir`, or reuses what is there: keys and
/// genesis are never regenerated, so restarting `up` resumes the chain.
pub fn prepare(
    dir: &Path,
    options: &LocalOptions,
) -> Result<(Genesis, Vec<LocalNode>), LocalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let genesis_path = dir.join("genesis.json");
    let mut nodes = Vec::with_capacity(options.nodes + options.observers);
    let mut validators = Vec::with_capacity(options.nodes);
    let mut members = Vec::with_capacity(options.nodes);
    for i in 0..options.nodes + options.observers {
        let name = format!("node-{i}");
        let node_dir = dir.join(&name);
        let key_file = node_dir.join("node.key");
        let (key, _) = keys::load_or_generate(&key_file)?;
        let listen = listen(options, i);
        if i >= options.nodes {
            let config = node_config(&name, &node_dir, key_file, &genesis_path, listen);
            nodes.push(write_config(name, node_dir, config)?);
            continue;
        }
        let member = format!("org{}", i + 1);
        let (admin, _) = keys::load_or_generate(&admin_key_path(dir, &member))?;
        members.push(Member {
            name: member.clone(),
            organization: format!("Organisation {}", i + 1),
            admin_key: hex::encode(admin.verifying_key().to_bytes()),
        });
        validators.push(Validator {
            name: name.clone(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            peer_address: listen.peer.to_string(),
            member,
        });
        let config = node_config(&name, &node_dir, key_file, &genesis_path, listen);
        nodes.push(write_config(name, node_dir, config)?);
    }
    let genesis = if genesis_path.exists() {
        let existing = Genesis::load(&genesis_path)?;
        if existing.validators.len() != options.nodes {
            return Err(LocalError::SizeMismatch {
                dir: dir.to_owned(),
                found: existing.validators.len(),
                wanted: options.nodes,
            });
        }
        existing
    } else {
        let genesis = Genesis {
            chain_id: options.chain_id.clone(),
            created_at_ms: crate::clock::now_ms(),
            params: options.params.clone(),
            validators,
            members,
            admission: Some(options.admission.clone()),
        };
        genesis.validate()?;
        std::fs::write(&genesis_path, genesis.to_json()).map_err(io_err(&genesis_path))?;
        genesis
    };
    Ok((genesis, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_is_idempotent_and_keeps_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LocalOptions {
            nodes: 4,
            chain_id: "local".into(),
            params: ChainParams::default(),
            base_port: 17050,
            distinct_hosts: true,
            admission: Admission::default(),
            observers: 1,
        };
        let (g1, nodes) = prepare(dir.path(), &options).expect("first");
        assert_eq!(nodes.len(), 5, "4 validators and an observer");
        assert_eq!(g1.validators.len(), 4);
        assert!(!g1.validators.iter().any(|v| v.name == "node-4"));
        assert_eq!(nodes[3].config.listen.grpc.to_string(), "127.0.0.4:17050");
        let (g2, _) = prepare(dir.path(), &options).expect("second");
        assert_eq!(g1, g2);
        assert_eq!(g1.members.len(), 4);
        assert!(admin_key_path(dir.path(), "org4").exists());
        let loaded = NodeConfig::load(&nodes[0].config_path).expect("config loads");
        assert_eq!(loaded, nodes[0].config);
        let wrong = LocalOptions {
            nodes: 3,
            ..options
        };
        assert!(matches!(
            prepare(dir.path(), &wrong),
            Err(LocalError::SizeMismatch { .. })
        ));
    }
}
