//! A Member's votes: those of `spec.approvals` and `spec.rejections` not cast
//! yet, signed with its own admin key.

use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, instrument};

use super::ChainView;
use crate::build::names;
use crate::chain::signing_key;
use crate::controller::params::is_refusal;
use crate::controller::Context;
use crate::crd::{Consortium, Member, MemberStatus, VoteStatus};
use crate::keys::{KeyMaterial, ADMIN_KEY};
use crate::planning::{self, VotePlan, VOTE_REFUSED};
use crate::proto::config_change::Change;
use crate::{Error, Result};

/// Casts the votes of `spec.approvals` and `spec.rejections` not cast yet,
/// signed with the member's admin key; returns every vote's status.
#[instrument(skip_all)]
pub async fn cast_votes(
    ctx: &Context,
    member: &Member,
    consortium: &Consortium,
    old: &MemberStatus,
    view: &ChainView,
    keys: &KeyMaterial,
) -> Result<Vec<VoteStatus>> {
    let name = member.name_any();
    let plans = planning::plan_votes(
        &name,
        view.is_member(&name),
        &member.spec.approvals,
        &member.spec.rejections,
        &view.proposals,
    );
    let mut out = Vec::new();
    for plan in plans {
        let status = match plan {
            VotePlan::Done(s) => s,
            // Refused before, for the same vote: not submitted again.
            VotePlan::Cast(v)
                if old.votes.iter().any(|o| {
                    o.proposal_id == v.proposal_id
                        && o.approve == v.approve
                        && o.state == VOTE_REFUSED
                }) =>
            {
                old.votes
                    .iter()
                    .find(|o| o.proposal_id == v.proposal_id)
                    .cloned()
                    .unwrap_or_default()
            }
            VotePlan::Cast(v) => cast_vote(ctx, member, consortium, view, keys, v).await?,
        };
        // A vote that is not cast is said once, when its status first says so.
        let known = old.votes.contains(&status);
        let skipped = status.state != planning::VOTE_CAST && status.state != VOTE_REFUSED;
        if skipped && !known {
            ctx.event(
                member,
                EventType::Normal,
                "VoteSkipped",
                "Vote",
                status.message.clone().unwrap_or_default(),
            )
            .await;
        }
        out.push(status);
    }
    Ok(out)
}

/// Submits one vote signed with the member's admin key; its status, and an
/// Event saying whether the chain took it.
async fn cast_vote(
    ctx: &Context,
    member: &Member,
    consortium: &Consortium,
    view: &ChainView,
    keys: &KeyMaterial,
    v: crate::proto::Vote,
) -> Result<VoteStatus> {
    let name = member.name_any();
    let key = signing_key(&keys.admin).map_err(|reason| Error::InvalidKey {
        secret: names::secret(&name),
        reason: format!("{ADMIN_KEY}: {reason}"),
    })?;
    let (state, message) = match ctx
        .chain
        .submit_config(&view.host, &key, &consortium.spec.chain_id, Change::Vote(v))
        .await
    {
        // The chain's answer goes into the Event; the status of a
        // cast vote is the same whether cast now or found on chain.
        Ok(outcome) if outcome.applied => {
            info!(message = %outcome.message, "vote accepted");
            (planning::VOTE_CAST, None)
        }
        Ok(outcome) => (VOTE_REFUSED, Some(outcome.message)),
        Err(e) if is_refusal(&e) => (VOTE_REFUSED, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let verb = if v.approve { "for" } else { "against" };
    if state == planning::VOTE_CAST {
        info!(proposal = v.proposal_id, approve = v.approve, "vote cast");
        ctx.event(
            member,
            EventType::Normal,
            "VoteCast",
            "Vote",
            format!("Voted {verb} proposal {}", v.proposal_id),
        )
        .await;
    } else {
        ctx.event(
            member,
            EventType::Warning,
            "VoteRefused",
            "Vote",
            format!(
                "The chain refused the vote {verb} proposal {}: {}",
                v.proposal_id,
                message.clone().unwrap_or_default()
            ),
        )
        .await;
    }
    Ok(VoteStatus {
        proposal_id: v.proposal_id,
        approve: v.approve,
        state: state.into(),
        message,
    })
}
