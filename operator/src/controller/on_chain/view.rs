//! The chain's configuration and proposals as one validator reports them,
//! and where a member's nodes stand in its validator set.

use tracing::warn;

use crate::chain::{host_of, ChainError};
use crate::controller::Context;
use crate::crd::Consortium;
use crate::proto::{GetConfigResponse, Proposal};

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
