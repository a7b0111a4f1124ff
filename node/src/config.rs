//! Node configuration: a TOML file, overridable by command-line flags.
//!
//! Node-local settings live here (addresses, paths, mempool size). Chain-wide
//! parameters (block interval and size limits) live in the genesis, because
//! every replica must apply the same ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Human-readable node name (the pod name under Kubernetes).
    pub name: String,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub genesis_file: PathBuf,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub mempool: MempoolConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub peer: PeerConfig,
    #[serde(default)]
    pub state_sync: StateSyncConfig,
    #[serde(default)]
    pub backup: BackupConfig,
}

/// Scheduled backups: every `interval_s` the node takes a snapshot (see
/// `kubeledger snapshot create`) into `dir` and keeps the newest `keep`.
/// `dir` is best a volume of its own, so a backup outlives the data volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups go; none: no scheduled backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub interval_s: u64,
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval_s: 3600,
            keep: 3,
        }
    }
}

/// Joining by state sync: what a new node does when the chain is far
/// ahead, and how a node cuts the state it serves to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSyncConfig {
    /// A node with an empty ledger joins by state sync when a peer's
    /// latest stable checkpoint is at least `min_distance` blocks ahead;
    /// closer, it replays the blocks.
    pub enabled: bool,
    pub min_distance: u64,
    /// Peer addresses (host:port) to sync from; empty: the validators of
    /// the configuration the node starts with (genesis on a new node).
    pub peers: Vec<String>,
    /// Chunks fetched at once (from different peers where there are).
    pub parallel_chunks: usize,
    /// Served: most entries and bytes (keys and values) per chunk.
    pub chunk_entries: usize,
    pub chunk_bytes: usize,
}

impl Default for StateSyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_distance: 10_000,
            peers: Vec::new(),
            parallel_chunks: 4,
            chunk_entries: 16_384,
            chunk_bytes: 4 << 20,
        }
    }
}

/// What the node's `Peer` service serves to other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// Most blocks one `GetBlocks` response streams; a node catching up
    /// asks again from where a response ended.
    pub max_blocks_per_response: u64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            max_blocks_per_response: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Not ready while more than this many blocks behind the highest
    /// height the peers report.
    pub ready_max_lag: u64,
    /// A loop (consensus, storage) silent this long fails liveness, seconds.
    pub loop_timeout_s: u64,
    /// The watchdog ends the process once liveness has failed this long,
    /// seconds; 0 turns the watchdog off.
    pub watchdog_s: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            ready_max_lag: 10,
            loop_timeout_s: 10,
            watchdog_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], 7050)),
            peer: SocketAddr::from(([127, 0, 0, 1], 7051)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolConfig {
    /// Pending transactions held at most; further submissions get
    /// RESOURCE_EXHAUSTED until blocks drain the pool.
    pub max_txs: usize,
    /// Encoded bytes of pending transactions held at most (queued and in
    /// proposals not yet committed); REJECT_REASON_MEMPOOL_BYTES_FULL past it.
    pub max_bytes: usize,
    /// Pending transactions one sender key may have at once, so one client
    /// cannot fill the pool for everyone; REJECT_REASON_SENDER_QUOTA past it.
    pub max_txs_per_sender: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_txs: 200_000,
            max_bytes: 256 * 1024 * 1024,
            max_txs_per_sender: 50_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// RocksDB block cache, MiB.
    pub block_cache_mb: usize,
    /// Memtable size per column family, MiB.
    pub write_buffer_mb: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            block_cache_mb: 64,
            write_buffer_mb: 32,
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Invalid("name must not be empty".into()));
        }
        if self.health.loop_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "health.loop_timeout_s must be positive".into(),
            ));
        }
        if self.peer.max_blocks_per_response == 0 {
            return Err(ConfigError::Invalid(
                "peer.max_blocks_per_response must be positive".into(),
            ));
        }
        if self.backup.interval_s == 0 || !(1..=1000).contains(&self.backup.keep) {
            return Err(ConfigError::Invalid(format!(
                "backup.interval_s ({}) must be positive and backup.keep ({}) between 1 and 1000",
                self.backup.interval_s, self.backup.keep
            )));
        }
        if self.mempool.max_txs == 0 {
            return Err(ConfigError::Invalid(
                "mempool.max_txs must be positive".into(),
            ));
        }
        if self.mempool.max_bytes == 0 || self.mempool.max_txs_per_sender == 0 {
            return Err(ConfigError::Invalid(format!(
                "mempool.max_bytes ({}) and mempool.max_txs_per_sender ({}) must be positive",
                self.mempool.max_bytes, self.mempool.max_txs_per_sender
            )));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_operator_config_shape() {
        let text = r#"
name = "org1-0"
data_dir = "/var/lib/kubeledger"
key_file = "/etc/kubeledger/keys/org1-0.key"
genesis_file = "/etc/kubeledger/genesis/genesis.json"
[listen]
grpc = "0.0.0.0:7050"
peer = "0.0.0.0:7051"
metrics = "0.0.0.0:9100"
[mempool]
max_txs = 1000

[backup]
dir = "/var/lib/kubeledger-backups"
interval_s = 5400
keep = 5
"#;
        let config: NodeConfig = toml::from_str(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.listen.grpc.port(), 7050);
        assert_eq!(config.mempool.max_txs, 1000);
        assert_eq!(config.storage, StorageConfig::default());
        assert_eq!(config.backup.interval_s, 5400);
        assert_eq!(config.backup.keep, 5);
        let again: NodeConfig = toml::from_str(&config.to_toml()).expect("round trip");
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "name='a'\ndata_dir='d'\nkey_file='k'\ngenesis_file='g'\nblock_interval=3\n";
        assert!(toml::from_str::<NodeConfig>(text).is_err());
    }
}
