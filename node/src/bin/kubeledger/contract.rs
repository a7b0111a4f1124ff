//! `kubeledger contract ...`: install code, propose a deployment (or an
//! upgrade), invoke an entry point through consensus, query one on a node,
//! list what is deployed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kubeledger_node::client::Client;
use kubeledger_node::proto::{self, config_change::Change};

use crate::output::Output;
use crate::query::{client_key, explain_client};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Subcommand)]
pub enum ContractCommand {
    /// Store code on chain under its SHA-256 (a WebAssembly binary, or
    /// WebAssembly text when the file ends in .wat); any member admin may.
    Install {
        #[arg(long)]
        code: PathBuf,
    },
    /// Propose to deploy a contract (version 1) or upgrade it (the next
    /// version) to installed code; on approval its `init` (or `upgrade`)
    /// runs with the given input.
    Deploy {
        #[arg(long)]
        name: String,
        /// The code, to take its hash (or --code-hash).
        #[arg(long, conflicts_with = "code_hash")]
        code: Option<PathBuf>,
        #[arg(long)]
        code_hash: Option<String>,
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Input of `init` (or `upgrade`), hex.
        #[arg(long, default_value = "")]
        init_hex: String,
    },
    /// Call an entry point through consensus (a transaction).
    Invoke(CallArgs),
    /// Call an entry point on this node only, without ordering; writes fail.
    Query(CallArgs),
    /// The contracts deployed.
    List,
}

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    pub contract: String,
    pub function: String,
    /// Input, hex.
    #[arg(long, default_value = "")]
    pub input_hex: String,
    /// Fuel the call may use (0: the node's default).
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
}

/// A contract's code: a binary, or text compiled here when it ends in .wat.
pub fn read_code(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "wat") {
        return wat::parse_file(path).with_context(|| format!("compile {}", path.display()));
    }
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn outcome_json(o: &proto::ContractOutcome) -> serde_json::Value {
    json!({
        "ok": o.ok, "output": hex::encode(&o.output), "failure_kind": o.failure_kind,
        "failure": o.failure, "fuel_used": o.fuel_used, "version": o.version,
        "events": o.events.iter().map(|e| json!({
            "topic": String::from_utf8_lossy(&e.topic), "data": hex::encode(&e.data)
        })).collect::<Vec<_>>(),
    })
}

fn outcome_text(o: &proto::ContractOutcome) -> String {
    if o.ok {
        format!(
            "ok, output {} ({} fuel, version {})",
            if o.output.is_empty() {
                "empty".to_owned()
            } else {
                hex::encode(&o.output)
            },
            o.fuel_used,
            o.version
        )
    } else {
        format!(
            "failed ({}): {} ({} fuel)",
            o.failure_kind, o.failure, o.fuel_used
        )
    }
}

pub async fn run(
    endpoint: &str,
    key: Option<PathBuf>,
    command: ContractCommand,
    output: Output,
) -> Result<()> {
    match command {
        ContractCommand::Install { code } => {
            let code = read_code(&code)?;
            crate::governance::submit(
                endpoint,
                key,
                Change::InstallCode(proto::InstallCode { code }),
                output,
            )
            .await
        }
        ContractCommand::Deploy {
            name,
            code,
            code_hash,
            version,
            init_hex,
        } => {
            let hash = match (code, code_hash) {
                (Some(path), _) => kubeledger_contract::code_hash(&read_code(&path)?).to_vec(),
                (None, Some(h)) => hex::decode(&h).context("--code-hash is not hex")?,
                (None, None) => bail!("give --code or --code-hash"),
            };
            let init_input = hex::decode(&init_hex).context("--init-hex is not hex")?;
            crate::governance::submit(
                endpoint,
                key,
                Change::DeployContract(proto::DeployContract {
                    name,
                    code_hash: hash,
                    version,
                    init_input,
                }),
                output,
            )
            .await
        }
        ContractCommand::Invoke(a) => {
            let input = hex::decode(&a.input_hex).context("--input-hex is not hex")?;
            let key = client_key(key)?;
            let mut client = Client::connect(endpoint).await?;
            let call = proto::ContractCall {
                contract: a.contract,
                function: a.function,
                input,
                fuel: a.fuel,
            };
            let (committed, outcome) = client
                .submit_call(&key, call, WAIT)
                .await
                .map_err(explain_client)?;
            let id = hex::encode(&committed.tx_id);
            output.print(
                &json!({"tx_id": id, "height": committed.height, "outcome": outcome_json(&outcome)}),
                || {
                    format!(
                        "committed {id} at height {}: {}",
                        committed.height,
                        outcome_text(&outcome)
                    )
                },
            );
            if !outcome.ok {
                bail!("the call failed: {}", outcome.failure);
            }
            Ok(())
        }
        ContractCommand::Query(a) => {
            let input = hex::decode(&a.input_hex).context("--input-hex is not hex")?;
            let mut client = Client::connect(endpoint).await?;
            let r = client
                .inner
                .query_contract(proto::QueryContractRequest {
                    contract: a.contract,
                    function: a.function,
                    input,
                    caller: Vec::new(),
                    fuel: a.fuel,
                })
                .await
                .context("query")?
                .into_inner();
            let outcome = r.outcome.unwrap_or_default();
            output.print(
                &json!({"height": r.height, "outcome": outcome_json(&outcome)}),
                || format!("at height {}: {}", r.height, outcome_text(&outcome)),
            );
            if !outcome.ok {
                bail!("the query failed: {}", outcome.failure);
            }
            Ok(())
        }
        ContractCommand::List => {
            let mut client = Client::connect(endpoint).await?;
            let config = client
                .inner
                .get_config(proto::GetConfigRequest::default())
                .await
                .context("get config")?
                .into_inner()
                .config
                .unwrap_or_default();
            let list: Vec<_> = config
                .contracts
                .iter()
                .map(|c| {
                    json!({"name": c.name, "version": c.version,
                           "code_hash": hex::encode(&c.code_hash),
                           "deployed_height": c.deployed_height, "proposal_id": c.proposal_id})
                })
                .collect();
            output.print(&json!({"contracts": list}), || {
                if config.contracts.is_empty() {
                    return "no contracts deployed".to_owned();
                }
                config
                    .contracts
                    .iter()
                    .map(|c| {
                        format!(
                            "{}  version {}  code {}  deployed at height {} (proposal {})",
                            c.name,
                            c.version,
                            hex::encode(&c.code_hash),
                            c.deployed_height,
                            c.proposal_id
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}
