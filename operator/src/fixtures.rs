//! Small resources shared by the unit and reconcile tests.

pub mod api_server;
pub mod calls;
pub mod objects;
pub mod reconcile;
pub mod recording_chain;

use std::collections::BTreeMap;

use crate::build::Settings;
use crate::crd::{Consortium, Member, MemberStatus, NodeKey};
use crate::keys::{public_key_hex, KeyMaterial};

pub const CONSORTIUM_YAML: &str = r#"
apiVersion: kubeledger.io/v1alpha1
kind: Consortium
metadata:
  name: escrow
  uid: 11111111-1111-1111-1111-111111111111
  generation: 1
spec:
  chainId: escrow-prod
  founders:
    - {name: org1, namespace: org1}
    - {name: org2, namespace: org2}
  nodeDefaults:
    resources:
      requests: {cpu: 100m, memory: 256Mi}
    storage:
      size: 5Gi
      storageClassName: fast
"#;

pub const MEMBER_YAML: &str = r#"
apiVersion: kubeledger.io/v1alpha1
kind: Member
metadata:
  name: org1
  namespace: org1
  uid: 22222222-2222-2222-2222-222222222222
  generation: 1
spec:
  consortium: escrow
  organization: Org One
  replicas: 2
  resources:
    requests: {cpu: 250m, memory: 512Mi}
"#;

pub fn consortium() -> Consortium {
    serde_yaml::from_str(CONSORTIUM_YAML).expect("consortium fixture")
}

pub fn member() -> Member {
    serde_yaml::from_str(MEMBER_YAML).expect("member fixture")
}

pub fn member_named(name: &str, replicas: i32) -> Member {
    let mut m = member();
    m.metadata.name = Some(name.into());
    m.metadata.namespace = Some(name.into());
    m.spec.replicas = replicas;
    m
}

pub fn settings() -> Settings {
    Settings {
        node_image: "ghcr.io/kubeledger/node:test".into(),
        cluster_domain: "cluster.local".into(),
    }
}

pub fn inputs() -> (Consortium, Member, Settings) {
    (consortium(), member(), settings())
}

/// Fixed seeds (test-only!) for org1's two nodes and its admin key.
pub fn keys() -> KeyMaterial {
    KeyMaterial {
        nodes: BTreeMap::from([
            ("org1-0".into(), "01".repeat(32)),
            ("org1-1".into(), "02".repeat(32)),
        ]),
        admin: "03".repeat(32),
        generated: false,
    }
}

/// Test-only admin seed of member `name` (org1's is [`keys`]' admin).
pub fn admin_seed(name: &str) -> String {
    match name {
        "org1" => "03".repeat(32),
        "org2" => "07".repeat(32),
        _ => "09".repeat(32),
    }
}

/// Public key (hex) of [`admin_seed`].
pub fn admin_public_key(name: &str) -> String {
    public_key_hex(&admin_seed(name)).expect("key")
}

/// org1 (2 nodes) and org2 (1 node), both with published keys.
pub fn members_with_keys() -> Vec<Member> {
    members_with_keys_sized(1)
}

/// org1 (2 nodes) and org2 (`org2_nodes` nodes), both with published keys.
pub fn members_with_keys_sized(org2_nodes: i32) -> Vec<Member> {
    let mut out = Vec::new();
    for (name, replicas, seed) in [("org1", 2, 1u8), ("org2", org2_nodes, 5u8)] {
        let mut m = member_named(name, replicas);
        m.status = Some(MemberStatus {
            node_public_keys: (0..replicas)
                .map(|i| NodeKey {
                    name: format!("{name}-{i}"),
                    public_key: public_key_hex(&format!("{:02x}", seed + i as u8).repeat(32))
                        .expect("key"),
                })
                .collect(),
            admin_public_key: Some(admin_public_key(name)),
            ..Default::default()
        });
        out.push(m);
    }
    out
}
