//! The admission of a Member joining a running consortium: proposed once,
//! signed with the consortium admin's key, then followed on chain until its
//! nodes validate.

use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::instrument;

use super::{ChainView, ValidatorStanding};
use crate::build::names;
use crate::controller::params::{propose, Proposed};
use crate::controller::Context;
use crate::crd::{Consortium, Member, MemberStatus, ProposalStatus};
use crate::keys::KeyMaterial;
use crate::planning;
use crate::proto::ProposalState;
use crate::{Error, Result};

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

#[cfg(test)]
mod standing_tests {
    use super::*;
    use crate::proto::{
        ConsortiumConfig, GetConfigResponse, MemberInfo, NodeInfo, ScheduledValidators,
    };

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
