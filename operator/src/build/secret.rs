//! `<member>-keys`: the member's node keys and admin key.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{names, MemberInputs};
use crate::keys::KeyMaterial;
use crate::Result;

pub fn build(inputs: &MemberInputs<'_>, keys: &KeyMaterial) -> Result<Secret> {
    let member = inputs.name()?;
    Ok(Secret {
        metadata: inputs.metadata(names::secret(&member))?,
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
}
