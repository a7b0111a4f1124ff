//! Consortium controller: creates genesis once, distributes it, aggregates status.
//!
//! dereference (the Members naming this Consortium) → validate (chain
//! parameters, unique node names) → build (genesis, genesis ConfigMaps) → apply
//! (status first for a new genesis, then one ConfigMap per member namespace) →
//! update status (Members' phases + each validator's Status RPC), patched only
//! on change.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::member::PHASE_ACTIVE;
use super::{
    apply, condition, delete_if_exists, healing, params, Context, FINALIZER, POLL_INTERVAL,
    WAIT_INTERVAL, WATCH_TIMEOUT_SECS,
};
use crate::build::{config_map, names};
use crate::crd::{Consortium, ConsortiumStatus, Member, ValidatorStatus};
use crate::genesis::{build_genesis, genesis_hash, Genesis, GenesisText};
use crate::health::HealthClass;
use crate::probe::rfc3339_ms;
use crate::{Error, Result, FIELD_MANAGER};

const CONTROLLER: &str = "consortium";

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_BOOTSTRAPPING: &str = "Bootstrapping";
pub const PHASE_RUNNING: &str = "Running";
pub const PHASE_DEGRADED: &str = "Degraded";
pub const PHASE_TERMINATING: &str = "Terminating";

/// Reconciles one Consortium (entry point of the controller).
#[instrument(skip_all, fields(consortium = %consortium.name_any()))]
pub async fn reconcile(consortium: Arc<Consortium>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure(CONTROLLER);
    let key = format!("consortium/{}", consortium.name_any());
    // Members' pods mount the genesis copies: teardown waits for the Members.
    let holds_finalizer = consortium.finalizers().iter().any(|f| f == FINALIZER);
    if consortium.metadata.deletion_timestamp.is_some() && holds_finalizer {
        let members = members_of(&ctx, &consortium.name_any()).await?;
        if !members.is_empty() {
            let action = wait_for_members(&consortium, &members, &ctx).await;
            if action.is_ok() {
                ctx.backoff.reset(&key);
            }
            return action;
        }
    }
    let api: Api<Consortium> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, consortium, |event| async {
        match event {
            Finalizer::Apply(c) => apply_consortium(&c, &ctx).await,
            Finalizer::Cleanup(c) => cleanup_consortium(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

/// Retries failed reconciles with exponential back-off (5 s … 5 min).
pub fn error_policy(consortium: Arc<Consortium>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(consortium = %consortium.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failure(CONTROLLER, error);
    Action::requeue(
        ctx.backoff
            .next(&format!("consortium/{}", consortium.name_any())),
    )
}

async fn members_of(ctx: &Context, name: &str) -> Result<Vec<Member>> {
    let api: Api<Member> = Api::all(ctx.client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(
            "list",
            "Member",
            format!("(all, for Consortium {name})"),
        ))?
        .items
        .into_iter()
        .filter(|m| m.spec.consortium == name)
        .collect())
}

/// The Consortium's pipeline: dereference → validate → build genesis (once)
/// → apply (genesis copies) → status (health, healing, live parameters).
async fn apply_consortium(c: &Consortium, ctx: &Context) -> Result<Action> {
    let old = c.status.clone().unwrap_or_default();
    let members = members_of(ctx, &c.name_any()).await?;
    if let Err(e) = validate(c) {
        return refuse_spec(
            ctx,
            c,
            &old,
            e.to_string(),
            "Validate",
            Action::await_change(),
        )
        .await;
    }
    let mut base = old.clone();
    let pending_reason = match create_genesis(ctx, c, &old, &members, &mut base).await? {
        GenesisStep::Fixed => None,
        GenesisStep::NotReady(reason) => Some(reason),
        GenesisStep::Refused(msg) => {
            let retry = Action::requeue(POLL_INTERVAL);
            return refuse_spec(ctx, c, &old, msg, "CreateGenesis", retry).await;
        }
    };
    let genesis: Option<Genesis> = base
        .genesis
        .as_deref()
        .map(serde_json::from_str)
        .transpose()?;
    distribute_genesis(ctx, c, &old, &members, &mut base).await?;
    let observations = match &genesis {
        Some(g) => healing::monitor_and_heal(ctx, c, &old, g, &members).await?,
        None => Vec::new(),
    };
    // Live parameters: the chain's configuration, and a proposal where the
    // spec asks for other parameters.
    if genesis.is_some() {
        base.chain_config = params::reconcile_params(ctx, c, &old, &observations).await?;
    }
    let status = aggregate(
        c,
        &old,
        base,
        genesis.as_ref(),
        &observations,
        &members,
        pending_reason,
        ctx.clock.now_ms(),
    );
    announce_phase(ctx, c, &old, &status).await;
    patch_status(ctx, c, &old, status).await?;
    Ok(Action::requeue(if genesis.is_some() {
        POLL_INTERVAL
    } else {
        WAIT_INTERVAL
    }))
}

/// Step 2, validate what the schema cannot (or what an API server without
/// CEL let through).
fn validate(c: &Consortium) -> Result<()> {
    c.spec.chain_params().map(|_| ()).and_then(|()| {
        crate::health::settings(&c.spec.healing)
            .map(|_| ())
            .map_err(|e| Error::InvalidSpec(format!("spec.healing: {e}")))
    })
}

/// Refuses a spec: a Warning Event from `action`, a Degraded status, and
/// `then` as the next reconcile.
async fn refuse_spec(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    msg: String,
    action: &str,
    then: Action,
) -> Result<Action> {
    ctx.event(c, EventType::Warning, "InvalidSpec", action, msg.clone())
        .await;
    let status = invalid_spec_status(old, msg, c.metadata.generation);
    patch_status(ctx, c, old, status).await?;
    Ok(then)
}

/// What [`create_genesis`] did.
enum GenesisStep {
    /// Genesis exists (created now or before).
    Fixed,
    /// Not yet: the founders are not ready, for this reason.
    NotReady(String),
    /// The spec cannot make a genesis, for this reason.
    Refused(String),
}

/// Step 3, build genesis, once: written to the status (`base`) before any
/// copy of it is distributed.
async fn create_genesis(
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
async fn distribute_genesis(
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

/// Events for a phase entered: Running, or Degraded (quorum lost).
async fn announce_phase(
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

/// Folds the validators' answers and the Members' phases into status.
#[allow(clippy::too_many_arguments)]
fn aggregate(
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

async fn patch_status(
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

/// A deleted Consortium whose Members still exist keeps its finalizer: their
/// pods mount its genesis. Members belong to their organisations, so the
/// operator does not delete them; it says what it waits for and checks again
/// (a Member's final removal is not a watch event the predicates pass on).
async fn wait_for_members(c: &Consortium, members: &[Member], ctx: &Context) -> Result<Action> {
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
async fn cleanup_consortium(c: &Consortium, ctx: &Context) -> Result<Action> {
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

fn consortium_predicate(c: &Consortium) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.metadata.generation.hash(&mut h);
    c.metadata.finalizers.hash(&mut h);
    c.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Member changes a Consortium cares about: keys, phase, spec, deletion.
fn member_predicate(m: &Member) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.metadata.generation.hash(&mut h);
    m.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(s) = &m.status {
        s.phase.hash(&mut h);
        for k in &s.node_public_keys {
            k.name.hash(&mut h);
            k.public_key.hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Runs the Consortium controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
    let (reader, writer) = kube::runtime::reflector::store();
    let consortia = watcher(Api::<Consortium>::all(client.clone()), wc.clone())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(consortium_predicate, Default::default());
    let members = watcher(Api::<Member>::all(client.clone()), wc)
        .default_backoff()
        .applied_objects()
        .predicate_filter(member_predicate, Default::default());
    Controller::for_stream(consortia, reader)
        .watches_stream(members, |m: Member| {
            Some(ObjectRef::<Consortium>::new(&m.spec.consortium))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(consortium = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// Status for a spec the operator refuses: Degraded, neither Ready nor
/// Progressing, with the reason in every condition.
fn invalid_spec_status(
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
fn waiting_conditions(
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
