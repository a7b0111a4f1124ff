//! The genesis steps: building the consortium's genesis once, from its
//! founders, and distributing a copy of it to every member namespace.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use super::status::patch_status;
use super::PHASE_BOOTSTRAPPING;
use crate::build::{config_map, names};
use crate::controller::{apply, delete_if_exists, Context};
use crate::crd::{Consortium, ConsortiumStatus, Member, ValidatorStatus};
use crate::genesis::{build_genesis, genesis_hash, Genesis, GenesisText};
use crate::{Error, Result};

/// What [`create_genesis`] did.
pub(super) enum GenesisStep {
    /// Genesis exists (created now or before).
    Fixed,
    /// Not yet: the founders are not ready, for this reason.
    NotReady(String),
    /// The spec cannot make a genesis, for this reason.
    Refused(String),
}

/// Step 3, build genesis, once: written to the status (`base`) before any
/// copy of it is distributed.
pub(super) async fn create_genesis(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    members: &[Member],
    base: &mut ConsortiumStatus,
) -> Result<GenesisStep> {
    if base.genesis.is_none() {
        match build_genesis(c, members, ctx.clock.now_ms(), &ctx.settings.cluster_domain) {
            Ok(Ok(g)) => {
                let text = g.to_json();
                base.genesis_hash = Some(genesis_hash(&text));
                base.genesis = Some(text);
                base.config = Some(g.effective_config());
                base.validators = validators_of(&g);
                base.phase = Some(PHASE_BOOTSTRAPPING.into());
                // Persist genesis before anyone sees it, so it can never differ.
                patch_status(ctx, c, old, base.clone()).await?;
                info!(validators = g.validators.len(), "genesis created");
                ctx.event(
                    c,
                    EventType::Normal,
                    "GenesisCreated",
                    "CreateGenesis",
                    format!("Genesis with {} validators created", g.validators.len()),
                )
                .await;
            }
            Ok(Err(not_ready)) => return Ok(GenesisStep::NotReady(not_ready.to_string())),
            Err(Error::InvalidSpec(msg)) => return Ok(GenesisStep::Refused(msg)),
            Err(e) => return Err(e),
        }
    }
    Ok(GenesisStep::Fixed)
}

/// Step 4, apply: the same genesis text in every member namespace; copies
/// in namespaces without Members any more are removed.
pub(super) async fn distribute_genesis(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    members: &[Member],
    base: &mut ConsortiumStatus,
) -> Result<()> {
    let Some(text) = &base.genesis else {
        return Ok(());
    };
    let namespaces: BTreeSet<String> = members.iter().filter_map(|m| m.namespace()).collect();
    for ns in &namespaces {
        apply(&ctx.client, ns, &config_map::build_genesis(c, ns, text)?).await?;
    }
    let copy = names::genesis_config_map(&c.name_any());
    for ns in old
        .genesis_namespaces
        .iter()
        .filter(|ns| !namespaces.contains(*ns))
    {
        delete_if_exists::<ConfigMap>(&ctx.client, ns, &copy).await?;
    }
    base.genesis_namespaces = namespaces.into_iter().collect();
    Ok(())
}

/// The status entries of `g`'s validators, before any poll.
pub(crate) fn validators_of(g: &Genesis) -> Vec<ValidatorStatus> {
    g.validators
        .iter()
        .map(|v| ValidatorStatus {
            name: v.name.clone(),
            member: v.member.clone(),
            public_key: v.public_key.clone(),
            peer_address: v.peer_address.clone(),
            ..Default::default()
        })
        .collect()
}
