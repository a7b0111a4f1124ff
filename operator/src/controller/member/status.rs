//! Step 5, status: the Member's phase and conditions from its nodes and its
//! part on chain, and the status write.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::apply::OnChain;
use super::nodes::validator_of;
use super::validate::Checked;
use super::{CONTROLLER, PHASE_ACTIVE, PHASE_ADMITTED, PHASE_PENDING};
use crate::build;
use crate::controller::{condition, Context};
use crate::crd::{Consortium, Member, MemberStatus, NodeStatus};
use crate::health::Hold;
use crate::{Error, Result, FIELD_MANAGER};

/// The status of a Member whose Consortium does not exist (yet).
pub(super) fn consortium_not_found_status(member: &Member, old: &MemberStatus) -> MemberStatus {
    let generation = member.metadata.generation;
    let flag = |type_: &str, message: String| {
        condition(
            &old.conditions,
            type_,
            false,
            "ConsortiumNotFound",
            message,
            generation,
        )
    };
    MemberStatus {
        phase: Some(PHASE_PENDING.into()),
        conditions: vec![
            flag(
                "Ready",
                format!("Consortium {} does not exist", member.spec.consortium),
            ),
            flag("Progressing", "waiting for the Consortium".into()),
            flag("Degraded", String::new()),
        ],
        observed_generation: generation,
        ..old.clone()
    }
}

/// Step 5, status: from the nodes observed and the member's part on chain.
pub(super) fn member_status(
    member: &Member,
    old: &MemberStatus,
    consortium: &Consortium,
    checked: &Checked,
    nodes: Vec<NodeStatus>,
    on_chain: OnChain,
) -> Result<MemberStatus> {
    let generation = member.metadata.generation;
    let replicas = member.spec.replicas;
    // The Consortium's health monitor gave up restarting some node: Degraded.
    let capped: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            validator_of(consortium, &n.name).and_then(|v| v.healing.as_deref())
                == Some(Hold::CapReached.as_str())
        })
        .map(|n| n.name.as_str())
        .collect();
    let ready_nodes = i32::try_from(nodes.iter().filter(|n| n.ready).count()).unwrap_or(i32::MAX);
    let admission = on_chain.admission;
    // A joining member whose nodes entered the validator set counts as a
    // founder's does.
    let validating = admission.as_ref().is_some_and(|a| a.validating);
    let all_ready = (checked.admitted || validating) && ready_nodes == replicas;
    let (phase, reason, message) = if checked.genesis.is_none() {
        (
            PHASE_PENDING,
            "WaitingForGenesis",
            "waiting for the consortium genesis".to_string(),
        )
    } else if let Some(a) = admission.as_ref().filter(|a| !a.validating) {
        (
            if a.admitted {
                PHASE_ADMITTED
            } else {
                PHASE_PENDING
            },
            a.reason,
            a.message.clone(),
        )
    } else if !checked.admitted && !validating {
        (
            PHASE_PENDING,
            "NotAdmitted",
            "the member is not in the consortium's validator set".to_string(),
        )
    } else if all_ready {
        (
            PHASE_ACTIVE,
            "NodesReady",
            format!("{ready_nodes}/{replicas} nodes ready"),
        )
    } else {
        (
            PHASE_ADMITTED,
            "NodesStarting",
            format!("{ready_nodes}/{replicas} nodes ready"),
        )
    };
    let unreachable = nodes.iter().filter(|n| n.ready && !n.reachable).count();
    let degraded = if !capped.is_empty() {
        condition(
            &old.conditions,
            "Degraded",
            true,
            "RestartCapReached",
            format!(
                "healing stopped restarting {}: maxRestartsPerHour reached",
                capped.join(", ")
            ),
            generation,
        )
    } else if unreachable > 0 {
        condition(
            &old.conditions,
            "Degraded",
            true,
            "NodeUnreachable",
            format!("{unreachable} ready node(s) did not answer Status"),
            generation,
        )
    } else {
        condition(
            &old.conditions,
            "Degraded",
            false,
            "AsExpected",
            String::new(),
            generation,
        )
    };
    let (node_public_keys, admin_public_key) =
        build::published_keys(&checked.node_names, &checked.keys)?;
    Ok(MemberStatus {
        phase: Some(phase.into()),
        conditions: vec![
            condition(
                &old.conditions,
                "Ready",
                all_ready,
                reason,
                message.clone(),
                generation,
            ),
            condition(
                &old.conditions,
                "Progressing",
                !all_ready,
                reason,
                message,
                generation,
            ),
            degraded,
        ],
        observed_generation: generation,
        node_public_keys,
        admin_public_key: Some(admin_public_key),
        ready_nodes,
        height: nodes.iter().filter_map(|n| n.height).max(),
        view: nodes.iter().filter_map(|n| n.view).max(),
        nodes,
        admission: admission.and_then(|a| a.proposal),
        votes: on_chain.votes,
    })
}

/// Writes the status with SSA, only when it differs from what is stored.
pub(super) async fn patch_status(
    ctx: &Context,
    member: &Member,
    old: &MemberStatus,
    new: MemberStatus,
) -> Result<()> {
    if *old == new {
        return Ok(());
    }
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "apiVersion": "kubeledger.io/v1alpha1",
        "kind": "Member",
        "status": new,
    });
    let name = member.name_any();
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube(
        "apply the status of",
        "Member",
        format!("{ns}/{name}"),
    ))?;
    ctx.metrics.status_write(CONTROLLER);
    Ok(())
}
