//! Member controller: runs a member's nodes.
//!
//! dereference (Consortium, existing key Secret) → validate → build (pure
//! builders) → apply (SSA, one field manager; then the Member's part on
//! chain, [`super::on_chain`]) → update status (pods + node Status RPC),
//! patched only on change.
//!
//! This module holds the driver and the controller's wiring; each step lives
//! in its own module: `dereference`, `validate`, `apply` (objects, then the
//! part on chain), `nodes` (what the nodes report) and `status`; `teardown`
//! runs when the Member is deleted.

mod apply;
mod dereference;
mod nodes;
mod status;
mod teardown;
mod validate;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{field, info, instrument, warn, Span};

use super::{Context, FINALIZER, POLL_INTERVAL, WAIT_INTERVAL, WATCH_TIMEOUT_SECS};
use crate::build::{MemberInputs, MemberObjects};
use crate::crd::{Consortium, Member};
use crate::{Error, Result};
use apply::{apply_objects, on_chain_part};
use dereference::dereference;
use nodes::observe_nodes;
use status::{consortium_not_found_status, member_status, patch_status};
use teardown::{cleanup_member, prepare_teardown, Teardown};
use validate::validate;

const CONTROLLER: &str = "member";

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_ADMITTED: &str = "Admitted";
/// How often a deleted Member's removal on chain is looked at again.
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
pub const PHASE_ACTIVE: &str = "Active";

/// Reconciles one Member (entry point of the controller).
#[instrument(skip_all, fields(member = %member.name_any(), namespace = field::Empty, trace_id = field::Empty))]
pub async fn reconcile(member: Arc<Member>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure(CONTROLLER);
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Span::current().record("namespace", field::display(&ns));
    let key = format!("member/{ns}/{}", member.name_any());
    // The finalizer's cleanup runs exactly when the Member is deleted and
    // holds the finalizer; whether it may run yet is decided first.
    let deleting = member.metadata.deletion_timestamp.is_some()
        && member.finalizers().iter().any(|f| f == FINALIZER);
    let teardown = if deleting {
        match prepare_teardown(&member, &ctx).await? {
            Teardown::Proceed(consortium) => Some(consortium),
            Teardown::Waits(why) => {
                info!(%why, "teardown waits");
                ctx.backoff.reset(&key);
                return Ok(Action::requeue(REMOVAL_WAIT));
            }
        }
    } else {
        None
    };
    let consortium = teardown.flatten().map(|c| *c);
    let api: Api<Member> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, member, |event| async {
        match event {
            Finalizer::Apply(m) => apply_member(&m, &ctx).await,
            Finalizer::Cleanup(m) => cleanup_member(&m, &ctx, consortium).await,
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
pub fn error_policy(member: Arc<Member>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(member = %member.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failure(CONTROLLER, error);
    let key = format!(
        "member/{}/{}",
        member.namespace().unwrap_or_default(),
        member.name_any()
    );
    Action::requeue(ctx.backoff.next(&key))
}

/// The Member's pipeline: dereference → validate → build → apply (objects,
/// then its part on chain) → status.
async fn apply_member(member: &Member, ctx: &Context) -> Result<Action> {
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let old_status = member.status.clone().unwrap_or_default();
    let Some(found) = dereference(ctx, member, &ns).await? else {
        let status = consortium_not_found_status(member, &old_status);
        patch_status(ctx, member, &old_status, status).await?;
        return Ok(Action::requeue(WAIT_INTERVAL));
    };
    let inputs = MemberInputs {
        member,
        consortium: &found.consortium,
        settings: &ctx.settings,
    };
    let checked = validate(ctx, member, &inputs, &found).await?;
    let objects = MemberObjects::build(&inputs, &checked.keys)?;
    let nodes_run = apply_objects(ctx, member, &ns, objects, &checked).await?;
    let on_chain = on_chain_part(ctx, member, &found.consortium, &old_status, &checked).await?;
    let nodes = if nodes_run {
        observe_nodes(ctx, member, &ns, &checked.node_names, &found.consortium).await?
    } else {
        Vec::new()
    };
    let status = member_status(
        member,
        &old_status,
        &found.consortium,
        &checked,
        nodes,
        on_chain,
    )?;
    let all_ready = status.phase.as_deref() == Some(PHASE_ACTIVE);
    if all_ready && old_status.phase.as_deref() != Some(PHASE_ACTIVE) {
        ctx.event(
            member,
            EventType::Normal,
            "Active",
            "Reconcile",
            "All nodes are ready".into(),
        )
        .await;
    }
    patch_status(ctx, member, &old_status, status).await?;
    Ok(Action::requeue(if all_ready {
        POLL_INTERVAL
    } else {
        WAIT_INTERVAL
    }))
}

/// Changes that should trigger a Member reconcile: spec, finalizers, deletion.
fn member_predicate(m: &Member) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.metadata.generation.hash(&mut h);
    m.metadata.finalizers.hash(&mut h);
    m.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Consortium changes Members care about: spec, genesis, and what healing did
/// (health classes, restarts, holds), not heights or views.
fn consortium_predicate(c: &Consortium) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.metadata.generation.hash(&mut h);
    if let Some(s) = &c.status {
        s.genesis_hash.hash(&mut h);
        for v in &s.validators {
            (&v.name, &v.health, &v.healing, &v.last_restart_time).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Runs the Member controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let members: Api<Member> = Api::all(client.clone());
    let wc = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
    let (reader, writer) = reflector::store();
    let member_stream = watcher(members, wc.clone())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(member_predicate, Default::default());
    let consortium_stream = watcher(Api::<Consortium>::all(client.clone()), wc.clone())
        .default_backoff()
        .applied_objects()
        .predicate_filter(consortium_predicate, Default::default());
    let store = reader.clone();
    Controller::for_stream(member_stream, reader)
        .owns(Api::<StatefulSet>::all(client.clone()), wc.clone())
        .watches_stream(consortium_stream, move |c: Consortium| {
            let cname = c.name_any();
            store
                .state()
                .into_iter()
                .filter(|m| m.spec.consortium == cname)
                .map(|m| ObjectRef::from_obj(&*m))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(member = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}
