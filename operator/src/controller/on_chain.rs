//! A Member's part in the on-chain configuration: the votes its spec asks
//! for (signed with its own admin key) and, for a Member joining a running
//! consortium, the proposal to admit it (signed with the consortium admin's
//! key), and, when such a Member is deleted, the proposal to remove it. Each
//! is decided afresh from the chain on every reconcile
//! ([`planning::plan_votes`], [`planning::admission_proposal`]), so each
//! transaction is submitted once. The Member controller ([`super::member`])
//! calls these; it runs the member's nodes.

use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, instrument, warn};

use super::params::{is_refusal, propose, Proposed};
use super::Context;
use crate::build::names;
use crate::chain::{host_of, signing_key, ChainError};
use crate::crd::{Consortium, Member, MemberStatus, ProposalStatus, VoteStatus};
use crate::keys::{KeyMaterial, ADMIN_KEY};
use crate::planning::{self, VotePlan, VOTE_REFUSED};
use crate::proto::{
    config_change::Change, GetConfigResponse, Proposal, ProposalState, RemoveMember,
};
use crate::{Error, Result};

/// The chain's configuration and proposals, read through one validator.
pub struct ChainView {
    pub host: String,
    pub config: GetConfigResponse,
    pub proposals: Vec<Proposal>,
}

impl ChainView {
    pub fn is_member(&self, name: &str) -> bool {
        self.config
            .config
            .as_ref()
            .is_some_and(|c| c.members.iter().any(|m| m.name == name))
    }

    /// Where the member's nodes stand in the validator set: validating now
    /// (since which height), or scheduled to from a height.
    pub fn validator_standing(&self, name: &str) -> ValidatorStanding {
        let Some(c) = self.config.config.as_ref() else {
            return ValidatorStanding::NotScheduled;
        };
        let Some(m) = c.members.iter().find(|m| m.name == name) else {
            return ValidatorStanding::NotScheduled;
        };
        let in_set = |set: &[crate::proto::NodeInfo]| {
            !m.nodes.is_empty()
                && m.nodes
                    .iter()
                    .all(|n| set.iter().any(|v| v.public_key == n.public_key))
        };
        match &c.scheduled_validators {
            Some(s) if self.config.height + 1 >= s.from_height && in_set(&s.validators) => {
                ValidatorStanding::Validating {
                    since: s.from_height,
                }
            }
            Some(s) if self.config.height + 1 < s.from_height && in_set(&s.validators) => {
                ValidatorStanding::Scheduled {
                    from: s.from_height,
                }
            }
            _ if in_set(&c.validators) => ValidatorStanding::Validating {
                since: c.validators_from,
            },
            _ => ValidatorStanding::NotScheduled,
        }
    }
}

impl ChainView {
    /// The first height of a validator set scheduled but not in force yet.
    pub fn pending_switch(&self) -> Option<u64> {
        let c = self.config.config.as_ref()?;
        c.scheduled_validators
            .as_ref()
            .map(|s| s.from_height)
            .filter(|from| self.config.height + 1 < *from)
    }
}

/// A member's nodes in the validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidatorStanding {
    Validating { since: u64 },
    Scheduled { from: u64 },
    NotScheduled,
}

/// Reads the chain through the first validator the Consortium found reachable.
pub async fn read_chain(ctx: &Context, consortium: &Consortium) -> Option<ChainView> {
    let host = consortium
        .status
        .as_ref()?
        .validators
        .iter()
        .find(|v| v.reachable)
        .map(|v| host_of(&v.peer_address).to_string())?;
    let read = async {
        let config = ctx.chain.config(&host).await?;
        let proposals = ctx.chain.proposals(&host).await?;
        Ok::<_, ChainError>((config, proposals))
    };
    match read.await {
        Ok((config, proposals)) if config.config.is_some() => Some(ChainView {
            host,
            config,
            proposals,
        }),
        Ok(_) => None,
        Err(e) => {
            warn!(error = %e, "cannot read the chain configuration");
            None
        }
    }
}

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

/// Where a joining Member's admission stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub proposal: Option<ProposalStatus>,
    /// The member is on chain (its admission was approved).
    pub admitted: bool,
    /// Its nodes are validators now (no longer observers).
    pub validating: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Condition reasons of a joining Member.
pub const AWAITING_VALIDATOR_SWITCH: &str = "AwaitingValidatorSwitch";
pub const VALIDATING: &str = "Validating";
pub const ADMISSION_PROPOSED: &str = "AdmissionProposed";
pub const ADMISSION_DECLINED: &str = "AdmissionDeclined";
pub const ADMISSION_NOT_PROPOSED: &str = "AdmissionNotProposed";
pub const ADMISSION_REFUSED: &str = "AdmissionRefused";

/// Where the admission of `name` stands on chain, once it was proposed.
pub fn standing(name: &str, view: &ChainView) -> Option<Admission> {
    let existing = planning::admission_proposal(name, &view.proposals);
    if view.is_member(name) {
        let (validating, reason, message) = match view.validator_standing(name) {
            ValidatorStanding::Validating { since } => (
                true,
                VALIDATING,
                format!("admitted on chain; its nodes validate from height {since}"),
            ),
            ValidatorStanding::Scheduled { from } => (
                false,
                AWAITING_VALIDATOR_SWITCH,
                format!(
                    "admitted on chain; its nodes follow the chain as observers until the new \
                     validator set takes over at height {from}"
                ),
            ),
            ValidatorStanding::NotScheduled => (
                false,
                AWAITING_VALIDATOR_SWITCH,
                "admitted on chain; its nodes follow the chain as observers and are not in \
                 the validator set"
                    .to_string(),
            ),
        };
        return Some(Admission {
            proposal: existing.map(planning::proposal_status),
            admitted: true,
            validating,
            reason,
            message,
        });
    }
    let p = existing?;
    let status = planning::proposal_status(p);
    let open = p.state == ProposalState::Open as i32;
    let message = if open {
        format!(
            "admission proposal {} is open: {} for, {} against, {}% of the members needed",
            p.id, status.votes_for, status.votes_against, status.threshold_percent
        )
    } else {
        format!(
            "admission proposal {} is {}{}; delete and re-create the Member to propose it again",
            p.id,
            status.state,
            status
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    };
    Some(Admission {
        proposal: Some(status),
        admitted: false,
        validating: false,
        reason: if open {
            ADMISSION_PROPOSED
        } else {
            ADMISSION_DECLINED
        },
        message,
    })
}

/// For a Member that is not a founder of a consortium whose genesis exists:
/// proposes its admission (once: an existing proposal for its name is
/// followed instead) and reports where it stands.
#[instrument(skip_all)]
pub async fn admit(
    ctx: &Context,
    member: &Member,
    consortium: &Consortium,
    old: &MemberStatus,
    view: &ChainView,
    keys: &KeyMaterial,
    node_names: &[String],
) -> Result<Admission> {
    let name = member.name_any();
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if let Some(standing) = standing(&name, view) {
        return Ok(standing);
    }
    // Refused for this generation of the Member: not proposed again until it changes.
    if let Some(c) = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.reason == ADMISSION_REFUSED)
    {
        if old.observed_generation == member.metadata.generation {
            return Ok(Admission {
                proposal: None,
                admitted: false,
                validating: false,
                reason: ADMISSION_REFUSED,
                message: c.message.clone(),
            });
        }
    }
    let nodes: Vec<(String, String, String)> = node_names
        .iter()
        .filter_map(|n| {
            keys.node_public_key(n).map(|k| {
                (
                    n.clone(),
                    k,
                    names::peer_address(n, &name, &ns, &ctx.settings.cluster_domain),
                )
            })
        })
        .collect();
    let change = planning::admit_change(
        &name,
        &member.spec.organization,
        &keys.admin_public_key()?,
        &nodes,
    )
    .map_err(Error::InvalidSpec)?;
    let not_proposed = |message: String| Admission {
        proposal: None,
        admitted: false,
        validating: false,
        reason: ADMISSION_NOT_PROPOSED,
        message,
    };
    match propose(ctx, consortium, &view.host, &view.config, change).await? {
        Proposed::Applied(msg) => {
            ctx.event(
                member,
                EventType::Normal,
                "AdmissionProposed",
                "ProposeAdmission",
                format!("Proposed the admission of {name}: {msg}"),
            )
            .await;
            // The proposal as the chain now holds it.
            let after = ChainView {
                host: view.host.clone(),
                config: ctx
                    .chain
                    .config(&view.host)
                    .await
                    .unwrap_or_else(|_| view.config.clone()),
                proposals: ctx.chain.proposals(&view.host).await.unwrap_or_default(),
            };
            Ok(standing(&name, &after).unwrap_or_else(|| not_proposed(msg)))
        }
        Proposed::Refused(msg) => {
            ctx.event(
                member,
                EventType::Warning,
                "AdmissionRefused",
                "ProposeAdmission",
                format!("The chain refused the admission of {name}: {msg}"),
            )
            .await;
            Ok(Admission {
                reason: ADMISSION_REFUSED,
                ..not_proposed(msg)
            })
        }
        Proposed::NotPossible(msg) => Ok(not_proposed(msg)),
    }
}

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

#[cfg(test)]
mod standing_tests {
    use super::*;
    use crate::proto::{ConsortiumConfig, MemberInfo, NodeInfo, ScheduledValidators};

    fn node(k: u8) -> NodeInfo {
        NodeInfo {
            name: format!("n{k}"),
            public_key: vec![k; 32],
            peer_address: format!("n{k}:7051"),
        }
    }

    fn view(height: u64, scheduled: Option<(u64, Vec<NodeInfo>)>) -> ChainView {
        ChainView {
            host: "org1-0".into(),
            config: GetConfigResponse {
                config: Some(ConsortiumConfig {
                    members: vec![MemberInfo {
                        name: "org5".into(),
                        nodes: vec![node(5)],
                        ..Default::default()
                    }],
                    validators: vec![node(1), node(2), node(3), node(4)],
                    validators_from: 1,
                    scheduled_validators: scheduled.map(|(from, validators)| ScheduledValidators {
                        from_height: from,
                        validators,
                        proposal_id: 1,
                    }),
                    ..Default::default()
                }),
                height,
                effective_params: None,
            },
            proposals: Vec::new(),
        }
    }

    #[test]
    fn an_admitted_member_waits_for_the_switch_then_validates() {
        let grown = vec![node(1), node(2), node(3), node(4), node(5)];
        let a = standing("org5", &view(12, Some((41, grown.clone())))).expect("member");
        assert!(a.admitted && !a.validating);
        assert_eq!(a.reason, AWAITING_VALIDATOR_SWITCH);
        assert!(a.message.contains("at height 41"), "{}", a.message);

        let a = standing("org5", &view(40, Some((41, grown.clone())))).expect("member");
        assert!(a.validating, "the next block is ordered by the new set");
        assert_eq!(a.reason, VALIDATING);
        assert!(a.message.contains("from height 41"), "{}", a.message);

        let a = standing("org5", &view(12, None)).expect("member");
        assert!(!a.validating);
        assert!(
            a.message.contains("not in the validator set"),
            "{}",
            a.message
        );
    }
}
