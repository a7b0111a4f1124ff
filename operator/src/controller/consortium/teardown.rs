//! The Consortium's teardown: it waits for its Members to be deleted, then
//! removes the genesis copies and what the operator kept about it.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use super::status::{patch_status, waiting_conditions};
use super::PHASE_TERMINATING;
use crate::build::names;
use crate::controller::{delete_if_exists, Context, WAIT_INTERVAL};
use crate::crd::{Consortium, ConsortiumStatus, Member};
use crate::health::HealthClass;
use crate::Result;

/// A deleted Consortium whose Members still exist keeps its finalizer: their
/// pods mount its genesis. Members belong to their organisations, so the
/// operator does not delete them; it says what it waits for and checks again
/// (a Member's final removal is not a watch event the predicates pass on).
pub(super) async fn wait_for_members(
    c: &Consortium,
    members: &[Member],
    ctx: &Context,
) -> Result<Action> {
    let old = c.status.clone().unwrap_or_default();
    let generation = c.metadata.generation;
    let waiting: Vec<String> = members
        .iter()
        .map(|m| format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()))
        .collect();
    let msg = format!(
        "deletion waits for {} Member(s) to be deleted first: {}",
        waiting.len(),
        waiting.join(", ")
    );
    let status = ConsortiumStatus {
        phase: Some(PHASE_TERMINATING.into()),
        conditions: waiting_conditions(
            &old.conditions,
            "WaitingForMembers",
            &msg,
            "WaitingForMembers",
            generation,
        ),
        ..old.clone()
    };
    if status != old {
        ctx.event(c, EventType::Normal, "WaitingForMembers", "Teardown", msg)
            .await;
    }
    patch_status(ctx, c, &old, status).await?;
    Ok(Action::requeue(WAIT_INTERVAL))
}

/// Runs once no Member is left: removes the genesis copies, then the finalizer.
/// (They are also owned by the Consortium, so the garbage collector would.)
pub(super) async fn cleanup_consortium(c: &Consortium, ctx: &Context) -> Result<Action> {
    let name = c.name_any();
    ctx.event(
        c,
        EventType::Normal,
        "TearingDown",
        "Teardown",
        "No Members left; removing genesis copies".into(),
    )
    .await;
    let namespaces = c
        .status
        .as_ref()
        .map(|s| s.genesis_namespaces.clone())
        .unwrap_or_default();
    for ns in namespaces {
        delete_if_exists::<ConfigMap>(&ctx.client, &ns, &names::genesis_config_map(&name)).await?;
    }
    ctx.health.retain(&format!("{name}/"), &[]);
    let classes: Vec<&str> = HealthClass::ALL.iter().map(|c| c.as_str()).collect();
    ctx.metrics.forget_consortium(&name, &classes);
    info!("consortium torn down");
    Ok(Action::await_change())
}
