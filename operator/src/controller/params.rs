//! Live chain parameters: reads the chain's configuration through a
//! reachable validator and, when the Consortium's `blockInterval`,
//! `maxBlockTxs` or `maxBlockBytes` differ from what the chain has in force or
//! decided, and no open proposal proposes exactly them, proposes them once,
//! signed with the consortium admin's key.
//!
//! Level-triggered and idempotent: what to do is decided afresh from the
//! chain on every reconcile ([`planning::plan_params`]); a proposal the
//! chain refused is not repeated for the same values.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, instrument, warn};

use super::healing::Observation;
use super::Context;
use crate::build::names;
use crate::chain::{host_of, signing_key, ChainError};
use crate::crd::{ChainConfigStatus, Consortium, ConsortiumStatus};
use crate::keys::ADMIN_KEY;
use crate::planning::{self, ParamsPlan};
use crate::proto::{config_change::Change, GetConfigResponse};
use crate::{Error, Result};

/// The host of the first validator that answered this poll.
pub fn reachable_host(observations: &[Observation]) -> Option<String> {
    observations
        .iter()
        .find(|o| o.report.is_some())
        .map(|o| host_of(&o.status.peer_address).to_string())
}

/// Whether the node refused the transaction itself (as opposed to not answering).
pub fn is_refusal(e: &ChainError) -> bool {
    use tonic::Code;
    matches!(e, ChainError::Rpc { status, .. } if matches!(
        status.code(),
        Code::FailedPrecondition | Code::PermissionDenied | Code::InvalidArgument | Code::Unauthenticated
    ))
}

/// The signing key in a member's key Secret.
pub async fn admin_key(
    ctx: &Context,
    member: &str,
    namespace: &str,
) -> Result<Option<ed25519_dalek::SigningKey>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = names::secret(member);
    let found = secrets.get_opt(&secret_name).await;
    let object = format!("{namespace}/{secret_name}");
    let Some(secret) = found.map_err(Error::kube("read", "Secret", object))? else {
        return Ok(None);
    };
    let Some(seed) = secret.data.as_ref().and_then(|d| d.get(ADMIN_KEY)) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&seed.0).map_err(|_| Error::InvalidKey {
        secret: secret_name.clone(),
        reason: format!("{ADMIN_KEY} is not UTF-8"),
    })?;
    signing_key(text)
        .map(Some)
        .map_err(|reason| Error::InvalidKey {
            secret: secret_name,
            reason: format!("{ADMIN_KEY}: {reason}"),
        })
}

/// Reads the chain's configuration and proposes the spec's live parameters
/// where needed. Returns the chain configuration for status (the previous one
/// when no validator answers).
#[instrument(skip_all)]
pub async fn reconcile_params(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    observations: &[Observation],
) -> Result<Option<ChainConfigStatus>> {
    let previous = old.chain_config.clone();
    let Some(host) = reachable_host(observations) else {
        return Ok(previous);
    };
    let read = async {
        let config = ctx.chain.config(&host).await?;
        let proposals = ctx.chain.proposals(&host).await?;
        Ok::<_, ChainError>((config, proposals))
    };
    let (config, proposals) = match read.await {
        Ok((config, proposals)) if config.config.is_some() => (config, proposals),
        Ok(_) => return Ok(previous),
        Err(e) => {
            warn!(error = %e, "cannot read the chain configuration");
            return Ok(previous);
        }
    };
    let desired = planning::desired_params(&c.spec)?;
    let plan = planning::plan_params(desired, &config, &proposals);
    let refused_before = previous.as_ref().and_then(|p| p.refused_params.as_deref())
        == Some(desired.to_string().as_str());
    let mut submitted = false;
    let (message, refused) = match plan {
        ParamsPlan::Settled => (None, None),
        ParamsPlan::Proposed(id) => (
            Some(format!("proposal {id} proposes the spec's parameters")),
            None,
        ),
        ParamsPlan::Wait(why) => (Some(why), None),
        ParamsPlan::Propose(_) if refused_before => (
            previous.as_ref().and_then(|p| p.message.clone()),
            Some(desired.to_string()),
        ),
        ParamsPlan::Propose(update) => {
            submitted = true;
            match propose(ctx, c, &host, &config, Change::UpdateParams(update)).await? {
                Proposed::Applied(msg) => {
                    info!(%desired, "proposed new chain parameters");
                    ctx.event(
                        c,
                        EventType::Normal,
                        "ParamsProposed",
                        "ProposeParams",
                        format!("Proposed {desired}: {msg}"),
                    )
                    .await;
                    (Some(msg), None)
                }
                Proposed::Refused(msg) => {
                    ctx.event(
                        c,
                        EventType::Warning,
                        "ParamsRefused",
                        "ProposeParams",
                        format!("The chain refused {desired}: {msg}"),
                    )
                    .await;
                    (Some(msg), Some(desired.to_string()))
                }
                Proposed::NotPossible(msg) => (Some(msg), None),
            }
        }
    };
    // What the proposal changed, as the chain now reports it.
    let (config, proposals) = if submitted {
        match (
            ctx.chain.config(&host).await,
            ctx.chain.proposals(&host).await,
        ) {
            (Ok(c), Ok(p)) => (c, p),
            _ => (config, proposals),
        }
    } else {
        (config, proposals)
    };
    let mut status = planning::chain_config_status(&config, &proposals, message);
    status.refused_params = refused;
    Ok(Some(status))
}

/// What became of a proposal.
pub enum Proposed {
    Applied(String),
    Refused(String),
    /// The operator cannot sign it (no consortium admin it holds the key of).
    NotPossible(String),
}

/// Signs `change` with the consortium admin's key (the founder the chain
/// names as consortium admin; its Secret in its namespace) and submits it.
pub async fn propose(
    ctx: &Context,
    c: &Consortium,
    host: &str,
    config: &GetConfigResponse,
    change: Change,
) -> Result<Proposed> {
    let chain = config.config.clone().unwrap_or_default();
    let admin = chain
        .admission
        .as_ref()
        .map(|a| a.consortium_admin.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| chain.members.first().map(|m| m.name.clone()));
    let Some(admin) = admin else {
        return Ok(Proposed::NotPossible(
            "the chain has no members: its genesis predates on-chain configuration, which therefore cannot change".into(),
        ));
    };
    let Some(founder) = c.spec.founders.iter().find(|f| f.name == admin) else {
        return Ok(Proposed::NotPossible(format!(
            "the consortium admin {admin} is not a founder of this Consortium"
        )));
    };
    let Some(key) = admin_key(ctx, &founder.name, &founder.namespace).await? else {
        return Ok(Proposed::NotPossible(format!(
            "the consortium admin's key Secret {}/{} is missing",
            founder.namespace,
            names::secret(&founder.name)
        )));
    };
    let on_chain = chain
        .members
        .iter()
        .find(|m| m.name == admin)
        .map(|m| m.admin_key.clone());
    if on_chain.as_deref() != Some(key.verifying_key().as_bytes().as_slice()) {
        return Ok(Proposed::NotPossible(format!(
            "the admin key in {}/{} is not the one the chain knows for {admin}",
            founder.namespace,
            names::secret(&founder.name)
        )));
    }
    match ctx
        .chain
        .submit_config(host, &key, &c.spec.chain_id, change)
        .await
    {
        Ok(outcome) if outcome.applied => Ok(Proposed::Applied(outcome.message)),
        Ok(outcome) => Ok(Proposed::Refused(outcome.message)),
        Err(e) if is_refusal(&e) => Ok(Proposed::Refused(e.to_string())),
        Err(e) => {
            warn!(consortium = %c.name_any(), error = %e, "configuration transaction failed");
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ValidatorStatus;
    use crate::probe::NodeReport;

    #[test]
    fn refusals_are_told_apart_from_unreachable_nodes() {
        let rpc = |status| ChainError::Rpc {
            host: "h".into(),
            status,
        };
        assert!(is_refusal(&rpc(tonic::Status::failed_precondition(
            "configuration refused"
        ))));
        assert!(is_refusal(&rpc(tonic::Status::permission_denied(
            "not authorized"
        ))));
        assert!(!is_refusal(&rpc(tonic::Status::unavailable("overloaded"))));
        assert!(!is_refusal(&ChainError::Unreachable {
            host: "h".into(),
            reason: "dns".into()
        }));
    }

    #[test]
    fn the_first_answering_validator_is_asked() {
        let obs = |name: &str, answered: bool| Observation {
            status: ValidatorStatus {
                name: name.into(),
                peer_address: format!("{name}.org1-nodes.org1.svc.cluster.local:7051"),
                ..Default::default()
            },
            report: answered.then(NodeReport::default),
        };
        assert_eq!(
            reachable_host(&[obs("org1-0", false), obs("org1-1", true)]).as_deref(),
            Some("org1-1.org1-nodes.org1.svc.cluster.local")
        );
        assert_eq!(reachable_host(&[obs("org1-0", false)]), None);
    }
}
