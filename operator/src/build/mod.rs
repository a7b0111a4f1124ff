//! Pure builders: from the custom resources to the desired Kubernetes objects.
//!
//! Nothing here does I/O; the controllers apply what these functions return and
//! `kubeledger-operator render` prints it. One file per built object.

pub mod config_map;
pub mod names;
pub mod pdb;
pub mod secret;
pub mod service;
pub mod service_account;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ResourceRequirements, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{BackupSpec, Consortium, Member, NodeKey, SeedSpec, StorageSpec};
use crate::keys::KeyMaterial;
use crate::{Error, Result};

/// Operator-wide settings the builders need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Node image used when the Consortium does not name one.
    pub node_image: String,
    /// The cluster's DNS domain, for peer addresses.
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_image: format!("ghcr.io/kubeledger/node:{}", env!("CARGO_PKG_VERSION")),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Everything needed to build a member's objects.
#[derive(Clone, Copy, Debug)]
pub struct MemberInputs<'a> {
    pub member: &'a Member,
    pub consortium: &'a Consortium,
    pub settings: &'a Settings,
}

impl MemberInputs<'_> {
    pub fn name(&self) -> Result<String> {
        self.member
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))
    }

    pub fn namespace(&self) -> Result<String> {
        self.member
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingField("metadata.namespace"))
    }

    pub fn consortium_name(&self) -> String {
        self.consortium.name_any()
    }

    pub fn node_names(&self) -> Result<Vec<String>> {
        Ok(names::node_names(&self.name()?, self.member.spec.replicas))
    }

    pub fn image(&self) -> String {
        self.consortium
            .spec
            .node_defaults
            .image
            .clone()
            .unwrap_or_else(|| self.settings.node_image.clone())
    }

    pub fn resources(&self) -> Option<ResourceRequirements> {
        self.member
            .spec
            .resources
            .clone()
            .or_else(|| self.consortium.spec.node_defaults.resources.clone())
    }

    pub fn backup(&self) -> Option<&BackupSpec> {
        self.member.spec.backup.as_ref()
    }

    pub fn seed(&self) -> Option<&SeedSpec> {
        self.member.spec.seed_from.as_ref()
    }

    pub fn storage(&self) -> StorageSpec {
        self.member
            .spec
            .storage
            .clone()
            .unwrap_or_else(|| self.consortium.spec.node_defaults.storage.clone())
    }

    /// Labels on every object of this member.
    pub fn labels(&self) -> Result<BTreeMap<String, String>> {
        let mut l = self.selector_labels()?;
        l.insert(
            "app.kubernetes.io/managed-by".into(),
            crate::FIELD_MANAGER.into(),
        );
        l.insert("app.kubernetes.io/part-of".into(), "kubeledger".into());
        l.insert("kubeledger.io/consortium".into(), self.consortium_name());
        l.insert("kubeledger.io/member".into(), self.name()?);
        Ok(l)
    }

    /// Labels selecting this member's node pods.
    pub fn selector_labels(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::from([
            ("app.kubernetes.io/name".into(), "kubeledger-node".into()),
            ("app.kubernetes.io/instance".into(), self.name()?),
        ]))
    }

    /// Metadata of an object named `name` owned by the Member.
    pub fn metadata(&self, name: String) -> Result<ObjectMeta> {
        Ok(ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace()?),
            labels: Some(self.labels()?),
            owner_references: self.member.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        })
    }
}

/// Every object of a member, built together by the controller and by
/// `kubeledger-operator render`.
#[derive(Clone, Debug)]
pub struct MemberObjects {
    pub service_account: ServiceAccount,
    pub secret: Secret,
    pub node_config: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub pdb: PodDisruptionBudget,
    pub statefulset: StatefulSet,
}

impl MemberObjects {
    /// Builds every object of the member from its inputs and key material.
    pub fn build(inputs: &MemberInputs<'_>, keys: &KeyMaterial) -> Result<Self> {
        Ok(Self {
            service_account: service_account::build(inputs)?,
            secret: secret::build(inputs, keys)?,
            node_config: config_map::build_node_config(inputs)?,
            headless_service: service::build_headless(inputs)?,
            client_service: service::build_client(inputs)?,
            pdb: pdb::build(inputs)?,
            statefulset: statefulset::build(inputs)?,
        })
    }

    /// The objects as JSON, in apply order (also the render order).
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>> {
        Ok(vec![
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.secret)?,
            serde_json::to_value(&self.node_config)?,
            serde_json::to_value(&self.headless_service)?,
            serde_json::to_value(&self.client_service)?,
            serde_json::to_value(&self.pdb)?,
            serde_json::to_value(&self.statefulset)?,
        ])
    }
}

/// What a member publishes in its status for genesis and admission: each
/// node's public key and the admin public key.
pub fn published_keys(node_names: &[String], keys: &KeyMaterial) -> Result<(Vec<NodeKey>, String)> {
    let nodes = node_names
        .iter()
        .filter_map(|n| {
            keys.node_public_key(n).map(|k| NodeKey {
                name: n.clone(),
                public_key: k,
            })
        })
        .collect();
    Ok((nodes, keys.admin_public_key()?))
}
