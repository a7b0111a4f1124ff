//! Step 2, validate: what a Member's keys and its Consortium's genesis
//! establish about it.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;

use super::dereference::Found;
use crate::build::MemberInputs;
use crate::controller::Context;
use crate::crd::Member;
use crate::genesis::Genesis;
use crate::keys::{ensure_keys, KeyMaterial};
use crate::{Error, Result};

/// What validation established about a Member in its Consortium.
pub(super) struct Checked {
    pub(super) node_names: Vec<String>,
    /// The member's keys: those already issued, and new ones for new nodes.
    pub(super) keys: KeyMaterial,
    /// The consortium's genesis, once it exists.
    pub(super) genesis: Option<Genesis>,
    /// Its nodes are validators in genesis.
    pub(super) admitted: bool,
    /// It is one of the Consortium's founders.
    pub(super) founder: bool,
}

/// Step 2, validate: keys already issued must parse and belong to this
/// consortium (they are never regenerated); the genesis must parse.
pub(super) async fn validate(
    ctx: &Context,
    member: &Member,
    inputs: &MemberInputs<'_>,
    found: &Found,
) -> Result<Checked> {
    let name = inputs.name()?;
    let ns = inputs.namespace()?;
    let node_names = inputs.node_names()?;
    let existing = found.existing_secret.as_ref();
    if let Err(e) = retained_keys_match(existing, &member.spec.consortium) {
        ctx.event(
            member,
            EventType::Warning,
            "RetainedKeysMismatch",
            "Validate",
            e.to_string(),
        )
        .await;
        return Err(e);
    }
    let keys = ensure_keys(existing, &node_names, &mut rand::rngs::OsRng)?;
    let consortium = &found.consortium;
    let genesis: Option<Genesis> = consortium
        .status
        .as_ref()
        .and_then(|s| s.genesis.as_deref())
        .map(serde_json::from_str)
        .transpose()?;
    let admitted = genesis.as_ref().is_some_and(|g| {
        g.validators
            .iter()
            .any(|v| v.member == name && node_names.contains(&v.name))
    });
    let founder = consortium
        .spec
        .founders
        .iter()
        .any(|f| f.name == name && f.namespace == ns);
    Ok(Checked {
        node_names,
        keys,
        genesis,
        admitted,
        founder,
    })
}

/// A key Secret kept from an earlier Member of the same name must belong to the
/// same consortium: its keys sign the retained volumes' chain, not another one.
fn retained_keys_match(existing: Option<&Secret>, consortium: &str) -> Result<()> {
    let Some(previous) = existing
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get("kubeledger.io/consortium"))
    else {
        return Ok(());
    };
    if previous == consortium {
        return Ok(());
    }
    Err(Error::InvalidSpec(format!(
        "Secret {} holds node keys kept for consortium {previous}, not {consortium}; \
         delete that Secret and the member's volumes to start this member afresh",
        existing
            .and_then(|s| s.metadata.name.as_deref())
            .unwrap_or_default()
    )))
}
