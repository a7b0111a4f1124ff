//! One configuration change judged against the configuration. Pure: the
//! caller loads the proposal a vote refers to and writes the effects.

use ed25519_dalek::VerifyingKey;

use super::params::{activation_delay, params_at, settle, updated};
use super::tally::verdict;
use super::validators::{self, MAX_VALIDATORS};
use crate::proto::config_change::Change;
use crate::proto::{
    AdmissionMode, Ballot, ConfigChange, ConfigOutcome, ConsortiumConfig, ContractInfo, MemberInfo,
    NodeInfo, Proposal, ProposalState, ScheduledParams,
};

/// Members may run at most this many nodes each.
pub const MAX_NODES_PER_MEMBER: usize = 16;
/// A change never takes the validator count below this (or below the
/// current count, for a consortium founded smaller).
pub const MIN_VALIDATORS: usize = 4;

/// The block a change executes in.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub height: u64,
    /// The block's timestamp: the only time governance knows.
    pub block_ms: u64,
    pub tx_id: [u8; 32],
}

/// Why a change was refused; it leaves state as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender may not make this change.
    #[error("{0}")]
    NotAuthorized(String),
    /// The configuration refuses it as it stands.
    #[error("{0}")]
    Refused(String),
}

/// What a change does to state.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// The new configuration, when it changed.
    pub config: Option<ConsortiumConfig>,
    /// The proposal created or voted on, as it now stands.
    pub proposal: Option<Proposal>,
    pub outcome: ConfigOutcome,
}

/// Member and node names: 1-63 of `[a-z0-9.-]`, starting alphanumeric
/// (they become Kubernetes names).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn state_name(state: i32) -> &'static str {
    match ProposalState::try_from(state) {
        Ok(ProposalState::Open) => "open",
        Ok(ProposalState::Approved) => "approved",
        Ok(ProposalState::Rejected) => "rejected",
        Ok(ProposalState::Expired) => "expired",
        _ => "unknown",
    }
}

/// The state of a proposal as of a block time: an open proposal whose
/// expiry has passed is expired, whether or not a vote recorded it yet.
pub fn effective_state(p: &Proposal, block_ms: u64) -> ProposalState {
    match ProposalState::try_from(p.state) {
        Ok(ProposalState::Open) if block_ms > p.expires_ms => ProposalState::Expired,
        Ok(s) => s,
        Err(_) => ProposalState::Unspecified,
    }
}

/// Applies `change`, signed by `sender`, at `ctx`. `target` is the stored
/// proposal a vote names (`None` if there is none).
pub fn apply(
    config: &ConsortiumConfig,
    sender: &[u8],
    change: &ConfigChange,
    target: Option<&Proposal>,
    ctx: &Context,
) -> Result<Effects, Refusal> {
    let member = config
        .members
        .iter()
        .find(|m| m.admin_key == sender)
        .ok_or_else(|| {
            Refusal::NotAuthorized(if config.members.is_empty() {
                "this consortium's genesis names no members with admin keys, so its \
                 configuration cannot change"
                    .to_owned()
            } else {
                format!(
                    "sender {} is not the admin key of any member",
                    hex::encode(sender)
                )
            })
        })?
        .name
        .clone();
    let policy = config.admission.clone().unwrap_or_default();
    let automatic = policy.mode() != AdmissionMode::Vote;
    let Some(change) = &change.change else {
        return Err(Refusal::Refused("configuration change is empty".into()));
    };
    let mut next = config.clone();
    settle(&mut next, ctx.height);
    validators::settle(&mut next, ctx.height);

    if let Change::Vote(vote) = change {
        if automatic {
            return Err(Refusal::Refused(
                "the admission policy is Automatic: the consortium admin's proposals take \
                 effect at once and there is nothing to vote on"
                    .into(),
            ));
        }
        let Some(p) = target.filter(|p| p.id == vote.proposal_id) else {
            return Err(Refusal::Refused(format!(
                "there is no proposal {}",
                vote.proposal_id
            )));
        };
        if p.state != ProposalState::Open as i32 {
            return Err(Refusal::Refused(format!(
                "proposal {} is already {}",
                p.id,
                state_name(p.state)
            )));
        }
        if p.ballots.iter().any(|b| b.member == member) {
            return Err(Refusal::Refused(format!(
                "member {member} has already voted on proposal {}",
                p.id
            )));
        }
        let mut p = p.clone();
        if ctx.block_ms > p.expires_ms {
            p.state = ProposalState::Expired as i32;
            p.decided_height = ctx.height;
            p.reason = format!(
                "expired at {} ms without reaching the threshold",
                p.expires_ms
            );
            let message = format!("proposal {} had expired; the vote is not counted", p.id);
            return Ok(Effects {
                config: None,
                outcome: ConfigOutcome {
                    applied: false,
                    proposal_id: p.id,
                    message,
                },
                proposal: Some(p),
            });
        }
        p.ballots.push(Ballot {
            member: member.clone(),
            approve: vote.approve,
            height: ctx.height,
        });
        let changed = decide(&mut next, &mut p, ctx);
        if changed {
            next.version += 1;
            next.updated_height = ctx.height;
        }
        let message = format!(
            "{member} voted {} proposal {}; it is {}",
            if vote.approve { "for" } else { "against" },
            p.id,
            state_name(p.state)
        );
        return Ok(Effects {
            config: changed.then_some(next),
            outcome: ConfigOutcome {
                applied: true,
                proposal_id: p.id,
                message,
            },
            proposal: Some(p),
        });
    }

    if let Change::InstallCode(install) = change {
        // Storing code changes nothing in force: any member may; the
        // ledger checks the code compiles and stores it under its hash.
        if install.code.is_empty() {
            return Err(Refusal::Refused("the code is empty".into()));
        }
        return Ok(Effects {
            config: None,
            proposal: None,
            outcome: ConfigOutcome {
                applied: true,
                proposal_id: 0,
                message: format!("{member} installed {} bytes of code", install.code.len()),
            },
        });
    }

    if automatic && member != policy.consortium_admin {
        return Err(Refusal::NotAuthorized(format!(
            "under the Automatic admission policy only the consortium admin ({}) proposes \
             changes; {member} may not",
            policy.consortium_admin
        )));
    }
    applicable(&next, change, ctx.height).map_err(Refusal::Refused)?;
    let id = next.next_proposal_id.max(1);
    next.next_proposal_id = id + 1;
    let mut p = Proposal {
        id,
        change: Some(ConfigChange {
            change: Some(change.clone()),
        }),
        proposer: member.clone(),
        created_height: ctx.height,
        created_ms: ctx.block_ms,
        expires_ms: ctx.block_ms.saturating_add(policy.expiry_ms),
        ballots: vec![Ballot {
            member: member.clone(),
            approve: true,
            height: ctx.height,
        }],
        state: ProposalState::Open as i32,
        decided_height: 0,
        effective_height: 0,
        threshold_percent: policy.threshold_percent,
        comparator: policy.comparator,
        reason: String::new(),
        tx_id: ctx.tx_id.to_vec(),
    };
    if automatic {
        p.state = ProposalState::Approved as i32;
        enact(&mut next, &mut p, ctx);
    } else {
        decide(&mut next, &mut p, ctx);
    }
    next.version += 1;
    next.updated_height = ctx.height;
    let message = match ProposalState::try_from(p.state) {
        Ok(ProposalState::Approved) => format!(
            "proposal {id} approved; in force from height {}",
            p.effective_height
        ),
        _ => format!(
            "proposal {id} is {}; it needs {}% of {} members to approve before {} ms",
            state_name(p.state),
            p.threshold_percent,
            next.members.len(),
            p.expires_ms
        ),
    };
    Ok(Effects {
        config: Some(next),
        outcome: ConfigOutcome {
            applied: true,
            proposal_id: id,
            message,
        },
        proposal: Some(p),
    })
}

/// Tallies `p`; enacts it when approved. Returns whether `config` changed.
fn decide(config: &mut ConsortiumConfig, p: &mut Proposal, ctx: &Context) -> bool {
    match verdict(p, &config.members) {
        ProposalState::Approved => {
            p.state = ProposalState::Approved as i32;
            enact(config, p, ctx)
        }
        ProposalState::Rejected => {
            p.state = ProposalState::Rejected as i32;
            p.decided_height = ctx.height;
            p.reason = "the threshold can no longer be reached".into();
            false
        }
        _ => false,
    }
}

/// Puts an approved proposal in force. A proposal that no longer applies
/// (the configuration moved on while it was open) is rejected instead.
/// Returns whether `config` changed.
fn enact(config: &mut ConsortiumConfig, p: &mut Proposal, ctx: &Context) -> bool {
    p.decided_height = ctx.height;
    let Some(change) = p.change.as_ref().and_then(|c| c.change.clone()) else {
        return false;
    };
    if let Err(why) = applicable(config, &change, ctx.height) {
        p.state = ProposalState::Rejected as i32;
        p.reason = format!("approved, but no longer applicable: {why}");
        return false;
    }
    p.effective_height = ctx.height + 1;
    let k = params_at(config, ctx.height + 1).checkpoint_interval;
    match change {
        Change::Admit(a) => {
            let mut set = config.validators.clone();
            set.extend(a.nodes.iter().cloned());
            config.members.push(MemberInfo {
                name: a.member.clone(),
                organization: a.organization.clone(),
                admin_key: a.admin_key.clone(),
                nodes: a.nodes,
                admitted_at: ctx.height,
            });
            p.effective_height = validators::schedule(config, set, p.id, ctx.height, k);
        }
        Change::Remove(r) => {
            let leaving: Vec<Vec<u8>> = config
                .members
                .iter()
                .filter(|m| m.name == r.member)
                .flat_map(|m| m.nodes.iter().map(|n| n.public_key.clone()))
                .collect();
            config.members.retain(|m| m.name != r.member);
            let set = config
                .validators
                .iter()
                .filter(|v| !leaving.contains(&v.public_key))
                .cloned()
                .collect();
            p.effective_height = validators::schedule(config, set, p.id, ctx.height, k);
        }
        Change::UpdateParams(u) => {
            let base = params_at(config, ctx.height + 1);
            // `applicable` checked the update against the same base.
            if let Ok(params) = updated(&base, &u) {
                let k = base.checkpoint_interval;
                let from = ctx.height + activation_delay(k);
                config.scheduled = Some(ScheduledParams {
                    from_height: from,
                    params: Some(params),
                    proposal_id: p.id,
                });
                p.effective_height = from;
            }
        }
        Change::DeployContract(d) => {
            let info = ContractInfo {
                name: d.name.clone(),
                code_hash: d.code_hash.clone(),
                version: d.version,
                deployed_height: ctx.height,
                proposal_id: p.id,
            };
            match config.contracts.iter_mut().find(|c| c.name == d.name) {
                Some(existing) => *existing = info,
                None => config.contracts.push(info),
            }
        }
        Change::Vote(_) | Change::InstallCode(_) => return false,
    }
    true
}

/// Most contracts a consortium deploys.
pub const MAX_CONTRACTS: usize = 256;

/// Whether `change` could be enacted on `config` as it stands.
fn applicable(config: &ConsortiumConfig, change: &Change, height: u64) -> Result<(), String> {
    if matches!(change, Change::Admit(_) | Change::Remove(_)) {
        if let Some(s) = validators::pending(config, height) {
            return Err(format!(
                "the validator set decided by proposal {} takes over at height {}; one \
                 validator change per epoch, propose this one from then on",
                s.proposal_id, s.from_height
            ));
        }
    }
    match change {
        Change::Admit(a) => {
            if !valid_name(&a.member) {
                return Err(format!(
                    "member name {:?} must be 1-63 characters of [a-z0-9.-]",
                    a.member
                ));
            }
            if a.organization.len() > 128 {
                return Err("organization must be at most 128 bytes".into());
            }
            if config.members.iter().any(|m| m.name == a.member) {
                return Err(format!("{} is already a member", a.member));
            }
            if !valid_key(&a.admin_key) {
                return Err("admin_key must be a 32-byte ed25519 public key".into());
            }
            if config.members.iter().any(|m| m.admin_key == a.admin_key) {
                return Err("admin_key is already another member's admin key".into());
            }
            if a.nodes.is_empty() || a.nodes.len() > MAX_NODES_PER_MEMBER {
                return Err(format!(
                    "a member runs 1 to {MAX_NODES_PER_MEMBER} nodes, {} given",
                    a.nodes.len()
                ));
            }
            if config.validators.len() + a.nodes.len() > MAX_VALIDATORS {
                return Err(format!(
                    "the consortium would run {} validators, at most {MAX_VALIDATORS} are allowed",
                    config.validators.len() + a.nodes.len()
                ));
            }
            let existing: Vec<&NodeInfo> = config
                .members
                .iter()
                .flat_map(|m| m.nodes.iter())
                .chain(&config.validators)
                .collect();
            for (i, n) in a.nodes.iter().enumerate() {
                if !valid_name(&n.name) {
                    return Err(format!(
                        "node name {:?} must be 1-63 characters of [a-z0-9.-]",
                        n.name
                    ));
                }
                if !valid_key(&n.public_key) {
                    return Err(format!(
                        "node {}: public_key must be a 32-byte ed25519 public key",
                        n.name
                    ));
                }
                if n.peer_address.is_empty() || n.peer_address.len() > 255 {
                    return Err(format!("node {}: peer_address must be host:port", n.name));
                }
                let clash = existing.iter().copied().chain(a.nodes[..i].iter());
                for other in clash {
                    if other.name == n.name {
                        return Err(format!("node name {} is already taken", n.name));
                    }
                    if other.public_key == n.public_key {
                        return Err(format!("node {}'s key is already another node's", n.name));
                    }
                }
            }
            Ok(())
        }
        Change::Remove(r) => {
            let admin = config
                .admission
                .as_ref()
                .map(|a| a.consortium_admin.as_str())
                .unwrap_or_default();
            let Some(m) = config.members.iter().find(|m| m.name == r.member) else {
                return Err(format!("{} is not a member", r.member));
            };
            if m.name == admin {
                return Err(format!(
                    "{} holds the consortium admin key and cannot be removed",
                    m.name
                ));
            }
            let before = config.validators.len();
            let after = config
                .validators
                .iter()
                .filter(|v| !m.nodes.iter().any(|n| n.public_key == v.public_key))
                .count();
            if after < MIN_VALIDATORS.min(before) {
                return Err(format!(
                    "removing {} would leave {after} validators; at least {} must remain",
                    m.name,
                    MIN_VALIDATORS.min(before)
                ));
            }
            Ok(())
        }
        Change::UpdateParams(u) => {
            if let Some(s) = config.scheduled.as_ref().filter(|s| s.from_height > height) {
                return Err(format!(
                    "parameters decided by proposal {} take effect at height {}; propose \
                     further changes from then on",
                    s.proposal_id, s.from_height
                ));
            }
            updated(&params_at(config, height + 1), u).map(|_| ())
        }
        Change::DeployContract(d) => {
            if !valid_name(&d.name) {
                return Err(format!(
                    "contract name {:?} must be 1-63 characters of [a-z0-9.-]",
                    d.name
                ));
            }
            if d.code_hash.len() != 32 {
                return Err("code_hash must be the 32-byte SHA-256 of installed code".into());
            }
            let current = config
                .contracts
                .iter()
                .find(|c| c.name == d.name)
                .map_or(0, |c| c.version);
            if d.version != current + 1 {
                return Err(format!(
                    "contract {} is at version {current}; the next deployment is version {}, not {}",
                    d.name,
                    current + 1,
                    d.version
                ));
            }
            if current == 0 && config.contracts.len() >= MAX_CONTRACTS {
                return Err(format!("at most {MAX_CONTRACTS} contracts can be deployed"));
            }
            if d.init_input.len() > 64 * 1024 {
                return Err("init_input must be at most 64 KiB".into());
            }
            Ok(())
        }
        Change::Vote(_) | Change::InstallCode(_) => Ok(()),
    }
}

fn valid_key(bytes: &[u8]) -> bool {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .is_some_and(|k| !k.is_weak())
}
