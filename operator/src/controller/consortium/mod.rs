//! Consortium controller: creates genesis once, distributes it, aggregates status.
//!
//! dereference (the Members naming this Consortium) → validate (chain
//! parameters, unique node names) → build (genesis, genesis ConfigMaps) → apply
//! (status first for a new genesis, then one ConfigMap per member namespace) →
//! update status (Members' phases + each validator's Status RPC), patched only
//! on change.
//!
//! This module holds the driver and the controller's wiring; its steps live in
//! `genesis` (building genesis, distributing its copies), `status` (the
//! aggregate status and its write) and `teardown` (waiting for the Members,
//! removing the copies).

pub(crate) mod genesis;
mod status;
mod teardown;

use std::sync::Arc;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{instrument, warn};

use super::{
    healing, params, Context, FINALIZER, POLL_INTERVAL, WAIT_INTERVAL, WATCH_TIMEOUT_SECS,
};
use crate::crd::{Consortium, ConsortiumStatus, Member};
use crate::genesis::Genesis;
use crate::{Error, Result};
use genesis::{create_genesis, distribute_genesis, GenesisStep};
use status::{aggregate, announce_phase, invalid_spec_status, patch_status};
use teardown::{cleanup_consortium, wait_for_members};

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

/// The Members naming Consortium `name`, in every namespace.
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

/// Changes that should trigger a Consortium reconcile: spec, finalizers, deletion.
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
