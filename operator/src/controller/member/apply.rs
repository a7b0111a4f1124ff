//! Step 4, apply: the Member's Kubernetes objects, then its part on chain.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::events::EventType;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, ResourceExt};
use tracing::info;

use super::validate::Checked;
use crate::build::MemberObjects;
use crate::controller::on_chain::{self, Admission};
use crate::controller::{apply, Context};
use crate::crd::{Consortium, Member, MemberStatus, VoteStatus};
use crate::{Error, Result};

/// Step 4, apply the built objects; says whether the nodes run.
///
/// Nodes run once genesis exists: a founder's as validators; those of a
/// member joining a running consortium as observers, which follow the chain
/// without voting (a node outside the validator set does so).
pub(super) async fn apply_objects(
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
    match apply(client, ns, &objects.statefulset).await {
        Ok(_) => {}
        // The API server refuses to change fields of a StatefulSet other
        // than its template and a few more (422): the claims, when backups
        // are turned on or off.
        Err(e) if e.is_invalid() => {
            // Boxed: a rare path, kept off the reconcile future's size.
            let replaced = Box::pin(replace_if_claims_changed(
                ctx,
                member,
                ns,
                &objects.statefulset,
            ))
            .await?;
            if !replaced {
                return Err(e);
            }
            apply(client, ns, &objects.statefulset).await?;
        }
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// How long a replaced StatefulSet may take to go (its pods are orphaned
/// first) before the reconcile gives up and tries again.
const REPLACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A StatefulSet's volume claim templates can't be changed in place (the
/// API server refuses it). When they must change, backups turned on or off,
/// the StatefulSet is deleted leaving its pods and volumes in place (orphan
/// propagation, on its UID) and applied again: the new one adopts the pods
/// and rolls them onto the new template one at a time. Says whether it
/// replaced it.
async fn replace_if_claims_changed(
    ctx: &Context,
    member: &Member,
    ns: &str,
    desired: &StatefulSet,
) -> Result<bool> {
    let name = desired.name_any();
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let existing = api.get_opt(&name).await.map_err(Error::kube(
        "read",
        "StatefulSet",
        format!("{ns}/{name}"),
    ))?;
    let Some(existing) = existing else {
        return Ok(false);
    };
    let Some((old, new)) = crate::build::statefulset::claims_changed(&existing, desired) else {
        return Ok(false);
    };
    let Some(uid) = existing.metadata.uid.clone() else {
        return Ok(false);
    };
    let message = format!(
        "Replacing StatefulSet {name} to change its volume claims from [{}] to [{}]; pods and volumes are kept",
        old.join(", "),
        new.join(", ")
    );
    info!(%name, ?old, ?new, "replacing the StatefulSet: its volume claims change");
    ctx.event(
        member,
        EventType::Normal,
        "VolumesChanged",
        "ReplaceStatefulSet",
        message,
    )
    .await;
    if existing.metadata.deletion_timestamp.is_none() {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                return Err(Error::kube("delete", "StatefulSet", format!("{ns}/{name}"))(e));
            }
        }
    }
    let gone = await_condition(api, &name, conditions::is_deleted(&uid));
    match tokio::time::timeout(REPLACE_TIMEOUT, gone).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => Err(Error::Replace {
            object: format!("StatefulSet {ns}/{name}"),
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Replace {
            object: format!("StatefulSet {ns}/{name}"),
            reason: format!(
                "still being deleted after {REPLACE_TIMEOUT:?}; applied again once it is gone"
            ),
        }),
    }
}

/// The Member's part on chain, as this reconcile left it.
pub(super) struct OnChain {
    pub(super) votes: Vec<VoteStatus>,
    /// For a member joining a running consortium: where its admission stands.
    pub(super) admission: Option<Admission>,
}

/// Step 4b, apply on chain: this member's votes, and the admission of a
/// member joining a running consortium.
pub(super) async fn on_chain_part(
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
