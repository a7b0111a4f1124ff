//! Node and member-admin keys: ed25519 seeds, generated once by the operator and
//! kept in the Member's Secret. Existing keys are never regenerated; the secret
//! material is never logged (the [`KeyMaterial`] `Debug` impl redacts it).

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::Secret;
use rand::{CryptoRng, RngCore};

use crate::{Error, Result};

/// Secret data key of the member admin key.
pub const ADMIN_KEY: &str = "admin.key";

/// Secret data key holding the key of node `name`.
pub fn node_key_entry(node: &str) -> String {
    format!("{node}.key")
}

/// The seeds (64 lowercase hex chars each) of a member's nodes and admin key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// Node name -> hex seed.
    pub nodes: BTreeMap<String, String>,
    pub admin: String,
    /// Whether any key was generated in this call (the Secret must be written).
    pub generated: bool,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("admin", &"<redacted>")
            .field("generated", &self.generated)
            .finish()
    }
}

impl KeyMaterial {
    /// Public key (hex) of node `name`.
    pub fn node_public_key(&self, name: &str) -> Option<String> {
        self.nodes.get(name).and_then(|s| public_key_hex(s).ok())
    }

    /// Public key (hex) of the admin key.
    pub fn admin_public_key(&self) -> Result<String> {
        public_key_hex(&self.admin).map_err(|reason| Error::InvalidKey {
            secret: ADMIN_KEY.into(),
            reason,
        })
    }

    /// Secret `stringData`-style entries: file name -> file content.
    pub fn to_files(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .nodes
            .iter()
            .map(|(n, s)| (node_key_entry(n), format!("{s}\n")))
            .collect();
        out.insert(ADMIN_KEY.into(), format!("{}\n", self.admin));
        out
    }
}

/// Hex seed of a fresh key.
pub fn generate_seed<R: RngCore + CryptoRng>(rng: &mut R) -> String {
    let key = SigningKey::generate(rng);
    hex::encode(key.to_bytes())
}

/// Public key (hex of the 32-byte verifying key) of a hex seed.
pub fn public_key_hex(seed_hex: &str) -> std::result::Result<String, String> {
    let key = crate::chain::signing_key(seed_hex)?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

/// Reads the keys already in `existing` (if any) and generates the missing ones
/// for `node_names` and the admin key. Keys of nodes no longer listed are kept
/// (a scale-down followed by a scale-up reuses the node's identity).
pub fn ensure_keys<R: RngCore + CryptoRng>(
    existing: Option<&Secret>,
    node_names: &[String],
    rng: &mut R,
) -> Result<KeyMaterial> {
    let secret_name = existing
        .and_then(|s| s.metadata.name.clone())
        .unwrap_or_default();
    let mut nodes = BTreeMap::new();
    let mut admin = None;
    if let Some(data) = existing.and_then(|s| s.data.as_ref()) {
        for (entry, value) in data {
            let text = std::str::from_utf8(&value.0)
                .map_err(|_| Error::InvalidKey {
                    secret: secret_name.clone(),
                    reason: format!("{entry} is not UTF-8"),
                })?
                .trim()
                .to_string();
            public_key_hex(&text).map_err(|reason| Error::InvalidKey {
                secret: secret_name.clone(),
                reason: format!("{entry}: {reason}"),
            })?;
            if entry == ADMIN_KEY {
                admin = Some(text);
            } else if let Some(node) = entry.strip_suffix(".key") {
                nodes.insert(node.to_string(), text);
            }
        }
    }
    let mut generated = false;
    for name in node_names {
        if !nodes.contains_key(name) {
            nodes.insert(name.clone(), generate_seed(rng));
            generated = true;
        }
    }
    let admin = match admin {
        Some(a) => a,
        None => {
            generated = true;
            generate_seed(rng)
        }
    };
    Ok(KeyMaterial {
        nodes,
        admin,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn generates_missing_and_keeps_existing() {
        let mut rng = rand::rngs::OsRng;
        let names = vec!["org1-0".to_string()];
        let first = ensure_keys(None, &names, &mut rng).expect("keys");
        assert!(first.generated);
        assert_eq!(first.nodes["org1-0"].len(), 64);

        let secret = Secret {
            metadata: kube::core::ObjectMeta {
                name: Some("org1-keys".into()),
                ..Default::default()
            },
            data: Some(
                first
                    .to_files()
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let names2 = vec!["org1-0".to_string(), "org1-1".to_string()];
        let second = ensure_keys(Some(&secret), &names2, &mut rng).expect("keys");
        assert!(second.generated);
        assert_eq!(second.nodes["org1-0"], first.nodes["org1-0"]);
        assert_eq!(second.admin, first.admin);
        let third = ensure_keys(Some(&secret), &names, &mut rng).expect("keys");
        assert!(!third.generated);
        assert!(!format!("{third:?}").contains(&first.admin));
    }

    #[test]
    fn rejects_corrupt_keys() {
        let secret = Secret {
            data: Some([("org1-0.key".to_string(), ByteString(b"zz".to_vec()))].into()),
            ..Default::default()
        };
        assert!(ensure_keys(Some(&secret), &[], &mut rand::rngs::OsRng).is_err());
    }
}
