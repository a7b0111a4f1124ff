//! The removal of a Member that joined after genesis, proposed before its
//! nodes are torn down.

use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, instrument};

use super::read_chain;
use crate::controller::params::{propose, Proposed};
use crate::controller::Context;
use crate::crd::{Consortium, Member};
use crate::proto::{config_change::Change, Proposal, ProposalState, RemoveMember};
use crate::Result;

/// The open proposal to remove `member`.
fn open_removal<'a>(member: &str, proposals: &'a [Proposal]) -> Option<&'a Proposal> {
    proposals.iter().find(|p| {
        p.state == ProposalState::Open as i32
            && matches!(
                p.change.as_ref().and_then(|c| c.change.as_ref()),
                Some(Change::Remove(r)) if r.member == member
            )
    })
}

/// Where the removal of a Member that joined after genesis stands, before
/// its nodes are torn down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It is off the chain's configuration and its nodes no longer
    /// validate: tear down.
    Done,
    /// Wait: the removal is being voted on, or its nodes still validate
    /// until the next validator set takes over (they demote then).
    Pending(String),
    /// It will not be removed on chain (refused, rejected, expired, or the
    /// chain does not answer): tear down anyway, a Warning Event says why.
    GaveUp,
}

/// The decided (not open) removal proposals of `member`, newest first.
fn decided_removal<'a>(member: &str, proposals: &'a [Proposal]) -> Option<&'a Proposal> {
    proposals.iter().find(|p| {
        p.state != ProposalState::Open as i32
            && p.state != ProposalState::Approved as i32
            && matches!(
                p.change.as_ref().and_then(|c| c.change.as_ref()),
                Some(Change::Remove(r)) if r.member == member
            )
    })
}

/// Before a Member that joined after genesis is torn down: proposes its
/// removal from the chain's configuration, signed by the consortium admin
/// (once: an open removal proposal is left to the vote), and says whether
/// the teardown must wait for the vote and for its nodes to leave the
/// validator set. A chain that does not answer, or a removal that is
/// refused, rejected or expired, does not hold up the teardown; a Warning
/// Event says the removal did not happen on chain.
#[instrument(skip_all)]
pub async fn propose_removal(
    ctx: &Context,
    member: &Member,
    consortium: &Consortium,
) -> Result<Removal> {
    let name = member.name_any();
    let Some(view) = read_chain(ctx, consortium).await else {
        ctx.event(
            member,
            EventType::Warning,
            "RemovalNotProposed",
            "ProposeRemoval",
            format!("No validator answers: the removal of {name} from the chain's configuration was not proposed"),
        )
        .await;
        return Ok(Removal::GaveUp);
    };
    if !view.is_member(&name) {
        return Ok(match view.pending_switch() {
            Some(from) => Removal::Pending(format!(
                "removed on chain; its nodes validate until the next validator set takes over at \
                 height {from}"
            )),
            None => Removal::Done,
        });
    }
    if let Some(p) = open_removal(&name, &view.proposals) {
        info!(proposal = p.id, "removal already proposed");
        return Ok(Removal::Pending(format!(
            "removal proposal {} is open; the nodes are torn down once it is decided",
            p.id
        )));
    }
    if let Some(p) = decided_removal(&name, &view.proposals) {
        ctx.event(
            member,
            EventType::Warning,
            "RemovalNotProposed",
            "ProposeRemoval",
            format!(
                "Removal proposal {} of {name} was not approved; tearing the nodes down while it stays a member on chain",
                p.id
            ),
        )
        .await;
        return Ok(Removal::GaveUp);
    }
    let change = Change::Remove(RemoveMember {
        member: name.clone(),
    });
    let (type_, reason, note, removal) =
        match propose(ctx, consortium, &view.host, &view.config, change).await {
            Ok(Proposed::Applied(msg)) => (
                EventType::Normal,
                "RemovalProposed",
                format!("Proposed the removal of {name}: {msg}"),
                Removal::Pending(format!(
                    "removal proposed ({msg}); the nodes are torn down once they left the \
                     validator set"
                )),
            ),
            Ok(Proposed::Refused(msg)) | Ok(Proposed::NotPossible(msg)) => (
                EventType::Warning,
                "RemovalNotProposed",
                format!("The removal of {name} was not proposed: {msg}"),
                Removal::GaveUp,
            ),
            Err(e) => (
                EventType::Warning,
                "RemovalNotProposed",
                format!("The removal of {name} was not proposed: {e}"),
                Removal::GaveUp,
            ),
        };
    ctx.event(member, type_, reason, "ProposeRemoval", note)
        .await;
    Ok(removal)
}
