//! Step 4, apply: the Member's Kubernetes objects, then its part on chain.

use kube::runtime::events::EventType;
use tracing::info;

use super::validate::Checked;
use crate::build::MemberObjects;
use crate::controller::on_chain::{self, Admission};
use crate::controller::{apply, Context};
use crate::crd::{Consortium, Member, MemberStatus, VoteStatus};
use crate::Result;

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
    apply(client, ns, &objects.statefulset).await?;
    Ok(true)
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
