//! `kubeledger-operator`: `run` the controllers, print the `crd`s, or `render`
//! what the operator would create.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kubeledger_operator::build::Settings;
use kubeledger_operator::controller::{self, Context};
use kubeledger_operator::leader::{self, LeaseConfig};
use kubeledger_operator::metrics::Metrics;
use kubeledger_operator::probe::GrpcProber;
use kubeledger_operator::{crd, render, server, telemetry};

#[derive(Parser)]
#[command(
    name = "kubeledger-operator",
    version,
    about = "Kubernetes operator for kubeledger consortia"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print every object the operator would create for the given Consortium and
    /// Member YAML (multi-document), without a cluster.
    Render {
        /// YAML file with Consortium and Member documents (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, default_value_t = Settings::default().node_image)]
        node_image: String,
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Node image for Consortia that do not name one.
    #[arg(long, env = "KUBELEDGER_NODE_IMAGE", default_value_t = Settings::default().node_image)]
    node_image: String,
    #[arg(
        long,
        env = "KUBELEDGER_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "KUBELEDGER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease (for several replicas).
    #[arg(long, env = "KUBELEDGER_LEADER_ELECT")]
    leader_elect: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubeledger-system")]
    lease_namespace: String,
    #[arg(long, default_value = "kubeledger-operator")]
    lease_name: String,
    /// Log as JSON.
    #[arg(long, env = "KUBELEDGER_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crds_yaml()?);
            Ok(())
        }
        Command::Render {
            file,
            node_image,
            cluster_domain,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let settings = Settings {
                node_image,
                cluster_domain,
            };
            let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or_default();
            print!("{}", render::render_yaml(&text, &settings, now)?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_json);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let metrics = Arc::new(Metrics::default());
    let addr = server::spawn(args.metrics_addr, metrics.clone())
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tracing::info!(%addr, "serving /metrics and /healthz");

    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    if args.leader_elect {
        let cfg = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("kubeledger-operator-{}", std::process::id())),
            duration: Duration::from_secs(15),
        };
        tracing::info!(identity = %cfg.identity, "waiting for the leader lease");
        leader::acquire(&client, &cfg).await;
        metrics.leader.set(1);
        tracing::info!("became leader");
        let c = client.clone();
        tokio::spawn(async move {
            leader::hold(c, cfg).await;
            tracing::error!("lost the leader lease; stopping");
            let _ = lost_tx.send(true);
        });
    } else {
        metrics.leader.set(1);
    }

    let settings = Settings {
        node_image: args.node_image,
        cluster_domain: args.cluster_domain,
    };
    let ctx = Arc::new(Context::new(
        client,
        settings,
        metrics,
        Arc::new(GrpcProber::default()),
    ));
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = rx.wait_for(|lost| *lost) => {}
        }
    };
    tokio::join!(
        controller::member::run(ctx.clone(), stop(lost_rx.clone())),
        controller::consortium::run(ctx, stop(lost_rx.clone())),
    );
    if *lost_rx.borrow() {
        anyhow::bail!("lost the leader lease");
    }
    Ok(())
}
