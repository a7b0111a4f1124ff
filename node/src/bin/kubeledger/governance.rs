//! `kubeledger member ...` and `kubeledger config ...`: consortium
//! membership and chain parameters, changed by configuration transactions
//! signed with a member's admin key (`--key`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use kubeledger_node::client::Client;
use kubeledger_node::crypto::keys;
use kubeledger_node::proto::{self, config_change::Change};

use crate::output::Output;
use crate::query::{client_key, explain_client};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Propose to admit a member organisation with its nodes.
    Propose(ProposeArgs),
    /// Vote on an open proposal (admission, removal or parameters).
    Vote {
        proposal: u64,
        /// Vote against (the default is for).
        #[arg(long)]
        reject: bool,
    },
    /// Members, then proposals with their ballots and state.
    List {
        /// Only proposals in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// Propose to remove a member.
    Remove { member: String },
}

#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// Member name (1-63 of a-z, 0-9, '.', '-').
    #[arg(long)]
    pub member: String,
    #[arg(long, default_value = "")]
    pub organization: String,
    /// The new member's admin public key (hex), or a key file whose public
    /// key to use.
    #[arg(long)]
    pub admin_key: String,
    /// A node as NAME=PUBLIC_KEY_HEX@HOST:PORT (repeatable).
    #[arg(long = "node", required = true)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    Open,
    Approved,
    Rejected,
    Expired,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// The configuration in force (or after block --at-height).
    Show {
        #[arg(long, default_value_t = 0)]
        at_height: u64,
    },
    /// Propose new chain parameters; they apply from a height announced
    /// when the proposal is approved, on every replica, without restarts.
    Set {
        /// e.g. 200ms or 1s.
        #[arg(long, value_parser = humantime::parse_duration)]
        block_interval: Option<Duration>,
        #[arg(long)]
        max_block_txs: Option<u32>,
        #[arg(long)]
        max_block_bytes: Option<u64>,
        /// Request / view-change timeout of the replicas, e.g. 3s.
        #[arg(long, value_parser = humantime::parse_duration)]
        view_change_timeout: Option<Duration>,
    },
}

/// A public key given as hex or as a key file.
fn public_key(arg: &str) -> Result<Vec<u8>> {
    if let Ok(k) = keys::parse_public(arg) {
        return Ok(k.to_bytes().to_vec());
    }
    let path = PathBuf::from(arg);
    let key = keys::load(&path)
        .with_context(|| format!("{arg:?} is neither a hex public key nor a readable key file"))?;
    Ok(key.verifying_key().to_bytes().to_vec())
}

fn parse_node(spec: &str) -> Result<proto::NodeInfo> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--node {spec:?} must be NAME=PUBLIC_KEY@HOST:PORT"))?;
    let (key, addr) = rest
        .split_once('@')
        .ok_or_else(|| anyhow!("--node {spec:?} must be NAME=PUBLIC_KEY@HOST:PORT"))?;
    Ok(proto::NodeInfo {
        name: name.to_owned(),
        public_key: public_key(key)?,
        peer_address: addr.to_owned(),
    })
}

pub(crate) async fn submit(
    endpoint: &str,
    key: Option<PathBuf>,
    change: Change,
    output: Output,
) -> Result<()> {
    let key = client_key(key)?;
    let mut client = Client::connect(endpoint).await?;
    let (committed, outcome) = client
        .submit_config(&key, change, WAIT)
        .await
        .map_err(explain_client)?;
    let id = hex::encode(&committed.tx_id);
    output.print(
        &json!({"tx_id": id, "height": committed.height, "applied": outcome.applied,
                "proposal_id": outcome.proposal_id, "message": outcome.message}),
        || {
            format!(
                "committed {id} at height {}: {}",
                committed.height, outcome.message
            )
        },
    );
    if !outcome.applied {
        bail!(
            "the configuration change was not applied: {}",
            outcome.message
        );
    }
    Ok(())
}

pub async fn member(
    endpoint: &str,
    key: Option<PathBuf>,
    command: MemberCommand,
    output: Output,
) -> Result<()> {
    match command {
        MemberCommand::Propose(a) => {
            let nodes = a
                .nodes
                .iter()
                .map(|n| parse_node(n))
                .collect::<Result<_>>()?;
            let change = Change::Admit(proto::AdmitMember {
                member: a.member,
                organization: a.organization,
                admin_key: public_key(&a.admin_key)?,
                nodes,
            });
            submit(endpoint, key, change, output).await
        }
        MemberCommand::Vote { proposal, reject } => {
            let change = Change::Vote(proto::Vote {
                proposal_id: proposal,
                approve: !reject,
            });
            submit(endpoint, key, change, output).await
        }
        MemberCommand::Remove { member } => {
            submit(
                endpoint,
                key,
                Change::Remove(proto::RemoveMember { member }),
                output,
            )
            .await
        }
        MemberCommand::List { state } => list(endpoint, state, output).await,
    }
}

fn state_name(state: i32) -> &'static str {
    match proto::ProposalState::try_from(state) {
        Ok(proto::ProposalState::Open) => "Open",
        Ok(proto::ProposalState::Approved) => "Approved",
        Ok(proto::ProposalState::Rejected) => "Rejected",
        Ok(proto::ProposalState::Expired) => "Expired",
        _ => "Unknown",
    }
}

fn describe_change(change: Option<&proto::ConfigChange>) -> Value {
    match change.and_then(|c| c.change.as_ref()) {
        Some(Change::Admit(a)) => json!({"admit": {
            "member": a.member, "organization": a.organization,
            "admin_key": hex::encode(&a.admin_key),
            "nodes": a.nodes.iter().map(node_json).collect::<Vec<_>>()}}),
        Some(Change::Remove(r)) => json!({"remove": {"member": r.member}}),
        Some(Change::UpdateParams(u)) => json!({"update_params": {
            "block_interval_ms": u.block_interval_ms, "max_block_txs": u.max_block_txs,
            "max_block_bytes": u.max_block_bytes,
            "view_change_timeout_ms": u.view_change_timeout_ms}}),
        Some(Change::Vote(v)) => {
            json!({"vote": {"proposal_id": v.proposal_id, "approve": v.approve}})
        }
        Some(Change::InstallCode(i)) => json!({"install_code": {
            "bytes": i.code.len(),
            "code_hash": hex::encode(kubeledger_contract::code_hash(&i.code))}}),
        Some(Change::DeployContract(d)) => json!({"deploy_contract": {
            "name": d.name, "code_hash": hex::encode(&d.code_hash), "version": d.version,
            "init_input": hex::encode(&d.init_input)}}),
        None => Value::Null,
    }
}

fn node_json(n: &proto::NodeInfo) -> Value {
    json!({"name": n.name, "public_key": hex::encode(&n.public_key), "peer_address": n.peer_address})
}

fn proposal_json(p: &proto::Proposal) -> Value {
    json!({
        "id": p.id, "state": state_name(p.state), "change": describe_change(p.change.as_ref()),
        "proposer": p.proposer, "created_height": p.created_height,
        "expires_ms": p.expires_ms, "decided_height": p.decided_height,
        "effective_height": p.effective_height, "threshold_percent": p.threshold_percent,
        "ballots": p.ballots.iter().map(|b| json!({"member": b.member, "approve": b.approve, "height": b.height})).collect::<Vec<_>>(),
        "reason": p.reason,
    })
}

async fn list(endpoint: &str, state: Option<StateArg>, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let config = client
        .inner
        .get_config(proto::GetConfigRequest { at_height: 0 })
        .await?
        .into_inner();
    let state = match state {
        None => proto::ProposalState::Unspecified,
        Some(StateArg::Open) => proto::ProposalState::Open,
        Some(StateArg::Approved) => proto::ProposalState::Approved,
        Some(StateArg::Rejected) => proto::ProposalState::Rejected,
        Some(StateArg::Expired) => proto::ProposalState::Expired,
    };
    let proposals = client
        .inner
        .list_proposals(proto::ListProposalsRequest {
            state: state as i32,
            limit: 0,
        })
        .await?
        .into_inner()
        .proposals;
    let members = config.config.map(|c| c.members).unwrap_or_default();
    output.print(
        &json!({
            "members": members.iter().map(|m| json!({"name": m.name, "organization": m.organization,
                "admin_key": hex::encode(&m.admin_key), "admitted_at": m.admitted_at,
                "nodes": m.nodes.iter().map(node_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "proposals": proposals.iter().map(proposal_json).collect::<Vec<_>>(),
        }),
        || {
            let mut out = format!("{} member(s)\n", members.len());
            for m in &members {
                let nodes: Vec<&str> = m.nodes.iter().map(|n| n.name.as_str()).collect();
                out.push_str(&format!(
                    "  {:<16} {:<24} nodes {}  admitted at height {}\n",
                    m.name,
                    m.organization,
                    nodes.join(","),
                    m.admitted_at
                ));
            }
            out.push_str(&format!("{} proposal(s)\n", proposals.len()));
            for p in &proposals {
                let yes = p.ballots.iter().filter(|b| b.approve).count();
                let no = p.ballots.len() - yes;
                out.push_str(&format!(
                    "  #{:<4} {:<9} by {:<12} {}  for {yes} / against {no} (threshold {}%){}\n",
                    p.id,
                    state_name(p.state),
                    p.proposer,
                    describe_change(p.change.as_ref()),
                    p.threshold_percent,
                    if p.effective_height > 0 {
                        format!(", in force from height {}", p.effective_height)
                    } else {
                        String::new()
                    }
                ));
            }
            out.trim_end().to_owned()
        },
    );
    Ok(())
}

pub async fn config(
    endpoint: &str,
    key: Option<PathBuf>,
    command: ConfigCommand,
    output: Output,
) -> Result<()> {
    match command {
        ConfigCommand::Show { at_height } => show(endpoint, at_height, output).await,
        ConfigCommand::Set {
            block_interval,
            max_block_txs,
            max_block_bytes,
            view_change_timeout,
        } => {
            let block_interval_ms = block_interval
                .map(|d| u32::try_from(d.as_millis()).context("block interval is too long"))
                .transpose()?;
            let view_change_timeout_ms = view_change_timeout
                .map(|d| u32::try_from(d.as_millis()).context("timeout is too long"))
                .transpose()?;
            if block_interval_ms.is_none()
                && max_block_txs.is_none()
                && max_block_bytes.is_none()
                && view_change_timeout_ms.is_none()
            {
                bail!(
                    "give at least one of --block-interval, --max-block-txs, --max-block-bytes, \
                     --view-change-timeout"
                );
            }
            let change = Change::UpdateParams(proto::UpdateParams {
                block_interval_ms,
                max_block_txs,
                max_block_bytes,
                view_change_timeout_ms,
            });
            submit(endpoint, key, change, output).await
        }
    }
}

async fn show(endpoint: &str, at_height: u64, output: Output) -> Result<()> {
    let mut client = Client::connect(endpoint).await?;
    let r = client
        .inner
        .get_config(proto::GetConfigRequest { at_height })
        .await?
        .into_inner();
    let c = r.config.unwrap_or_default();
    let p = r.effective_params.unwrap_or_default();
    let admission = c.admission.clone().unwrap_or_default();
    let mode = match admission.mode() {
        proto::AdmissionMode::Vote => "Vote",
        _ => "Automatic",
    };
    let comparator = match admission.comparator() {
        proto::VoteComparator::GreaterThan => "GreaterThan",
        _ => "AtLeast",
    };
    let scheduled = c.scheduled.as_ref().map(|s| {
        let sp = s.params.unwrap_or_default();
        json!({"from_height": s.from_height, "proposal_id": s.proposal_id,
               "block_interval_ms": sp.block_interval_ms, "max_block_txs": sp.max_block_txs,
               "max_block_bytes": sp.max_block_bytes})
    });
    output.print(
        &json!({
            "height": r.height, "version": c.version, "updated_height": c.updated_height,
            "params": {"block_interval_ms": p.block_interval_ms, "max_block_txs": p.max_block_txs,
                       "max_block_bytes": p.max_block_bytes, "max_tx_bytes": p.max_tx_bytes,
                       "checkpoint_interval": p.checkpoint_interval,
                       "view_change_timeout_ms": p.view_change_timeout_ms},
            "scheduled": scheduled,
            "admission": {"mode": mode, "threshold_percent": admission.threshold_percent,
                          "comparator": comparator, "expiry_ms": admission.expiry_ms,
                          "consortium_admin": admission.consortium_admin},
            "members": c.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            "validators": c.validators.iter().map(node_json).collect::<Vec<_>>(),
            "validators_from": c.validators_from,
            "scheduled_validators": c.scheduled_validators.as_ref().map(|s| json!({
                "from_height": s.from_height, "proposal_id": s.proposal_id,
                "validators": s.validators.iter().map(node_json).collect::<Vec<_>>()})),
        }),
        || {
            let mut out = format!(
                "configuration version {} (height {}, last changed at {})\n\
                 block interval {} ms, at most {} txs / {} bytes per block\n\
                 admission {mode}",
                c.version,
                r.height,
                c.updated_height,
                p.block_interval_ms,
                p.max_block_txs,
                p.max_block_bytes
            );
            if mode == "Vote" {
                out.push_str(&format!(
                    " ({comparator} {}%, proposals expire after {} ms)",
                    admission.threshold_percent, admission.expiry_ms
                ));
            }
            out.push_str(&format!(
                ", consortium admin {}\nmembers: {}",
                admission.consortium_admin,
                c.members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if let Some(s) = &c.scheduled {
                let sp = s.params.unwrap_or_default();
                out.push_str(&format!(
                    "\nscheduled by proposal {}: from height {}, block interval {} ms, {} txs / {} bytes per block",
                    s.proposal_id, s.from_height, sp.block_interval_ms, sp.max_block_txs, sp.max_block_bytes
                ));
            }
            let names = |v: &[kubeledger_node::proto::NodeInfo]| {
                v.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            };
            out.push_str(&format!(
                "\nvalidators since height {}: {}",
                c.validators_from,
                names(&c.validators)
            ));
            if let Some(s) = &c.scheduled_validators {
                out.push_str(&format!(
                    "\nvalidators from height {} (proposal {}): {}",
                    s.from_height,
                    s.proposal_id,
                    names(&s.validators)
                ));
            }
            out
        },
    );
    Ok(())
}
