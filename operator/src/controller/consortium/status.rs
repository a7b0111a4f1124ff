//! The Consortium's status: aggregated from its validators' answers and its
//! Members' phases, the statuses of a refused spec and of waiting, the Events
//! of a phase entered, and the status write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{CONTROLLER, PHASE_BOOTSTRAPPING, PHASE_DEGRADED, PHASE_PENDING, PHASE_RUNNING};
use crate::controller::member::PHASE_ACTIVE;
use crate::controller::{condition, healing, Context};
use crate::crd::{Consortium, ConsortiumStatus, Member};
use crate::genesis::Genesis;
use crate::health::HealthClass;
use crate::probe::rfc3339_ms;
use crate::{Error, Result, FIELD_MANAGER};

/// Events for a phase entered: Running, or Degraded (quorum lost).
pub(super) async fn announce_phase(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    new: &ConsortiumStatus,
) {
    let entered =
        |phase: &str| new.phase.as_deref() == Some(phase) && old.phase.as_deref() != Some(phase);
    if entered(PHASE_RUNNING) {
        ctx.event(
            c,
            EventType::Normal,
            "Running",
            "Reconcile",
            "All members are active".into(),
        )
        .await;
    }
    if entered(PHASE_DEGRADED) {
        ctx.event(
            c,
            EventType::Warning,
            "QuorumLost",
            "Reconcile",
            "Fewer validators answer than a quorum".into(),
        )
        .await;
    }
}

/// Folds the validators' answers and the Members' phases into status.
#[allow(clippy::too_many_arguments)]
pub(super) fn aggregate(
    c: &Consortium,
    old: &ConsortiumStatus,
    mut status: ConsortiumStatus,
    genesis: Option<&Genesis>,
    observations: &[healing::Observation],
    members: &[Member],
    pending_reason: Option<String>,
    now: u64,
) -> ConsortiumStatus {
    let generation = c.metadata.generation;
    let members_ready = u32::try_from(
        members
            .iter()
            .filter(|m| m.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(PHASE_ACTIVE))
            .count(),
    )
    .unwrap_or(u32::MAX);
    let members_total = u32::try_from(members.len()).unwrap_or(u32::MAX);
    status.members_ready = members_ready;
    status.members_total = members_total;
    status.members_summary = Some(format!("{members_ready}/{members_total}"));
    status.observed_generation = generation;

    let Some(genesis) = genesis else {
        let msg = pending_reason.unwrap_or_else(|| "waiting for the founding members".into());
        status.phase = Some(PHASE_PENDING.into());
        status.conditions = waiting_conditions(
            &old.conditions,
            "WaitingForFounders",
            &msg,
            "AsExpected",
            generation,
        );
        return status;
    };

    let reachable = observations.iter().filter(|o| o.report.is_some()).count();
    let best = observations.iter().filter_map(|o| o.report.as_ref()).fold(
        None::<&crate::probe::NodeReport>,
        |best, r| match best {
            Some(b) if b.height >= r.height => Some(b),
            _ => Some(r),
        },
    );
    status.validators = observations.iter().map(|o| o.status.clone()).collect();
    let healthy = status
        .validators
        .iter()
        .filter(|v| v.health.as_deref() == Some(HealthClass::Healthy.as_str()))
        .count();
    status.validators_healthy = u32::try_from(healthy).unwrap_or(u32::MAX);
    status.nodes_summary = Some(format!("{healthy}/{}", genesis.validators.len()));
    if let Some(b) = best {
        status.height = Some(b.height);
        status.view = Some(b.view);
        status.primary = Some(
            genesis
                .validators
                .iter()
                .find(|v| v.public_key == b.primary)
                .map(|v| v.name.clone())
                .unwrap_or_else(|| b.primary.chars().take(16).collect()),
        );
        status.last_block_time = rfc3339_ms(b.last_block_time_ms);
        match (old.txs_committed, old.polled_at_ms) {
            (Some(prev), Some(at)) if b.txs_committed > prev && now > at => {
                let tps = (b.txs_committed - prev) as f64 * 1000.0 / (now - at) as f64;
                status.recent_tps = Some((tps * 10.0).round() / 10.0);
                status.txs_committed = Some(b.txs_committed);
                status.polled_at_ms = Some(now);
            }
            (Some(prev), Some(_)) if b.txs_committed == prev => status.recent_tps = Some(0.0),
            _ => {
                status.txs_committed = Some(b.txs_committed);
                status.polled_at_ms = Some(now);
            }
        }
    }

    let n = genesis.validators.len();
    let quorum = crate::health::plan::quorum(n);
    let was_running = matches!(
        old.phase.as_deref(),
        Some(PHASE_RUNNING) | Some(PHASE_DEGRADED)
    );
    // Members joining after genesis have no validators yet: the founders decide.
    let founders_active = c.spec.founders.iter().all(|f| {
        members.iter().any(|m| {
            m.metadata.name.as_deref() == Some(f.name.as_str())
                && m.metadata.namespace.as_deref() == Some(f.namespace.as_str())
                && m.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(PHASE_ACTIVE)
        })
    });
    let (phase, reason, msg) = if reachable >= quorum && founders_active {
        (
            PHASE_RUNNING,
            "QuorumReachable",
            format!("{reachable}/{n} validators answer"),
        )
    } else if was_running && reachable < quorum {
        (
            PHASE_DEGRADED,
            "QuorumLost",
            format!("only {reachable}/{n} validators answer; {quorum} needed"),
        )
    } else {
        (
            PHASE_BOOTSTRAPPING,
            "NodesStarting",
            format!(
                "{reachable}/{n} validators answer, {members_ready}/{members_total} members active"
            ),
        )
    };
    status.phase = Some(phase.into());
    status.conditions = vec![
        condition(
            &old.conditions,
            "Ready",
            phase == PHASE_RUNNING,
            reason,
            msg.clone(),
            generation,
        ),
        condition(
            &old.conditions,
            "Progressing",
            phase == PHASE_BOOTSTRAPPING,
            reason,
            msg.clone(),
            generation,
        ),
        condition(
            &old.conditions,
            "Degraded",
            phase == PHASE_DEGRADED,
            reason,
            msg,
            generation,
        ),
    ];
    status
}

/// Writes the status with SSA, only when it differs from what is stored.
pub(super) async fn patch_status(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    new: ConsortiumStatus,
) -> Result<()> {
    if *old == new {
        return Ok(());
    }
    let api: Api<Consortium> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "kubeledger.io/v1alpha1",
        "kind": "Consortium",
        "status": new,
    });
    let name = c.name_any();
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube("apply the status of", "Consortium", name))?;
    ctx.metrics.status_write(CONTROLLER);
    Ok(())
}

/// Status for a spec the operator refuses: Degraded, neither Ready nor
/// Progressing, with the reason in every condition.
pub(super) fn invalid_spec_status(
    old: &ConsortiumStatus,
    msg: String,
    generation: Option<i64>,
) -> ConsortiumStatus {
    let flag = |type_: &str, status: bool, msg: String| {
        condition(
            &old.conditions,
            type_,
            status,
            "InvalidSpec",
            msg,
            generation,
        )
    };
    ConsortiumStatus {
        phase: Some(PHASE_DEGRADED.into()),
        conditions: vec![
            flag("Ready", false, msg.clone()),
            flag("Progressing", false, msg.clone()),
            flag("Degraded", true, msg),
        ],
        observed_generation: generation,
        ..old.clone()
    }
}

/// Conditions of a Consortium that waits for something (not ready,
/// progressing, not degraded), all for the same reason and message.
pub(super) fn waiting_conditions(
    previous: &[Condition],
    reason: &str,
    msg: &str,
    degraded_reason: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    vec![
        condition(previous, "Ready", false, reason, msg, generation),
        condition(previous, "Progressing", true, reason, msg, generation),
        condition(previous, "Degraded", false, degraded_reason, "", generation),
    ]
}
