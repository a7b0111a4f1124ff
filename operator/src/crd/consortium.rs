use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kubeledger_protocol::chain_params::ChainParams;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChainConfigStatus, EffectiveConfig};

/// A consortium: one chain shared by several organisations ([`Member`](super::Member)s),
/// each running validator nodes in its own namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubeledger.io",
    version = "v1alpha1",
    kind = "Consortium",
    plural = "consortia",
    singular = "consortium",
    shortname = "cons",
    status = "ConsortiumStatus",
    category = "kubeledger",
    printcolumn = r#"{"name":"Chain","type":"string","jsonPath":".spec.chainId"}"#,
    printcolumn = r#"{"name":"Height","type":"integer","jsonPath":".status.height"}"#,
    printcolumn = r#"{"name":"View","type":"integer","jsonPath":".status.view"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.primary"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodesSummary"}"#,
    printcolumn = r#"{"name":"Members","type":"string","jsonPath":".status.membersSummary"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Config","type":"integer","priority":1,"jsonPath":".status.chainConfig.version"}"#,
    printcolumn = r#"{"name":"Interval(ms)","type":"integer","priority":1,"jsonPath":".status.chainConfig.blockIntervalMs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxTxBytes <= self.maxBlockBytes", "message": "maxTxBytes must not exceed maxBlockBytes"},
    {"rule": "duration(self.viewChangeTimeout) > duration(self.blockInterval)", "message": "viewChangeTimeout must be longer than blockInterval"},
    {"rule": "(self.checkpointInterval < 8 ? 16 : 2 * self.checkpointInterval) * (self.maxBlockBytes + 65536) <= 268435456", "message": "a view change carries every block of two checkpointIntervals: 2 x checkpointInterval x (maxBlockBytes + 64 KiB) must be at most 256 MiB; lower either"}
]))]
pub struct ConsortiumSpec {
    /// Chain identifier, written into genesis and every transaction. Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "chainId is immutable"}]))]
    pub chain_id: String,

    /// The Members whose nodes form the genesis validator set.
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "size(self) >= 1", "message": "at least one founding member is required"}]))]
    pub founders: Vec<MemberRef>,

    /// Target time between blocks (Go duration, e.g. `200ms`). Changing it on
    /// a running consortium proposes the change on chain (as do
    /// `maxBlockTxs` and `maxBlockBytes`); `status.chainConfig` shows what is
    /// in force and from which height.
    #[serde(default = "default_block_interval")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('10ms') && duration(self) <= duration('1m')", "message": "blockInterval must be a duration between 10ms and 1m"}]))]
    pub block_interval: String,

    /// Maximum transactions per block.
    #[serde(default = "default_max_block_txs")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_block_txs: u32,

    /// Maximum encoded size of a block in bytes.
    #[serde(default = "default_max_block_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_block_bytes: u64,

    /// Maximum encoded size of one transaction in bytes.
    #[serde(default = "default_max_tx_bytes")]
    #[schemars(range(min = 256, max = 16777216))]
    pub max_tx_bytes: u64,

    /// Maximum size of a state key in bytes.
    #[serde(default = "default_max_key_bytes")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_key_bytes: u32,

    /// Maximum size of a state value in bytes.
    #[serde(default = "default_max_value_bytes")]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_value_bytes: u64,

    /// Blocks between PBFT checkpoints. The message log, and every
    /// view-change message, holds up to two intervals of blocks.
    #[serde(default = "default_checkpoint_interval")]
    #[schemars(range(min = 1, max = 100000))]
    pub checkpoint_interval: u32,

    /// Time without progress before replicas start a view change (Go duration).
    #[serde(default = "default_view_change_timeout")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('100ms') && duration(self) <= duration('10m')", "message": "viewChangeTimeout must be a duration between 100ms and 10m"}]))]
    pub view_change_timeout: String,

    /// Defaults for every member's nodes; Members may override resources and storage.
    #[serde(default)]
    pub node_defaults: NodeTemplate,

    /// How configuration changes (new members, parameter changes) are decided
    /// on chain: written into genesis, where the first founder's admin key
    /// becomes the consortium admin. Fixed once genesis exists.
    #[serde(default)]
    pub admission: AdmissionPolicy,

    /// Automatic healing of stuck or corrupt nodes.
    #[serde(default)]
    pub healing: HealingSpec,
}

/// A reference to a namespaced [`Member`](super::Member).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct MemberRef {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// Node settings shared by a consortium's members.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Node image; defaults to the operator's `--node-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container resources of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub storage: StorageSpec,
}

/// The persistent volume of each node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size (Kubernetes quantity).
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// StorageClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What deleting the Member does with its nodes' data and identities.
    ///
    /// `false` (default): the nodes' PersistentVolumeClaims **and** the node key
    /// Secret (`<member>-keys`) are kept. A Member re-created with the same name
    /// in the same namespace (and the same consortium) reuses both, so its nodes
    /// come back with their old keys and their old data; keys are never issued
    /// again while that Secret exists.
    ///
    /// `true`: the volumes are deleted and then the key Secret, in that order, so
    /// that keys never disappear while data signed with them remains.
    #[serde(default)]
    pub delete_on_teardown: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_on_teardown: false,
        }
    }
}

/// How members join after genesis.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.mode != 'Vote' || has(self.vote)", "message": "mode Vote requires the vote settings"}]))]
pub struct AdmissionPolicy {
    #[serde(default)]
    pub mode: AdmissionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<VotePolicy>,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self {
            mode: AdmissionMode::Automatic,
            vote: None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AdmissionMode {
    #[default]
    Automatic,
    Vote,
}

/// Admission by an on-chain vote of the existing members.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VotePolicy {
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub threshold_percent: u8,
    #[serde(default)]
    pub comparator: VoteComparator,
    /// How long a proposal stays open (Go duration).
    #[serde(default = "default_vote_expiry")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s')", "message": "expiry must be a positive duration"}]))]
    pub expiry: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VoteComparator {
    GreaterThan,
    #[default]
    AtLeast,
}

/// Healing of nodes that are alive but useless: the operator polls every
/// validator, classifies it (healthy, unreachable, stuck, lagging,
/// crash-looping, corrupt) and deletes the pod of a stuck, lagging or silent
/// node (its StatefulSet recreates it and state transfer catches it up), never
/// taking more than n − (2f + 1) validators out at once.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.rebuildCorruptReplicas || self.enabled", "message": "rebuildCorruptReplicas needs enabled"}
]))]
pub struct HealingSpec {
    /// Restart unhealthy nodes. When false, health is still classified and
    /// reported in status, Events and metrics, but no pod is deleted.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A node whose height has not moved for this long while the consortium's
    /// height did is stuck; a node whose pod is Ready but that has not answered
    /// Status for this long is restarted too (Go duration, 30s to 24h).
    #[serde(default = "default_stuck_after")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('30s') && duration(self) <= duration('24h')", "message": "stuckAfter must be a duration between 30s and 24h"}]))]
    pub stuck_after: String,
    /// Blocks behind the consortium's height beyond which a node is behind.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_lag: u64,
    /// How long a node must stay more than `maxLag` blocks behind to be lagging
    /// (Go duration, 30s to 24h).
    #[serde(default = "default_lag_for")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('30s') && duration(self) <= duration('24h')", "message": "lagFor must be a duration between 30s and 24h"}]))]
    pub lag_for: String,
    /// Restarts of one node in any hour, after which the operator stops
    /// restarting it, marks its Member Degraded and raises a Warning Event.
    /// 0 only reports.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 0, max = 60))]
    pub max_restarts_per_hour: u32,
    /// Wait after a node's first restart before the next one; doubled for each
    /// further restart of that node within the hour (Go duration, 10s to 1h).
    #[serde(default = "default_restart_backoff")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('10s') && duration(self) <= duration('1h')", "message": "restartBackoff must be a duration between 10s and 1h"}]))]
    pub restart_backoff: String,
    /// Rebuild a replica whose node reports corrupt storage: its volume is
    /// deleted with its pod and the new replica transfers state from its peers
    /// (its keys are kept). Off: a corrupt replica is only reported.
    #[serde(default)]
    pub rebuild_corrupt_replicas: bool,
}

impl Default for HealingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            stuck_after: default_stuck_after(),
            max_lag: default_max_lag(),
            lag_for: default_lag_for(),
            max_restarts_per_hour: default_max_restarts(),
            restart_backoff: default_restart_backoff(),
            rebuild_corrupt_replicas: false,
        }
    }
}

/// Observed state of a consortium.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsortiumStatus {
    /// Pending (waiting for founders' keys), Bootstrapping, Running, Degraded or
    /// Terminating (deleted, waiting for its Members to be deleted first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Highest committed height reported by any node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<u64>,
    /// Name of the current primary node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorStatus>,
    /// Validators classified healthy.
    #[serde(default)]
    pub validators_healthy: u32,
    /// `healthy/total` validators, for `kubectl get` and dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_summary: Option<String>,
    #[serde(default)]
    pub members_ready: u32,
    #[serde(default)]
    pub members_total: u32,
    /// `ready/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_summary: Option<String>,
    /// RFC 3339 time of the newest block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block_time: Option<String>,
    /// Committed transactions per second since the previous poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_tps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txs_committed: Option<u64>,
    /// Unix milliseconds of the poll behind `txsCommitted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at_ms: Option<u64>,
    /// The chain parameters written into genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<EffectiveConfig>,
    /// The consortium configuration the chain holds (`GetConfig`): the
    /// parameters in force, a decided change waiting for its height, and the
    /// open parameter proposal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_config: Option<ChainConfigStatus>,
    /// The genesis document, created once and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis: Option<String>,
    /// SHA-256 of `genesis`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<String>,
    /// Namespaces holding a copy of the genesis ConfigMap (removed on teardown,
    /// after the last Member is gone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub genesis_namespaces: Vec<String>,
}

/// One validator of the genesis set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorStatus {
    pub name: String,
    pub member: String,
    pub public_key: String,
    pub peer_address: String,
    #[serde(default)]
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<u64>,
    /// Healthy, Unreachable, Stuck, Lagging, CrashLooping or Corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Why the node is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// RFC 3339 time the current unhealthy condition began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<String>,
    /// What healing does about the node: Restarting (restarted, not yet back),
    /// BackingOff, QuorumGuard, RestartCapReached, Disabled, RebuildDisabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<String>,
    /// RFC 3339 times of the operator's restarts of this node in the last hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_restarts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_reason: Option<String>,
}

/// A configuration proposal on chain.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProposalStatus {
    pub id: u64,
    /// AdmitMember, RemoveMember or UpdateParams.
    pub kind: String,
    /// Open, Approved, Rejected or Expired.
    pub state: String,
    pub proposer: String,
    pub votes_for: u32,
    pub votes_against: u32,
    /// Share of the members whose approval decides it, and how it compares.
    pub threshold_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparator: Option<String>,
    /// RFC 3339 time after which an undecided proposal lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// First height at which an approved change is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_height: Option<u64>,
    /// Why it ended the way it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn default_block_interval() -> String {
    "200ms".into()
}
fn default_max_block_txs() -> u32 {
    ChainParams::default().max_block_txs
}
fn default_max_block_bytes() -> u64 {
    ChainParams::default().max_block_bytes
}
/// Smaller than the chain's own default: a Consortium's transactions are
/// expected to be records, not documents.
fn default_max_tx_bytes() -> u64 {
    64 * 1024
}
fn default_max_key_bytes() -> u32 {
    ChainParams::default().max_key_bytes
}
fn default_max_value_bytes() -> u64 {
    ChainParams::default().max_value_bytes
}
fn default_checkpoint_interval() -> u32 {
    ChainParams::default().checkpoint_interval
}
fn default_view_change_timeout() -> String {
    "2s".into()
}
fn default_storage_size() -> String {
    "10Gi".into()
}
fn default_threshold() -> u8 {
    67
}
fn default_vote_expiry() -> String {
    "24h".into()
}
fn default_true() -> bool {
    true
}
fn default_stuck_after() -> String {
    "2m".into()
}
fn default_lag_for() -> String {
    "5m".into()
}
fn default_restart_backoff() -> String {
    "1m".into()
}
fn default_max_lag() -> u64 {
    1000
}
fn default_max_restarts() -> u32 {
    3
}
