//! Planning what the operator asks of the chain's configuration (the chain's
//! own governance rules, in `kubeledger_protocol::governance`, execute it).
//! Pure functions decide, from the resources and what the chain reports
//! (`GetConfig`, `ListProposals`), which parameter change to propose, which
//! votes to cast, which admission to propose, and how proposals are shown in
//! status.

use crate::crd::{
    ChainConfigStatus, ConsortiumSpec, ProposalStatus, ScheduledParamsStatus, VoteStatus,
};
use crate::proto::{
    config_change::Change, AdmitMember, GetConfigResponse, NodeInfo, Proposal, ProposalState,
    UpdateParams, Vote, VoteComparator,
};
use crate::Result;
use kubeledger_protocol::chain_params::LiveParams;

/// The live parameters a Consortium spec asks for.
pub fn desired_params(spec: &ConsortiumSpec) -> Result<LiveParams> {
    Ok(spec.chain_params()?.live())
}

/// The parameters the chain is heading for: the decided ones not yet in
/// force, else those in force.
pub fn target_params(resp: &GetConfigResponse) -> LiveParams {
    match scheduled(resp) {
        Some((params, _, _)) => params,
        None => LiveParams::of(&resp.effective_params.unwrap_or_default()),
    }
}

/// Decided parameters whose height has not come: (params, from height, proposal).
fn scheduled(resp: &GetConfigResponse) -> Option<(LiveParams, u64, u64)> {
    let s = resp.config.as_ref()?.scheduled.as_ref()?;
    (s.from_height > resp.height.saturating_add(1)).then(|| {
        (
            LiveParams::of(&s.params.unwrap_or_default()),
            s.from_height,
            s.proposal_id,
        )
    })
}

/// The parameter change of an open proposal.
pub fn open_params_proposal(proposals: &[Proposal]) -> Option<(&Proposal, &UpdateParams)> {
    proposals
        .iter()
        .filter(|p| p.state == ProposalState::Open as i32)
        .find_map(
            |p| match p.change.as_ref().and_then(|c| c.change.as_ref()) {
                Some(Change::UpdateParams(u)) => Some((p, u)),
                _ => None,
            },
        )
}

/// What to do about the spec's live parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamsPlan {
    /// The chain has them in force or decided.
    Settled,
    /// An open proposal proposes exactly them.
    Proposed(u64),
    /// Something else must finish first (only one parameter change may be
    /// pending): why.
    Wait(String),
    /// Propose this update.
    Propose(UpdateParams),
}

/// Compares the spec's parameters with the chain's; proposes only what differs.
pub fn plan_params(
    desired: LiveParams,
    resp: &GetConfigResponse,
    proposals: &[Proposal],
) -> ParamsPlan {
    let target = target_params(resp);
    if target == desired {
        return ParamsPlan::Settled;
    }
    if let Some((p, u)) = open_params_proposal(proposals) {
        return if target.updated(u) == desired {
            ParamsPlan::Proposed(p.id)
        } else {
            ParamsPlan::Wait(format!(
                "proposal {} changes other parameters; the spec's ({desired}) are proposed once it is decided",
                p.id
            ))
        };
    }
    if let Some((_, from, id)) = scheduled(resp) {
        return ParamsPlan::Wait(format!(
            "parameters decided by proposal {id} take effect at height {from}; the spec's ({desired}) are proposed from then on"
        ));
    }
    ParamsPlan::Propose(target.update_to(desired))
}

fn kind(p: &Proposal) -> &'static str {
    match p.change.as_ref().and_then(|c| c.change.as_ref()) {
        Some(Change::Admit(_)) => "AdmitMember",
        Some(Change::Remove(_)) => "RemoveMember",
        Some(Change::UpdateParams(_)) => "UpdateParams",
        Some(Change::DeployContract(_)) => "DeployContract",
        Some(Change::Vote(_)) | Some(Change::InstallCode(_)) | None => "Unknown",
    }
}

/// Name of a proposal state as status shows it.
pub fn state_name(state: i32) -> &'static str {
    match ProposalState::try_from(state) {
        Ok(ProposalState::Open) => "Open",
        Ok(ProposalState::Approved) => "Approved",
        Ok(ProposalState::Rejected) => "Rejected",
        Ok(ProposalState::Expired) => "Expired",
        _ => "Unknown",
    }
}

/// A proposal as status shows it.
pub fn proposal_status(p: &Proposal) -> ProposalStatus {
    let count = |approve: bool| {
        u32::try_from(p.ballots.iter().filter(|b| b.approve == approve).count()).unwrap_or(u32::MAX)
    };
    ProposalStatus {
        id: p.id,
        kind: kind(p).into(),
        state: state_name(p.state).into(),
        proposer: p.proposer.clone(),
        votes_for: count(true),
        votes_against: count(false),
        threshold_percent: p.threshold_percent,
        comparator: match VoteComparator::try_from(p.comparator) {
            Ok(VoteComparator::GreaterThan) => Some("GreaterThan".into()),
            Ok(VoteComparator::AtLeast) => Some("AtLeast".into()),
            _ => None,
        },
        expires_at: (p.expires_ms > 0)
            .then(|| crate::probe::rfc3339_ms(p.expires_ms))
            .flatten(),
        effective_height: (p.effective_height > 0).then_some(p.effective_height),
        reason: (!p.reason.is_empty()).then(|| p.reason.clone()),
    }
}

/// Status of the chain's configuration, with the open parameter proposal.
pub fn chain_config_status(
    resp: &GetConfigResponse,
    proposals: &[Proposal],
    message: Option<String>,
) -> ChainConfigStatus {
    let config = resp.config.clone().unwrap_or_default();
    let in_force = LiveParams::of(&resp.effective_params.unwrap_or_default());
    // A schedule whose height has come is what is in force now.
    let from_height = config
        .scheduled
        .as_ref()
        .filter(|s| s.from_height <= resp.height.saturating_add(1))
        .map(|s| s.from_height)
        .unwrap_or_default();
    ChainConfigStatus {
        version: config.version,
        height: resp.height,
        params: in_force,
        from_height,
        scheduled: scheduled(resp).map(|(p, from_height, proposal_id)| ScheduledParamsStatus {
            params: p,
            from_height,
            proposal_id,
        }),
        pending_proposal: open_params_proposal(proposals).map(|(p, _)| proposal_status(p)),
        members: config.members.iter().map(|m| m.name.clone()).collect(),
        message,
        refused_params: None,
    }
}

/// What to do about one vote a Member's spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VotePlan {
    /// Cast it.
    Cast(Vote),
    /// Not cast: the status entry saying why (or that it is already cast).
    Done(VoteStatus),
}

/// The votes `member` should cast: its approvals, then its rejections, each
/// checked against the proposals on chain (unknown, decided, expired or
/// already voted on: not cast).
pub fn plan_votes(
    member: &str,
    is_chain_member: bool,
    approvals: &[u64],
    rejections: &[u64],
    proposals: &[Proposal],
) -> Vec<VotePlan> {
    let wanted = approvals
        .iter()
        .map(|id| (*id, true))
        .chain(rejections.iter().map(|id| (*id, false)));
    wanted
        .map(|(id, approve)| {
            let done = |state: &str, message: String| {
                VotePlan::Done(VoteStatus {
                    proposal_id: id,
                    approve,
                    state: state.into(),
                    message: (!message.is_empty()).then_some(message),
                })
            };
            let Some(p) = proposals.iter().find(|p| p.id == id) else {
                return done(VOTE_UNKNOWN, format!("the chain has no proposal {id}"));
            };
            if let Some(b) = p.ballots.iter().find(|b| b.member == member) {
                return if b.approve == approve {
                    done(VOTE_CAST, String::new())
                } else {
                    done(
                        VOTE_CONFLICT,
                        format!(
                            "{member} already voted {} proposal {id}; votes are final",
                            if b.approve { "for" } else { "against" }
                        ),
                    )
                };
            }
            if p.state != ProposalState::Open as i32 {
                let state = state_name(p.state);
                return done(
                    VOTE_SKIPPED,
                    format!("proposal {id} is {state}; the vote is not cast"),
                );
            }
            if !is_chain_member {
                return done(
                    VOTE_SKIPPED,
                    format!("{member} is not a member on chain and cannot vote"),
                );
            }
            VotePlan::Cast(Vote {
                proposal_id: id,
                approve,
            })
        })
        .collect()
}

/// Vote states in a Member's status.
pub const VOTE_CAST: &str = "Cast";
pub const VOTE_SKIPPED: &str = "Skipped";
pub const VOTE_UNKNOWN: &str = "UnknownProposal";
pub const VOTE_CONFLICT: &str = "Conflict";
pub const VOTE_REFUSED: &str = "Refused";

/// The newest proposal to admit `member`.
pub fn admission_proposal<'a>(member: &str, proposals: &'a [Proposal]) -> Option<&'a Proposal> {
    proposals
        .iter()
        .filter(|p| {
            matches!(
                p.change.as_ref().and_then(|c| c.change.as_ref()),
                Some(Change::Admit(a)) if a.member == member
            )
        })
        .max_by_key(|p| p.id)
}

/// The change admitting a member with its admin key and nodes (hex keys;
/// nodes as (name, public key, peer address)).
pub fn admit_change(
    member: &str,
    organization: &str,
    admin_key_hex: &str,
    nodes: &[(String, String, String)],
) -> std::result::Result<Change, String> {
    let decode = |what: &str, hex_key: &str| {
        hex::decode(hex_key.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("{what} is not a 32-byte hex key"))
    };
    Ok(Change::Admit(AdmitMember {
        member: member.into(),
        organization: organization.into(),
        admin_key: decode("the admin key", admin_key_hex)?,
        nodes: nodes
            .iter()
            .map(|(name, key, peer_address)| {
                Ok(NodeInfo {
                    name: name.clone(),
                    public_key: decode(&format!("node {name}'s key"), key)?,
                    peer_address: peer_address.clone(),
                })
            })
            .collect::<std::result::Result<_, String>>()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ChainParameters;
    use crate::proto::{Ballot, ConfigChange, ConsortiumConfig, ScheduledParams};

    fn params(interval: u32) -> ChainParameters {
        ChainParameters {
            block_interval_ms: interval,
            max_block_txs: 10_000,
            max_block_bytes: 4 * 1024 * 1024,
            ..Default::default()
        }
    }

    fn config(interval: u32) -> GetConfigResponse {
        GetConfigResponse {
            config: Some(ConsortiumConfig {
                params: Some(params(interval)),
                ..Default::default()
            }),
            height: 10,
            effective_params: Some(params(interval)),
        }
    }

    fn open_update(id: u64, u: UpdateParams) -> Proposal {
        Proposal {
            id,
            change: Some(ConfigChange {
                change: Some(Change::UpdateParams(u)),
            }),
            state: ProposalState::Open as i32,
            ballots: vec![Ballot {
                member: "org1".into(),
                approve: true,
                height: 3,
            }],
            ..Default::default()
        }
    }

    fn want(interval: u32) -> LiveParams {
        LiveParams::of(&params(interval))
    }

    #[test]
    fn proposes_a_new_view_change_timeout_alone() {
        let mut desired = want(200);
        desired.view_change_timeout_ms += 1_000;
        assert_eq!(
            plan_params(desired, &config(200), &[]),
            ParamsPlan::Propose(UpdateParams {
                view_change_timeout_ms: Some(desired.view_change_timeout_ms),
                ..Default::default()
            })
        );
    }

    #[test]
    fn proposes_only_what_differs() {
        assert_eq!(
            plan_params(want(500), &config(200), &[]),
            ParamsPlan::Propose(UpdateParams {
                block_interval_ms: Some(500),
                ..Default::default()
            })
        );
        assert_eq!(
            plan_params(want(200), &config(200), &[]),
            ParamsPlan::Settled
        );
    }

    #[test]
    fn an_open_proposal_of_the_same_values_is_not_repeated() {
        let same = open_update(
            4,
            UpdateParams {
                block_interval_ms: Some(500),
                ..Default::default()
            },
        );
        assert_eq!(
            plan_params(want(500), &config(200), std::slice::from_ref(&same)),
            ParamsPlan::Proposed(4)
        );
        assert!(matches!(
            plan_params(want(300), &config(200), &[same]),
            ParamsPlan::Wait(_)
        ));
    }

    #[test]
    fn scheduled_parameters_count_as_the_chains() {
        let mut c = config(200);
        if let Some(cfg) = c.config.as_mut() {
            cfg.scheduled = Some(ScheduledParams {
                from_height: 30,
                params: Some(params(500)),
                proposal_id: 2,
            });
        }
        assert_eq!(plan_params(want(500), &c, &[]), ParamsPlan::Settled);
        assert!(matches!(
            plan_params(want(300), &c, &[]),
            ParamsPlan::Wait(_)
        ));
        let s = chain_config_status(&c, &[], None);
        assert_eq!(s.params.block_interval_ms, 200);
        assert_eq!(
            s.scheduled.map(|s| (s.from_height, s.proposal_id)),
            Some((30, 2))
        );
        // Once the height has come, they are the ones in force.
        c.height = 40;
        c.effective_params = Some(params(500));
        let s = chain_config_status(&c, &[], None);
        assert_eq!((s.params.block_interval_ms, s.from_height), (500, 30));
        assert_eq!(s.scheduled, None);
    }

    #[test]
    fn proposal_status_counts_votes() {
        let mut p = open_update(4, UpdateParams::default());
        p.ballots.push(Ballot {
            member: "org2".into(),
            approve: false,
            height: 4,
        });
        p.threshold_percent = 67;
        p.comparator = VoteComparator::AtLeast as i32;
        p.expires_ms = 1000;
        let s = proposal_status(&p);
        assert_eq!((s.votes_for, s.votes_against), (1, 1));
        assert_eq!(s.kind, "UpdateParams");
        assert_eq!(s.state, "Open");
        assert_eq!(s.comparator.as_deref(), Some("AtLeast"));
        assert_eq!(s.expires_at.as_deref(), Some("1970-01-01T00:00:01Z"));
    }

    #[test]
    fn votes_are_cast_once_and_only_on_open_proposals() {
        let open = open_update(4, UpdateParams::default());
        let mut decided = open_update(5, UpdateParams::default());
        decided.state = ProposalState::Approved as i32;
        let mut expired = open_update(6, UpdateParams::default());
        expired.state = ProposalState::Expired as i32;
        let proposals = [open.clone(), decided, expired];
        let plan = plan_votes("org2", true, &[4, 5], &[6, 9], &proposals);
        assert_eq!(
            plan[0],
            VotePlan::Cast(Vote {
                proposal_id: 4,
                approve: true
            })
        );
        let states: Vec<&str> = plan[1..]
            .iter()
            .map(|p| match p {
                VotePlan::Done(s) => s.state.as_str(),
                VotePlan::Cast(_) => "cast",
            })
            .collect();
        assert_eq!(states, [VOTE_SKIPPED, VOTE_SKIPPED, VOTE_UNKNOWN]);
        // org1 proposed it: its approval is already counted.
        let plan = plan_votes("org1", true, &[4], &[], std::slice::from_ref(&open));
        assert!(matches!(&plan[0], VotePlan::Done(s) if s.state == VOTE_CAST));
        let plan = plan_votes("org1", true, &[], &[4], std::slice::from_ref(&open));
        assert!(matches!(&plan[0], VotePlan::Done(s) if s.state == VOTE_CONFLICT));
        let plan = plan_votes("org9", false, &[4], &[], &[open]);
        assert!(matches!(&plan[0], VotePlan::Done(s) if s.state == VOTE_SKIPPED));
    }

    #[test]
    fn admission_proposals_are_found_by_member_name() {
        let key = "11".repeat(32);
        let change = admit_change(
            "org3",
            "Org Three",
            &key,
            &[("org3-0".into(), key.clone(), "org3-0.x:7051".into())],
        )
        .expect("change");
        let p = Proposal {
            id: 3,
            change: Some(ConfigChange {
                change: Some(change),
            }),
            ..Default::default()
        };
        let other = open_update(4, UpdateParams::default());
        let proposals = [p, other];
        assert_eq!(
            admission_proposal("org3", &proposals).map(|p| p.id),
            Some(3)
        );
        assert!(admission_proposal("org4", &proposals).is_none());
        assert!(admit_change("org3", "", "zz", &[]).is_err());
    }
}
