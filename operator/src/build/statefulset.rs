//! `<member>`: the StatefulSet running the member's validator nodes.
//!
//! Non-root (uid 10001), read-only root filesystem, data on a PVC per node at
//! `/var/lib/kubeledger`, native gRPC probes on the node's health service with a
//! long startup budget for state transfer. With `spec.backup`, a second PVC per
//! node for its scheduled backups; with `spec.seedFrom`, an init container that
//! restores an empty node from the newest snapshot in the seed claim that proves.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::config_map::{self, BACKUP_DIR, CONFIG_PATH, DATA_DIR, GENESIS_DIR, KEYS_DIR, SEED_DIR};
use super::{names, MemberInputs};
use crate::Result;

pub const NODE_UID: i64 = 10001;
/// The volume claim templates: each node's data, and its backups when the
/// Member schedules them (`<template>-<pod>` on the cluster).
pub const DATA_VOLUME: &str = "data";
pub const BACKUP_VOLUME: &str = "backups";
const SEED_VOLUME: &str = "seed";
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
        hasher.update(config_map::node_toml(n, inputs.backup())?.as_bytes());
    }
    let config_hash = hex::encode(hasher.finalize());

    let key_items: Vec<_> = nodes
        .iter()
        .map(|n| {
            let file = crate::keys::node_key_entry(n);
            json!({"key": file, "path": file})
        })
        .collect();

    let claim = |name: &str, size: &str, class: Option<&String>| {
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        });
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        Ok::<_, crate::Error>(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": inputs.selector_labels()?},
            "spec": spec
        }))
    };
    let mut claims = vec![claim(
        DATA_VOLUME,
        &storage.size,
        storage.storage_class_name.as_ref(),
    )?];
    if let Some(b) = inputs.backup() {
        claims.push(claim(
            BACKUP_VOLUME,
            &b.size,
            b.storage_class_name.as_ref(),
        )?);
    }
    let security_context = json!({
        "runAsNonRoot": true,
        "runAsUser": NODE_UID,
        "runAsGroup": NODE_UID,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}
    });

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
        "securityContext": security_context,
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_PATH, "subPathExpr": "$(POD_NAME).toml", "readOnly": true},
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": true},
            {"name": "genesis", "mountPath": GENESIS_DIR, "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"}
        ]
    });
    if let Some(resources) = inputs.resources() {
        container["resources"] = serde_json::to_value(resources)?;
    }
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": names::config_map(&member)}}),
        json!({"name": "keys", "secret": {"secretName": names::secret(&member), "defaultMode": 0o440, "items": key_items}}),
        json!({"name": "genesis", "configMap": {"name": names::genesis_config_map(&inputs.consortium_name())}}),
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}),
    ];
    if inputs.backup().is_some() {
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": BACKUP_VOLUME, "mountPath": BACKUP_DIR}));
        }
    }
    let mut init_containers = Vec::new();
    if let Some(seed) = inputs.seed() {
        volumes.push(json!({
            "name": SEED_VOLUME,
            "persistentVolumeClaim": {"claimName": seed.claim_name, "readOnly": true}
        }));
        let from = match &seed.path {
            Some(path) => format!("{SEED_DIR}/{path}"),
            None => SEED_DIR.to_string(),
        };
        // Runs before every start of the node; restores only into an empty
        // data volume, and fails (the pod does not start) when no snapshot
        // in the claim proves itself.
        init_containers.push(json!({
            "name": "restore",
            "image": inputs.image(),
            "imagePullPolicy": "IfNotPresent",
            "command": ["kubeledger", "snapshot", "restore", "--if-empty",
                        "--from", from, "--config", CONFIG_PATH],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ],
            "securityContext": security_context,
            "volumeMounts": [
                {"name": DATA_VOLUME, "mountPath": DATA_DIR},
                {"name": "config", "mountPath": CONFIG_PATH, "subPathExpr": "$(POD_NAME).toml", "readOnly": true},
                {"name": "genesis", "mountPath": GENESIS_DIR, "readOnly": true},
                {"name": SEED_VOLUME, "mountPath": SEED_DIR, "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"}
            ]
        }));
        if let Some(resources) = &container.get("resources") {
            init_containers[0]["resources"] = (*resources).clone();
        }
    }

    let retention = if storage.delete_on_teardown {
        "Delete"
    } else {
        "Retain"
    };
    let mut value = json!({
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
                    "volumes": volumes
                }
            },
            "volumeClaimTemplates": claims
        }
    });
    if !init_containers.is_empty() {
        value["spec"]["template"]["spec"]["initContainers"] = json!(init_containers);
    }
    Ok(serde_json::from_value(value)?)
}

/// What of a StatefulSet's volume claim templates the API server does not
/// let change in place: each template's name, requested size and class.
fn claim_shape(sts: &StatefulSet) -> Vec<(String, Option<String>, Option<String>)> {
    sts.spec
        .volume_claim_templates
        .as_ref()
        .map(|claims| {
            claims
                .iter()
                .map(|c| {
                    let spec = c.spec.as_ref();
                    (
                        c.metadata.name.clone().unwrap_or_default(),
                        spec.and_then(|s| s.resources.as_ref())
                            .and_then(|r| r.requests.as_ref())
                            .and_then(|r| r.get("storage"))
                            .map(|q| q.0.clone()),
                        spec.and_then(|s| s.storage_class_name.clone()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The claim templates `desired` names, when they differ from `existing`'s
/// in what can't be updated in place (the StatefulSet is then replaced,
/// keeping its pods and volumes).
pub fn claims_changed(
    existing: &StatefulSet,
    desired: &StatefulSet,
) -> Option<(Vec<String>, Vec<String>)> {
    let (old, new) = (claim_shape(existing), claim_shape(desired));
    // A class the server filled in (the cluster default) is no change.
    let same = old.len() == new.len()
        && old
            .iter()
            .zip(&new)
            .all(|(o, n)| o.0 == n.0 && o.1 == n.1 && (n.2.is_none() || o.2 == n.2));
    let names = |v: &[(String, Option<String>, Option<String>)]| {
        v.iter()
            .map(|(n, size, _)| format!("{n}:{}", size.as_deref().unwrap_or("?")))
            .collect()
    };
    (!same).then(|| (names(&old), names(&new)))
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
    fn backups_get_a_volume_per_node_and_a_seed_restores_empty_nodes() {
        let (c, mut m, s) = fixtures::inputs();
        let built = |m: &crate::crd::Member| {
            serde_json::to_value(
                build(&MemberInputs {
                    member: m,
                    consortium: &c,
                    settings: &s,
                })
                .expect("build"),
            )
            .expect("json")
        };
        let plain = built(&m);
        assert!(plain["spec"]["template"]["spec"]["initContainers"].is_null());
        assert_eq!(
            plain["spec"]["volumeClaimTemplates"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        m.spec.backup = Some(crate::crd::BackupSpec {
            interval: "6h".into(),
            keep: 3,
            size: "20Gi".into(),
            storage_class_name: Some("cold".into()),
        });
        m.spec.seed_from = Some(crate::crd::SeedSpec {
            claim_name: "org1-seed".into(),
            path: Some("backups".into()),
        });
        let v = built(&m);
        let claims = &v["spec"]["volumeClaimTemplates"];
        assert_eq!(claims[1]["metadata"]["name"], "backups");
        assert_eq!(
            claims[1]["spec"]["resources"]["requests"]["storage"],
            "20Gi"
        );
        assert_eq!(claims[1]["spec"]["storageClassName"], "cold");
        let pod = &v["spec"]["template"]["spec"];
        let mounts = pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts");
        assert!(mounts
            .iter()
            .any(|m| m["name"] == "backups" && m["mountPath"] == BACKUP_DIR));
        let init = &pod["initContainers"][0];
        assert_eq!(
            init["command"],
            json!([
                "kubeledger",
                "snapshot",
                "restore",
                "--if-empty",
                "--from",
                "/var/lib/kubeledger-seed/backups",
                "--config",
                "/etc/kubeledger/node.toml"
            ])
        );
        assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
        let seed = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "seed")
            .expect("seed volume");
        assert_eq!(seed["persistentVolumeClaim"]["claimName"], "org1-seed");
        assert_eq!(seed["persistentVolumeClaim"]["readOnly"], true);
        // Turning backups on changes the claim templates, not in place.
        let (with, without): (StatefulSet, StatefulSet) = (
            serde_json::from_value(v.clone()).expect("sts"),
            serde_json::from_value(plain.clone()).expect("sts"),
        );
        assert_eq!(
            claims_changed(&without, &with),
            Some((
                vec!["data:5Gi".into()],
                vec!["data:5Gi".into(), "backups:20Gi".into()]
            ))
        );
        assert_eq!(claims_changed(&with, &with), None);
        // A class the server defaulted is no change.
        let with_class = |class: Option<&str>| {
            let mut sts = without.clone();
            for c in sts.spec.volume_claim_templates.iter_mut().flatten() {
                if let Some(spec) = c.spec.as_mut() {
                    spec.storage_class_name = class.map(str::to_owned);
                }
            }
            sts
        };
        let (defaulted, unclassed) = (with_class(Some("standard")), with_class(None));
        assert_eq!(claims_changed(&defaulted, &unclassed), None);
        // A schedule is node configuration: the pods roll when it changes.
        assert_ne!(
            plain["spec"]["template"]["metadata"]["annotations"]["kubeledger.io/config-hash"],
            v["spec"]["template"]["metadata"]["annotations"]["kubeledger.io/config-hash"]
        );
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
