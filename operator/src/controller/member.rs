//! Member controller: runs a member's nodes.
//!
//! dereference (Consortium, existing key Secret) → validate → build (pure
//! builders) → apply (SSA, one field manager; then the Member's part on
//! chain, [`super::on_chain`]) → update status (pods + node Status RPC),
//! patched only on change.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{field, info, instrument, warn, Span};

use super::on_chain::{self, Admission};
use super::{
    apply, condition, delete_if_exists, Context, FINALIZER, POLL_INTERVAL, WAIT_INTERVAL,
    WATCH_TIMEOUT_SECS,
};
use crate::build::{self, names, MemberInputs, MemberObjects};
use crate::crd::{Consortium, Member, MemberStatus, NodeStatus, ValidatorStatus, VoteStatus};
use crate::genesis::Genesis;
use crate::health::Hold;
use crate::keys::{ensure_keys, KeyMaterial};
use crate::{Error, Result, FIELD_MANAGER};

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

/// What a Member points at: its Consortium and the key Secret kept for it.
struct Found {
    consortium: Consortium,
    existing_secret: Option<Secret>,
}

/// Step 1, dereference: the Member's Consortium (None if it does not exist)
/// and its existing key Secret.
async fn dereference(ctx: &Context, member: &Member, ns: &str) -> Result<Option<Found>> {
    let consortia: Api<Consortium> = Api::all(ctx.client.clone());
    let name = &member.spec.consortium;
    let found = consortia.get_opt(name).await;
    let Some(consortium) = found.map_err(Error::kube("read", "Consortium", name))? else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = names::secret(&member.name_any());
    let existing_secret = secrets.get_opt(&secret).await.map_err(Error::kube(
        "read",
        "Secret",
        format!("{ns}/{secret}"),
    ))?;
    Ok(Some(Found {
        consortium,
        existing_secret,
    }))
}

/// The status of a Member whose Consortium does not exist (yet).
fn consortium_not_found_status(member: &Member, old: &MemberStatus) -> MemberStatus {
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

/// What validation established about a Member in its Consortium.
struct Checked {
    node_names: Vec<String>,
    /// The member's keys: those already issued, and new ones for new nodes.
    keys: KeyMaterial,
    /// The consortium's genesis, once it exists.
    genesis: Option<Genesis>,
    /// Its nodes are validators in genesis.
    admitted: bool,
    /// It is one of the Consortium's founders.
    founder: bool,
}

/// Step 2, validate: keys already issued must parse and belong to this
/// consortium (they are never regenerated); the genesis must parse.
async fn validate(
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

/// Step 4, apply the built objects; says whether the nodes run.
///
/// Nodes run once genesis exists: a founder's as validators; those of a
/// member joining a running consortium as observers, which follow the chain
/// without voting (a node outside the validator set does so).
async fn apply_objects(
    ctx: &Context,
    member: &Member,
    ns: &str,
    objects: MemberObjects,
    checked: &Checked,
) -> Result<bool> {
    let client = &ctx.client;
    apply(client, ns, &objects.service_account).await?;
    apply(client, ns, &objects.secret).await?;
    if checked.keys.generated {
        let nodes = checked.node_names.len();
        info!(nodes, "generated node keys");
        ctx.event(
            member,
            EventType::Normal,
            "KeysGenerated",
            "GenerateKeys",
            format!("Generated keys for {nodes} node(s) and the member admin"),
        )
        .await;
    }
    apply(client, ns, &objects.node_config).await?;
    apply(client, ns, &objects.headless_service).await?;
    apply(client, ns, &objects.client_service).await?;
    apply(client, ns, &objects.pdb).await?;
    if checked.genesis.is_none() {
        return Ok(false);
    }
    apply(client, ns, &objects.statefulset).await?;
    Ok(true)
}

/// The Member's part on chain, as this reconcile left it.
struct OnChain {
    votes: Vec<VoteStatus>,
    /// For a member joining a running consortium: where its admission stands.
    admission: Option<Admission>,
}

/// Step 4b, apply on chain: this member's votes, and the admission of a
/// member joining a running consortium.
async fn on_chain_part(
    ctx: &Context,
    member: &Member,
    consortium: &Consortium,
    old: &MemberStatus,
    checked: &Checked,
) -> Result<OnChain> {
    let votes_wanted = !member.spec.approvals.is_empty() || !member.spec.rejections.is_empty();
    let running = checked.genesis.is_some();
    let joining = running && !checked.founder && !checked.admitted;
    let view = if running && (votes_wanted || joining) {
        on_chain::read_chain(ctx, consortium).await
    } else {
        None
    };
    let votes = match (&view, votes_wanted) {
        (_, false) => Vec::new(),
        (Some(view), true) => {
            on_chain::cast_votes(ctx, member, consortium, old, view, &checked.keys).await?
        }
        (None, true) => old.votes.clone(),
    };
    let admission = match (&view, joining) {
        (_, false) => None,
        (Some(view), true) => Some(
            on_chain::admit(
                ctx,
                member,
                consortium,
                old,
                view,
                &checked.keys,
                &checked.node_names,
            )
            .await?,
        ),
        (None, true) => Some(Admission {
            proposal: old.admission.clone(),
            admitted: false,
            validating: false,
            reason: "WaitingForChain",
            message: "no validator of the consortium answers; admission waits for the chain".into(),
        }),
    };
    Ok(OnChain { votes, admission })
}

/// Step 5, status: from the nodes observed and the member's part on chain.
fn member_status(
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

/// The Consortium's status entry of validator `node`.
fn validator_of<'a>(consortium: &'a Consortium, node: &str) -> Option<&'a ValidatorStatus> {
    consortium
        .status
        .as_ref()
        .and_then(|s| s.validators.iter().find(|v| v.name == node))
}

/// Pod readiness and restarts from the API, chain state from each node, health
/// and healing restarts from the Consortium's monitor.
async fn observe_nodes(
    ctx: &Context,
    member: &Member,
    ns: &str,
    node_names: &[String],
    consortium: &Consortium,
) -> Result<Vec<NodeStatus>> {
    let name = member.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector =
        format!("app.kubernetes.io/name=kubeledger-node,app.kubernetes.io/instance={name}");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", format!("{ns}/{selector}")))?;
    let mut out = Vec::new();
    for node in node_names {
        let pod = pods
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(node.as_str()));
        let pod_status = pod.and_then(|p| p.status.as_ref());
        let ready = pod_status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let restarts = pod_status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        let report = if pod.is_some() {
            let host = names::node_host(node, &name, ns, &ctx.settings.cluster_domain);
            ctx.prober.status(&host).await
        } else {
            None
        };
        out.push(NodeStatus {
            name: node.clone(),
            ready,
            reachable: report.is_some(),
            height: report.as_ref().map(|r| r.height),
            view: report.as_ref().map(|r| r.view),
            last_block_time: report
                .as_ref()
                .and_then(|r| crate::probe::rfc3339_ms(r.last_block_time_ms)),
            restarts,
            health: validator_of(consortium, node).and_then(|v| v.health.clone()),
            healing_restarts: validator_of(consortium, node)
                .map(|v| u32::try_from(v.recent_restarts.len()).unwrap_or(u32::MAX))
                .unwrap_or_default(),
            last_restart_time: validator_of(consortium, node)
                .and_then(|v| v.last_restart_time.clone()),
            last_restart_reason: validator_of(consortium, node)
                .and_then(|v| v.last_restart_reason.clone()),
        });
    }
    Ok(out)
}

/// Writes the status with SSA, only when it differs from what is stored.
async fn patch_status(
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

/// Where a deleted Member's teardown stands before anything is deleted.
enum Teardown {
    /// Tear down now, with the Member's Consortium if it was read (its node
    /// defaults say whether volumes go).
    Proceed(Option<Box<Consortium>>),
    /// Not yet, for this reason: the Member's removal from the chain's
    /// configuration is pending, or its nodes still validate.
    Waits(String),
}

/// Teardown step 1: reads the Consortium where needed and, for a Member that
/// joined after genesis (it has an admission proposal), proposes its removal
/// from the chain's configuration first. Its nodes keep running until they
/// left the validator set (demoted to observers at the switch), so the old
/// set keeps its members until its epoch ends.
async fn prepare_teardown(member: &Member, ctx: &Context) -> Result<Teardown> {
    let joined = member
        .status
        .as_ref()
        .is_some_and(|s| s.admission.is_some());
    let consortium = if member.spec.storage.is_none() || joined {
        Api::<Consortium>::all(ctx.client.clone())
            .get_opt(&member.spec.consortium)
            .await
            .map_err(Error::kube("read", "Consortium", &member.spec.consortium))?
    } else {
        None
    };
    if let (true, Some(c)) = (joined, &consortium) {
        if let on_chain::Removal::Pending(why) = on_chain::propose_removal(ctx, member, c).await? {
            return Ok(Teardown::Waits(why));
        }
    }
    Ok(Teardown::Proceed(consortium.map(Box::new)))
}

/// Tears down in order: nodes first, then what they used. The node keys follow
/// the data: with `storage.deleteOnTeardown` the volumes go and then the key
/// Secret; otherwise both stay for a Member re-created under the same name.
/// The genesis ConfigMap belongs to the Consortium.
async fn cleanup_member(
    member: &Member,
    ctx: &Context,
    consortium: Option<Consortium>,
) -> Result<Action> {
    let name = member.name_any();
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let client = &ctx.client;
    // The Member's storage, or else the Consortium's node defaults (if it still exists).
    let delete_volumes = match &member.spec.storage {
        Some(storage) => storage.delete_on_teardown,
        None => consortium
            .as_ref()
            .is_some_and(|c| c.spec.node_defaults.storage.delete_on_teardown),
    };
    ctx.event(
        member,
        EventType::Normal,
        "TearingDown",
        "Teardown",
        if delete_volumes {
            "Deleting the member's nodes, their volumes and their keys".into()
        } else {
            format!(
                "Deleting the member's nodes; volumes and Secret {} are kept for a Member re-created as {name}",
                names::secret(&name)
            )
        },
    )
    .await;
    delete_if_exists::<StatefulSet>(client, &ns, &names::statefulset(&name)).await?;
    delete_if_exists::<PodDisruptionBudget>(client, &ns, &names::pdb(&name)).await?;
    delete_if_exists::<Service>(client, &ns, &names::client_service(&name)).await?;
    delete_if_exists::<Service>(client, &ns, &names::headless_service(&name)).await?;
    delete_if_exists::<ConfigMap>(client, &ns, &names::config_map(&name)).await?;
    delete_if_exists::<ServiceAccount>(client, &ns, &names::service_account(&name)).await?;
    if delete_volumes {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let selector =
            format!("app.kubernetes.io/name=kubeledger-node,app.kubernetes.io/instance={name}");
        pvcs.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await
        .map_err(Error::kube(
            "delete",
            "PersistentVolumeClaim",
            format!("{ns}/{selector}"),
        ))?;
        // Keys last: if the volume deletion failed, the retry still finds them.
        delete_if_exists::<Secret>(client, &ns, &names::secret(&name)).await?;
    }
    info!(delete_volumes, "member torn down");
    Ok(Action::await_change())
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
