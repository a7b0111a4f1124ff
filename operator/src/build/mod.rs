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

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::core::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{Consortium, Member, StorageSpec};
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

/// Every object of a member, in apply order (also the render order).
pub fn member_objects(
    inputs: &MemberInputs<'_>,
    keys: &crate::keys::KeyMaterial,
) -> Result<Vec<serde_json::Value>> {
    Ok(vec![
        serde_json::to_value(service_account::build(inputs)?)?,
        serde_json::to_value(secret::build(inputs, keys)?)?,
        serde_json::to_value(config_map::build_node_config(inputs)?)?,
        serde_json::to_value(service::build_headless(inputs)?)?,
        serde_json::to_value(service::build_client(inputs)?)?,
        serde_json::to_value(pdb::build(inputs)?)?,
        serde_json::to_value(statefulset::build(inputs)?)?,
    ])
}
