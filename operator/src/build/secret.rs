//! `<member>-keys`: the member's node keys and admin key.
//!
//! Unlike every other object of a Member, the Secret has **no owner reference**:
//! a node's identity belongs with its data, not with the Member object. The
//! garbage collector (including `kubectl delete --cascade=foreground`) therefore
//! never removes it; the Member's finalizer deletes it only together with the
//! volumes (`storage.deleteOnTeardown`). A Member re-created under the same name
//! in the same namespace finds it, reuses every issued key and takes the
//! retained volumes back with matching identities.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{names, MemberInputs};
use crate::keys::KeyMaterial;
use crate::Result;

pub fn build(inputs: &MemberInputs<'_>, keys: &KeyMaterial) -> Result<Secret> {
    let member = inputs.name()?;
    let mut metadata = inputs.metadata(names::secret(&member))?;
    metadata.owner_references = None;
    Ok(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(
            keys.to_files()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn secret_holds_node_and_admin_keys() {
        let (c, m, s) = fixtures::inputs();
        let inputs = MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        };
        let keys = fixtures::keys();
        let secret = build(&inputs, &keys).expect("build");
        let data: std::collections::BTreeMap<String, String> = secret
            .data
            .expect("data")
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf8")))
            .collect();
        assert_eq!(
            data.keys().cloned().collect::<Vec<_>>(),
            vec!["admin.key", "org1-0.key", "org1-1.key"]
        );
        assert!(data["org1-0.key"].ends_with('\n'));
        assert_eq!(data["org1-0.key"].trim().len(), 64);
    }

    #[test]
    fn secret_outlives_the_member() {
        let (c, m, s) = fixtures::inputs();
        let inputs = MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        };
        let secret = build(&inputs, &fixtures::keys()).expect("build");
        assert_eq!(secret.metadata.owner_references, None);
        let labels = secret.metadata.labels.expect("labels");
        assert_eq!(labels["kubeledger.io/member"], "org1");
        assert_eq!(labels["kubeledger.io/consortium"], "escrow");
        // Every other object of the member is owned by it.
        let cm = super::super::config_map::build_node_config(&inputs).expect("cm");
        assert_eq!(
            cm.metadata.owner_references.expect("owner")[0].kind,
            "Member"
        );
    }
}
