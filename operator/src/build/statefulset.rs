//! `<member>`: the StatefulSet running the member's validator nodes.
//!
//! Non-root (uid 10001), read-only root filesystem, data on a PVC per node at
//! `/var/lib/kubeledger`, native gRPC probes on the node's health service with a
//! long startup budget for state transfer.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::config_map::{self, CONFIG_PATH, DATA_DIR, GENESIS_DIR, KEYS_DIR};
use super::{names, MemberInputs};
use crate::Result;

pub const NODE_UID: i64 = 10001;
/// startupProbe budget: 360 × 10 s = 1 h to load state or catch up from peers.
pub const STARTUP_FAILURE_THRESHOLD: i32 = 360;

pub fn build(inputs: &MemberInputs<'_>) -> Result<StatefulSet> {
    let member = inputs.name()?;
    let nodes = inputs.node_names()?;
    let storage = inputs.storage();
    let selector = inputs.selector_labels()?;
    let mut pod_labels = inputs.labels()?;
    pod_labels.extend(selector.clone());

    // Roll the pods when their configuration changes.
    let mut hasher = Sha256::new();
    for n in &nodes {
        hasher.update(config_map::node_toml(n).as_bytes());
    }
    let config_hash = hex::encode(hasher.finalize());

    let key_items: Vec<_> = nodes
        .iter()
        .map(|n| {
            let file = crate::keys::node_key_entry(n);
            json!({"key": file, "path": file})
        })
        .collect();

    let mut pvc_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    });
    if let Some(class) = &storage.storage_class_name {
        pvc_spec["storageClassName"] = json!(class);
    }

    let mut container = json!({
        "name": "node",
        "image": inputs.image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["kubeledger", "node", "--config", CONFIG_PATH],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "RUST_LOG", "value": "info"}
        ],
        "ports": [
            {"name": "grpc", "containerPort": names::GRPC_PORT, "protocol": "TCP"},
            {"name": "peer", "containerPort": names::PEER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": names::METRICS_PORT, "protocol": "TCP"}
        ],
        "startupProbe": {
            "grpc": {"port": names::GRPC_PORT, "service": ""},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": STARTUP_FAILURE_THRESHOLD
        },
        "readinessProbe": {
            "grpc": {"port": names::GRPC_PORT, "service": "kubeledger.v1.Ledger"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3
        },
        "livenessProbe": {
            "grpc": {"port": names::GRPC_PORT, "service": ""},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": NODE_UID,
            "runAsGroup": NODE_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_PATH, "subPathExpr": "$(POD_NAME).toml", "readOnly": true},
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": true},
            {"name": "genesis", "mountPath": GENESIS_DIR, "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"}
        ]
    });
    if let Some(resources) = inputs.resources() {
        container["resources"] = serde_json::to_value(resources)?;
    }

    let retention = if storage.delete_on_teardown {
        "Delete"
    } else {
        "Retain"
    };
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": inputs.metadata(names::statefulset(&member))?,
        "spec": {
            "replicas": inputs.member.spec.replicas,
            "serviceName": names::headless_service(&member),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "kubeledger.io/config-hash": config_hash,
                        "kubectl.kubernetes.io/default-container": "node"
                    }
                },
                "spec": {
                    "serviceAccountName": names::service_account(&member),
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": NODE_UID,
                        "runAsGroup": NODE_UID,
                        "fsGroup": NODE_UID,
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names::config_map(&member)}},
                        {"name": "keys", "secret": {"secretName": names::secret(&member), "defaultMode": 0o440, "items": key_items}},
                        {"name": "genesis", "configMap": {"name": names::genesis_config_map(&inputs.consortium_name())}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
                    ]
                }
            },
            "volumeClaimTemplates": [{
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "labels": inputs.selector_labels()?},
                "spec": pvc_spec
            }]
        }
    });
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn built() -> serde_json::Value {
        let (c, m, s) = fixtures::inputs();
        let sts = build(&MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        })
        .expect("build");
        serde_json::to_value(sts).expect("json")
    }

    #[test]
    fn runs_the_node_non_root_read_only() {
        let v = built();
        let pod = &v["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["command"],
            json!([
                "kubeledger",
                "node",
                "--config",
                "/etc/kubeledger/node.toml"
            ])
        );
        assert_eq!(c["image"], "ghcr.io/kubeledger/node:test");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 10001);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(c["startupProbe"]["grpc"]["port"], 7050);
        assert_eq!(c["startupProbe"]["failureThreshold"], 360);
        assert_eq!(
            c["readinessProbe"]["grpc"]["service"],
            "kubeledger.v1.Ledger"
        );
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(v["spec"]["serviceName"], "org1-nodes");
    }

    #[test]
    fn mounts_only_node_keys_and_claims_storage() {
        let v = built();
        let vols = &v["spec"]["template"]["spec"]["volumes"];
        let keys = vols
            .as_array()
            .expect("vols")
            .iter()
            .find(|v| v["name"] == "keys")
            .expect("keys");
        let items: Vec<&str> = keys["secret"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["key"].as_str())
            .collect();
        assert_eq!(items, vec!["org1-0.key", "org1-1.key"]);
        let pvc = &v["spec"]["volumeClaimTemplates"][0];
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
        assert_eq!(pvc["spec"]["storageClassName"], "fast");
        assert_eq!(
            v["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
        // Member override of resources wins over the consortium default.
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "250m"
        );
    }
}
