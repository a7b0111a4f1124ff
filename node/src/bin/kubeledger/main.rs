//! `kubeledger`: run nodes and a local consortium, and talk to a node.

mod bench;
mod contract;
mod governance;
mod memory;
mod node;
mod output;
mod query;
mod snapshot;
mod up;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use output::Output;

/// mimalloc keeps freed pages for reuse. With the system allocator, the
/// large buffers of blocks, proposals and write batches went back to the
/// kernel and came back as fresh zeroed pages: about a tenth of the CPU
/// of a loaded replica was page faults and page clearing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kubeledger",
    version,
    about = "kubeledger: a consortium ledger with PBFT, run on Kubernetes"
)]
struct Cli {
    /// Node gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "KUBELEDGER_ENDPOINT",
        default_value = "http://127.0.0.1:7050"
    )]
    endpoint: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Client signing key file (created on first use if missing). Its own
    /// id, so that it never collides with the `key` of put, get and history.
    #[arg(long = "key", global = true, env = "KUBELEDGER_KEY")]
    key_file: Option<PathBuf>,
    /// Log filter, e.g. "info" or "kubeledger_node=debug".
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key file and print its public key.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long, default_value = "kubeledger.key")]
        out: PathBuf,
    },
    /// Write a value and wait until it is committed.
    Put(query::PutArgs),
    /// Delete a key (recorded in its history) and wait until committed.
    Delete(query::DeleteArgs),
    /// Read the current value of a key.
    Get { key: String },
    /// Every version of a key, oldest first.
    History { key: String },
    /// Show a block by height or hash.
    Block { id: String },
    /// Show a transaction by id.
    Tx { id: String },
    /// Node status.
    Status,
    /// Follow committed blocks, optionally only keys under a prefix.
    Watch {
        #[arg(long, default_value = "")]
        prefix: String,
        /// First height (default: the next block).
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Fetch the chain from genesis and verify hash links and merkle roots.
    Verify,
    /// Drive load with signed transactions and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Consortium members and proposals: propose, vote, list, remove
    /// (signed with the member admin key given by --key).
    Member {
        #[command(subcommand)]
        command: governance::MemberCommand,
    },
    /// Chain parameters: show them, or propose new ones (--key: a member
    /// admin key).
    Config {
        #[command(subcommand)]
        command: governance::ConfigCommand,
    },
    /// Contracts: install code, deploy or upgrade (governed), invoke,
    /// query, list (--key: a member admin key to install and deploy, a
    /// client key to invoke).
    Contract {
        #[command(subcommand)]
        command: contract::ContractCommand,
    },
    /// Snapshots: take one of a running node, or seed a stopped node from one.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Start a local consortium on loopback and stay in the foreground.
    Up(up::UpArgs),
    /// Run one node.
    Node(node::NodeArgs),
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> Result<()> {
    memory::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => {
                init_tracing(&cli.log, args.log_json);
                node::run(args).await
            }
            Command::Up(args) => {
                init_tracing(&cli.log, false);
                up::run(args, cli.output).await
            }
            Command::Keygen { out } => query::keygen(&out, cli.output),
            Command::Put(args) => query::put(&cli.endpoint, cli.key_file, args, cli.output).await,
            Command::Delete(args) => {
                query::delete(&cli.endpoint, cli.key_file, args, cli.output).await
            }
            Command::Get { key } => query::get(&cli.endpoint, &key, cli.output).await,
            Command::History { key } => query::history(&cli.endpoint, &key, cli.output).await,
            Command::Block { id } => query::block(&cli.endpoint, &id, cli.output).await,
            Command::Tx { id } => query::tx(&cli.endpoint, &id, cli.output).await,
            Command::Status => query::status(&cli.endpoint, cli.output).await,
            Command::Watch { prefix, from } => {
                query::watch(&cli.endpoint, &prefix, from, cli.output).await
            }
            Command::Verify => query::verify(&cli.endpoint, cli.output).await,
            Command::Bench(args) => bench::run(&cli.endpoint, args, cli.output).await,
            Command::Member { command } => {
                governance::member(&cli.endpoint, cli.key_file, command, cli.output).await
            }
            Command::Snapshot { command } => {
                snapshot::run(&cli.endpoint, command, cli.output).await
            }
            Command::Contract { command } => {
                contract::run(&cli.endpoint, cli.key_file, command, cli.output).await
            }
            Command::Config { command } => {
                governance::config(&cli.endpoint, cli.key_file, command, cli.output).await
            }
        }
    })
}
