//! Prometheus metrics of the node and the HTTP endpoint serving them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    pub height: Gauge,
    pub blocks_committed: Counter,
    pub txs_committed: Counter,
    pub txs_rejected: Family<ReasonLabel, Counter>,
    pub mempool_txs: Gauge,
    /// Transactions a backup sent the primary again because a block with
    /// room left out its oldest one.
    pub txs_forwarded: Counter,
    pub block_commit_seconds: Histogram,
    pub block_txs: Histogram,
    pub tx_commit_latency_seconds: Histogram,
    pub signature_batch_seconds: Histogram,
    pub signatures_verified: Family<PathLabel, Counter>,
    pub consensus_view: Gauge,
    /// Seconds this replica waits for progress before it suspects the primary.
    pub request_timeout: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub view_changes: Counter,
    /// View changes this replica started because the primary kept leaving
    /// a request out of blocks with room for it.
    pub censorship_suspected: Counter,
    pub checkpoints_stable: Counter,
    pub peers_connected: Gauge,
    pub corrupt: Gauge,
    pub consensus_messages: Family<DirectionLabel, Counter>,
    pub state_transfers: Counter,
    /// Commit certificates a state-transfer source served that did not
    /// verify (not stored, not served on).
    pub certificates_refused: Counter,
    pub state_transfer_bytes: Counter,
    /// Snapshots taken, scheduled or on request, by outcome.
    pub backups: Family<OutcomeLabel, Counter>,
    pub last_backup_height: Gauge,
    pub last_backup_timestamp_seconds: Gauge,
    /// Per snapshot: how long commits waited, and how long it took.
    pub backup_commit_pause_seconds: Histogram,
    pub backup_seconds: Histogram,
    /// Contract calls committed, by outcome (`ok` or the failure kind).
    pub contract_calls: Family<OutcomeKindLabel, Counter>,
    pub contract_call_fuel: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeKindLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// Where a client signature was checked: `client` (submitted to this
/// node), `peer` (gossiped by another replica) or `proposal` (in a block
/// proposed by the primary, not seen before).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `received`, `sent` or `dropped` (outbound queue full or undecodable).
    pub direction: &'static str,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubeledger");
        let height = Gauge::default();
        registry.register(
            "height",
            "Height of the last committed block",
            height.clone(),
        );
        let blocks_committed = Counter::default();
        registry.register(
            "blocks_committed",
            "Blocks committed",
            blocks_committed.clone(),
        );
        let txs_committed = Counter::default();
        registry.register(
            "txs_committed",
            "Transactions committed",
            txs_committed.clone(),
        );
        let txs_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "txs_rejected",
            "Transactions refused at admission, by reason",
            txs_rejected.clone(),
        );
        let mempool_txs = Gauge::default();
        registry.register(
            "mempool_txs",
            "Pending transactions (queued and in flight)",
            mempool_txs.clone(),
        );
        let txs_forwarded = Counter::default();
        registry.register(
            "txs_forwarded",
            "Transactions sent to the primary again after a block with room left out the oldest pending one",
            txs_forwarded.clone(),
        );
        let block_commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "block_commit_seconds",
            "Time to execute a block and write it durably",
            block_commit_seconds.clone(),
        );
        let block_txs = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        registry.register("block_txs", "Transactions per block", block_txs.clone());
        let tx_commit_latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "tx_commit_latency_seconds",
            "Time from admission of a transaction to the commit of its block",
            tx_commit_latency_seconds.clone(),
        );
        let signature_batch_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "signature_batch_seconds",
            "Time to verify one batch of client signatures",
            signature_batch_seconds.clone(),
        );
        let signatures_verified = Family::<PathLabel, Counter>::default();
        registry.register(
            "signatures_verified",
            "Client signatures verified, by where the transaction came from",
            signatures_verified.clone(),
        );
        let consensus_view = Gauge::default();
        registry.register(
            "consensus_view",
            "Current PBFT view",
            consensus_view.clone(),
        );
        let request_timeout = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "consensus_request_timeout",
            "Time this replica waits for progress before it suspects the primary: the view-change timeout, stretched by recent view changes",
            prometheus_client::registry::Unit::Seconds,
            request_timeout.clone(),
        );
        let view_changes = Counter::default();
        registry.register(
            "view_changes",
            "PBFT views installed after the first",
            view_changes.clone(),
        );
        let censorship_suspected = Counter::default();
        registry.register(
            "censorship_suspected",
            "View changes this replica started because the primary kept leaving out a request that committed blocks had room for",
            censorship_suspected.clone(),
        );
        let checkpoints_stable = Counter::default();
        registry.register(
            "checkpoints",
            "PBFT checkpoints that became stable",
            checkpoints_stable.clone(),
        );
        let peers_connected = Gauge::default();
        registry.register(
            "peers_connected",
            "Peers with an open outbound stream",
            peers_connected.clone(),
        );
        let corrupt = Gauge::default();
        registry.register(
            "corrupt",
            "1 once this replica found its own storage or state wrong (it stops voting)",
            corrupt.clone(),
        );
        let consensus_messages = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "consensus_messages",
            "PBFT messages, by direction",
            consensus_messages.clone(),
        );
        let state_transfers = Counter::default();
        registry.register(
            "state_transfers",
            "Completed state transfers from peers",
            state_transfers.clone(),
        );
        let state_transfer_bytes = Counter::default();
        registry.register(
            "state_transfer_received_bytes",
            "Bytes of certified blocks received in state transfers",
            state_transfer_bytes.clone(),
        );
        let certificates_refused = Counter::default();
        registry.register(
            "state_transfer_certificates_refused",
            "Commit certificates served in state transfer that did not verify, dropped",
            certificates_refused.clone(),
        );
        let backups = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "backups",
            "Snapshots taken (scheduled backups and on request), by outcome",
            backups.clone(),
        );
        let last_backup_height = Gauge::default();
        registry.register(
            "last_backup_height",
            "Height held by the newest snapshot this node took or keeps in its backup directory",
            last_backup_height.clone(),
        );
        let last_backup_timestamp_seconds = Gauge::default();
        registry.register(
            "last_backup_timestamp_seconds",
            "Unix time the newest snapshot was taken, 0 when none",
            last_backup_timestamp_seconds.clone(),
        );
        let backup_commit_pause_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "backup_commit_pause_seconds",
            "Time commits waited while a snapshot's database checkpoint was taken",
            backup_commit_pause_seconds.clone(),
        );
        let backup_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "backup_seconds",
            "Time a snapshot took, the copy to its directory included",
            backup_seconds.clone(),
        );
        let contract_calls = Family::<OutcomeKindLabel, Counter>::default();
        registry.register(
            "contract_calls",
            "Contract calls committed, by outcome (ok, or why it failed)",
            contract_calls.clone(),
        );
        let contract_call_fuel = Histogram::new(exponential_buckets(1000.0, 4.0, 10));
        registry.register(
            "contract_call_fuel",
            "Fuel used per committed contract call",
            contract_call_fuel.clone(),
        );
        Self {
            registry,
            contract_calls,
            contract_call_fuel,
            backup_commit_pause_seconds,
            backup_seconds,
            backups,
            last_backup_height,
            last_backup_timestamp_seconds,
            height,
            consensus_view,
            request_timeout,
            view_changes,
            censorship_suspected,
            checkpoints_stable,
            peers_connected,
            corrupt,
            consensus_messages,
            state_transfers,
            certificates_refused,
            state_transfer_bytes,
            blocks_committed,
            txs_committed,
            txs_rejected,
            mempool_txs,
            txs_forwarded,
            block_commit_seconds,
            block_txs,
            tx_commit_latency_seconds,
            signature_batch_seconds,
            signatures_verified,
        }
    }

    /// Records one batch of `n` signature checks taking `seconds`.
    pub fn signatures_checked(&self, path: &'static str, n: usize, seconds: f64) {
        self.signature_batch_seconds.observe(seconds);
        self.signatures_verified
            .get_or_create(&PathLabel { path })
            .inc_by(n as u64);
    }

    pub fn consensus_message(&self, direction: &'static str, n: u64) {
        self.consensus_messages
            .get_or_create(&DirectionLabel { direction })
            .inc_by(n);
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected_many(reason, 1);
    }

    pub fn rejected_many(&self, reason: &'static str, n: u64) {
        self.txs_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Health as the HTTP endpoints report it.
pub trait HealthSource: Send + Sync + 'static {
    /// `Err(reason)` when the process should be restarted.
    fn live(&self) -> Result<(), String>;
    /// `Err(reason)` when the node should get no client traffic.
    fn ready(&self) -> Result<(), String>;
    fn metrics(&self) -> &NodeMetrics;
}

async fn metrics_handler<H: HealthSource>(State(h): State<Arc<H>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics().encode(),
    )
}

async fn live_handler<H: HealthSource>(State(h): State<Arc<H>>) -> impl IntoResponse {
    match h.live() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn ready_handler<H: HealthSource>(State(h): State<Arc<H>>) -> impl IntoResponse {
    match h.ready() {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve<H: HealthSource>(
    listener: tokio::net::TcpListener,
    health: Arc<H>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler::<H>))
        .route("/healthz", get(live_handler::<H>))
        .route("/readyz", get(ready_handler::<H>))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics address, with a clear error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}
