use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ProposalStatus, StorageSpec};

/// An organisation taking part in a consortium, running `replicas` validator
/// nodes in the Member's namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubeledger.io",
    version = "v1alpha1",
    kind = "Member",
    plural = "members",
    singular = "member",
    shortname = "mem",
    namespaced,
    status = "MemberStatus",
    category = "kubeledger",
    printcolumn = r#"{"name":"Consortium","type":"string","jsonPath":".spec.consortium"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Height","type":"integer","jsonPath":".status.height"}"#,
    printcolumn = r#"{"name":"View","type":"integer","jsonPath":".status.view"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Admission","type":"string","priority":1,"jsonPath":".status.admission.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.approvals) || !has(self.rejections) || self.approvals.all(id, !(id in self.rejections))", "message": "a proposal cannot be both approved and rejected"}
]))]
pub struct MemberSpec {
    /// Name of the (cluster-scoped) Consortium this member belongs to. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "consortium is immutable"}]))]
    pub consortium: String,
    /// Organisation name, shown to the other members.
    #[schemars(length(min = 1, max = 128))]
    pub organization: String,
    /// Number of validator nodes this member runs.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,
    /// Overrides the consortium's node resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides the consortium's node storage, including what deletion of this
    /// Member does with the volumes and node keys (`deleteOnTeardown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Ids of on-chain configuration proposals (see the Consortium's
    /// `status.chainConfig` and the Members' `status.admission`) this member
    /// approves. The operator casts each vote once, signed with this member's
    /// admin key; votes are final, so removing an id later does not withdraw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub approvals: Vec<u64>,
    /// Ids of proposals this member rejects (cast like `approvals`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub rejections: Vec<u64>,
    /// Scheduled backups: each node snapshots itself (a consistent copy with
    /// the certificate of its latest stable checkpoint) into a volume of its
    /// own, `backups-<node>`, kept like the data volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Seeds the nodes from a backup: before a node starts with an empty
    /// data volume (a new node, or one healing rebuilt), it restores the
    /// newest snapshot in this claim that proves itself against the chain's
    /// genesis and checkpoint certificates. A node with a ledger is left as
    /// it is. Without it, an empty node catches up from its peers (by state
    /// sync when the chain is far ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_from: Option<SeedSpec>,
}

/// Backups of each node of a Member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// How often each node takes a backup (e.g. `30m`, `6h`; at least 1m).
    #[serde(default = "default_backup_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"), length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1m')", "message": "backup.interval must be at least 1m"}]))]
    pub interval: String,
    /// Backups each node keeps; the oldest beyond these are deleted.
    #[serde(default = "default_backup_keep")]
    #[schemars(range(min = 1, max = 100))]
    pub keep: u32,
    /// Size of each node's backup volume (Kubernetes quantity). Changing it
    /// applies to volumes created afterwards.
    #[serde(default = "default_backup_size")]
    #[schemars(length(min = 1, max = 32))]
    pub size: String,
    /// StorageClass of the backup volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_backup_interval() -> String {
    "6h".into()
}

fn default_backup_keep() -> u32 {
    3
}

fn default_backup_size() -> String {
    "10Gi".into()
}

/// Where a Member's nodes are seeded from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    /// A PersistentVolumeClaim in the Member's namespace holding snapshots:
    /// a node's backup volume, or a claim provisioned from a VolumeSnapshot
    /// of one (how a backup crosses namespaces and clusters). Every node
    /// mounts it read-only, so with more than one replica it must be
    /// ReadOnlyMany or the pods must share a Kubernetes node.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory inside the claim holding the snapshots; its root when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"),
        length(max = 255)
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "!self.split('/').exists(p, p == '..')", "message": "seedFrom.path must stay inside the claim"}]))]
    pub path: Option<String>,
}

fn default_replicas() -> i32 {
    1
}

/// Observed state of a member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pending, Admitted, Active or Removing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ed25519 public key (hex) of each node, by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_public_keys: Vec<NodeKey>,
    /// Public key (hex) of the member's admin key, for on-chain votes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_public_key: Option<String>,
    #[serde(default)]
    pub ready_nodes: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// For a Member joining a running consortium: the on-chain proposal to
    /// admit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<ProposalStatus>,
    /// What became of each vote in `spec.approvals` and `spec.rejections`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<VoteStatus>,
}

/// One vote of the member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteStatus {
    pub proposal_id: u64,
    pub approve: bool,
    /// Cast (on chain), Skipped (decided, expired, or not a member),
    /// UnknownProposal, Conflict (voted the other way before) or Refused.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A node's public key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeKey {
    pub name: String,
    pub public_key: String,
}

/// Observed state of one node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub ready: bool,
    /// Whether the node answered the Status RPC.
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block_time: Option<String>,
    /// Container restarts of the node's current pod (kubelet).
    #[serde(default)]
    pub restarts: i32,
    /// Healthy, Unreachable, Stuck, Lagging, CrashLooping or Corrupt (from the
    /// Consortium's health monitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Pod restarts by the operator's healing in the last hour.
    #[serde(default)]
    pub healing_restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_reason: Option<String>,
    /// The newest backup the node took or keeps (`spec.backup`, or
    /// `kubeledger snapshot create`): the height it holds and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
}
