//! The `kubeledger.v1.Ledger` service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::events;
use crate::ledger::history;
use crate::node_state::{admission, NodeState};
use crate::proto::{self, ledger_server::Ledger as LedgerApi, RejectReason, TxBody};
use crate::tx::{Rejection, TxId};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(300);
const SUBSCRIBER_BUFFER: usize = 64;
/// Transactions one `SubmitBatch` may hold (`BATCH_TOO_LARGE` beyond): what
/// one request makes the node verify, queue and answer at once.
pub const MAX_BATCH_TXS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LedgerService {
    state: Arc<NodeState>,
}

impl LedgerService {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

/// 0 on a node that replayed from genesis; the block after its sync point
/// on one that joined by state sync.
fn lowest_full_block(ledger: &crate::ledger::Ledger) -> u64 {
    match ledger.sync_base() {
        Ok(0) | Err(_) => 0,
        Ok(base) => base + 1,
    }
}

fn parse_tx_id(bytes: &[u8]) -> Result<TxId, Status> {
    TxId::from_slice(bytes).ok_or_else(|| {
        Status::invalid_argument(format!("tx_id must be 32 bytes, got {}", bytes.len()))
    })
}

/// A request without its transaction: refused as malformed and counted
/// like every other refusal.
fn missing_tx(metrics: &crate::metrics::NodeMetrics) -> Status {
    let r = Rejection::new(RejectReason::Malformed, "request carries no transaction");
    metrics.rejected(r.label());
    r.to_status()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::BlockEvent, Status>> + Send>>;

#[tonic::async_trait]
impl LedgerApi for LedgerService {
    async fn submit(
        &self,
        request: Request<proto::SubmitRequest>,
    ) -> Result<Response<proto::SubmitResponse>, Status> {
        let tx = request
            .into_inner()
            .tx
            .ok_or_else(|| missing_tx(&self.state.metrics))?;
        let mut results = admission::admit(&self.state, vec![tx], admission::Origin::Client).await;
        match results.pop() {
            Some(Ok(id)) => Ok(Response::new(proto::SubmitResponse {
                tx_id: id.0.to_vec(),
            })),
            Some(Err(rejection)) => Err(rejection.to_status()),
            None => Err(Status::internal("admission returned no result")),
        }
    }

    async fn submit_batch(
        &self,
        request: Request<proto::SubmitBatchRequest>,
    ) -> Result<Response<proto::SubmitBatchResponse>, Status> {
        let txs = request.into_inner().txs;
        if txs.len() > MAX_BATCH_TXS {
            let rejection = Rejection::new(
                RejectReason::BatchTooLarge,
                format!(
                    "a batch holds at most {MAX_BATCH_TXS} transactions; this one holds {}: send it in smaller batches",
                    txs.len()
                ),
            );
            self.state
                .metrics
                .rejected_many(rejection.label(), txs.len() as u64);
            return Err(rejection.to_status());
        }
        let ids: Vec<Vec<u8>> = txs
            .iter()
            .map(|t| crate::crypto::sha256(&t.body).to_vec())
            .collect();
        let results = admission::admit(&self.state, txs, admission::Origin::Client).await;
        let results = results
            .into_iter()
            .zip(ids)
            .map(|(r, id)| match r {
                Ok(id) => proto::SubmitResult {
                    tx_id: id.0.to_vec(),
                    reject_reason: RejectReason::Unspecified as i32,
                    message: String::new(),
                },
                Err(rejection) => proto::SubmitResult {
                    tx_id: id,
                    reject_reason: rejection.reason as i32,
                    message: rejection.message,
                },
            })
            .collect();
        Ok(Response::new(proto::SubmitBatchResponse { results }))
    }

    async fn submit_and_wait(
        &self,
        request: Request<proto::SubmitAndWaitRequest>,
    ) -> Result<Response<proto::SubmitAndWaitResponse>, Status> {
        let request = request.into_inner();
        let tx = request.tx.ok_or_else(|| missing_tx(&self.state.metrics))?;
        let timeout = match request.timeout_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_WAIT),
        };
        let id = crate::tx::envelope::tx_id(&tx);
        // Wait first, submit second: the commit cannot slip by unseen.
        let waiter = self.state.feed.wait_for(id);
        match admission::admit(&self.state, vec![tx], admission::Origin::Client)
            .await
            .pop()
        {
            Some(Ok(_)) => {}
            Some(Err(rejection)) => {
                self.state.feed.forget(&id);
                return Err(rejection.to_status());
            }
            None => return Err(Status::internal("admission returned no result")),
        }
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(info)) => Ok(Response::new(proto::SubmitAndWaitResponse {
                tx_id: id.0.to_vec(),
                height: info.height,
                tx_index: info.index,
                block_hash: info.block_hash.to_vec(),
            })),
            Ok(Err(_)) => Err(Status::unavailable(format!(
                "transaction {id} was accepted but the node stopped before it committed; \
                 query it with GetTransaction"
            ))),
            Err(_) => {
                self.state.feed.forget(&id);
                Err(Status::deadline_exceeded(format!(
                    "transaction {id} is accepted but not committed after {} ms; \
                     query it with GetTransaction",
                    timeout.as_millis()
                )))
            }
        }
    }

    async fn get_transaction(
        &self,
        request: Request<proto::GetTransactionRequest>,
    ) -> Result<Response<proto::GetTransactionResponse>, Status> {
        let id = parse_tx_id(&request.into_inner().tx_id)?;
        let ledger = self.state.ledger.clone();
        let found = self
            .state
            .reads
            .run("transaction lookup", move || ledger.transaction(&id))
            .await?;
        if let Some(c) = found {
            let body = TxBody::decode(c.tx.body.clone()).ok();
            return Ok(Response::new(proto::GetTransactionResponse {
                state: proto::TxState::Committed as i32,
                tx: Some(c.tx),
                body,
                height: c.location.height,
                tx_index: c.location.index,
                block_hash: c.block_hash.to_vec(),
                block_timestamp_ms: c.block_timestamp_ms,
            }));
        }
        if self.state.mempool.is_pending(&id) {
            return Ok(Response::new(proto::GetTransactionResponse {
                state: proto::TxState::Pending as i32,
                ..Default::default()
            }));
        }
        Err(Status::not_found(format!(
            "transaction {id} is neither committed nor pending"
        )))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let key = request.into_inner().key;
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        let height = self.state.ledger.tip().height;
        let ledger = self.state.ledger.clone();
        let value = self
            .state
            .reads
            .run("key lookup", move || ledger.get(&key))
            .await?;
        let response = match value {
            Some(v) => proto::GetResponse {
                found: true,
                value: v.value.to_vec(),
                version: Some(proto::Version {
                    height: v.height,
                    tx_index: v.index,
                    tx_id: v.tx_id.to_vec(),
                }),
                height,
            },
            None => proto::GetResponse {
                found: false,
                height,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn get_config(
        &self,
        request: Request<proto::GetConfigRequest>,
    ) -> Result<Response<proto::GetConfigResponse>, Status> {
        let at = request.into_inner().at_height;
        let ledger = &self.state.ledger;
        let tip = ledger.tip().height;
        if at > tip {
            return Err(Status::out_of_range(format!(
                "at_height {at} is above the tip at height {tip}"
            )));
        }
        let (config, height) = if at == 0 {
            (ledger.config().as_ref().clone(), tip)
        } else {
            let l = ledger.clone();
            let config = self
                .state
                .reads
                .run("configuration lookup", move || l.config_at(at))
                .await?;
            (config, at)
        };
        let effective = crate::governance::params_at(&config, height + 1);
        Ok(Response::new(proto::GetConfigResponse {
            config: Some(config),
            height,
            effective_params: Some(effective),
        }))
    }

    async fn list_proposals(
        &self,
        request: Request<proto::ListProposalsRequest>,
    ) -> Result<Response<proto::ListProposalsResponse>, Status> {
        let req = request.into_inner();
        let state = match proto::ProposalState::try_from(req.state) {
            Ok(proto::ProposalState::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown proposal state {}",
                    req.state
                )))
            }
        };
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        let height = self.state.ledger.tip().height;
        let ledger = self.state.ledger.clone();
        let proposals = self
            .state
            .reads
            .run("proposal listing", move || ledger.proposals(state, limit))
            .await?;
        Ok(Response::new(proto::ListProposalsResponse {
            proposals,
            height,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_snapshot(
        &self,
        _request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let root = snapshot_root(self.state.ledger.dir());
        let created =
            crate::backup::take(&self.state, root, crate::ledger::snapshot::SNAPSHOTS_KEPT)
                .await
                .map_err(|e| match e {
                    crate::ledger::snapshot::SnapshotError::Busy => {
                        Status::resource_exhausted(e.to_string())
                    }
                    e => Status::internal(format!("snapshot failed: {e}")),
                })?;
        let m = &created.manifest;
        Ok(Response::new(proto::CreateSnapshotResponse {
            path: created.dir.display().to_string(),
            height: m.height,
            block_hash: hex::decode(&m.block_hash).unwrap_or_default(),
            checkpoint_seq: m.checkpoint_proof().ok().flatten().map_or(0, |p| p.seq),
            bytes: created.bytes,
            created_at_ms: m.created_at_ms,
            commits_paused_us: created.commits_paused.as_micros() as u64,
            took_ms: created.took.as_millis() as u64,
        }))
    }

    #[tracing::instrument(skip_all, fields(contract = %request.get_ref().contract, function = %request.get_ref().function))]
    async fn query_contract(
        &self,
        request: Request<proto::QueryContractRequest>,
    ) -> Result<Response<proto::QueryContractResponse>, Status> {
        let r = request.into_inner();
        let caller: [u8; 32] = if r.caller.is_empty() {
            [0; 32]
        } else {
            r.caller.as_slice().try_into().map_err(|_| {
                Status::invalid_argument(format!("caller must be 32 bytes, got {}", r.caller.len()))
            })?
        };
        if r.input.len() > self.state.tx_limits().max_tx_bytes {
            return Err(Status::invalid_argument(format!(
                "input is {} bytes, more than a transaction may carry",
                r.input.len()
            )));
        }
        if r.fuel > crate::tx::envelope::MAX_CALL_FUEL {
            return Err(Status::invalid_argument(format!(
                "fuel {} is above the limit of {}",
                r.fuel,
                crate::tx::envelope::MAX_CALL_FUEL
            )));
        }
        let fuel = if r.fuel == 0 {
            crate::tx::envelope::DEFAULT_CALL_FUEL
        } else {
            r.fuel
        };
        let ledger = self.state.ledger.clone();
        let (outcome, height) = self
            .state
            .reads
            .run("contract query", move || {
                ledger.query_contract(&r.contract, &r.function, r.input, caller, fuel)
            })
            .await?;
        Ok(Response::new(proto::QueryContractResponse {
            outcome: Some(outcome),
            height,
        }))
    }

    async fn get_history(
        &self,
        request: Request<proto::GetHistoryRequest>,
    ) -> Result<Response<proto::GetHistoryResponse>, Status> {
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        let limit = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(
                history::decode_page_token(&request.page_token).ok_or_else(|| {
                    Status::invalid_argument("page_token is not one this server returned")
                })?,
            )
        };
        let ledger = self.state.ledger.clone();
        let key = request.key;
        let page = self
            .state
            .reads
            .run("history read", move || ledger.history(&key, after, limit))
            .await?;
        Ok(Response::new(proto::GetHistoryResponse {
            entries: page.entries,
            next_page_token: page
                .next
                .map(|(h, i)| history::encode_page_token(h, i))
                .unwrap_or_default(),
        }))
    }

    async fn get_block(
        &self,
        request: Request<proto::GetBlockRequest>,
    ) -> Result<Response<proto::GetBlockResponse>, Status> {
        use proto::get_block_request::Selector;
        let ledger = self.state.ledger.clone();
        let selector = request.into_inner().selector;
        let requested_height = match &selector {
            Some(Selector::Height(h)) => Some(*h),
            _ => None,
        };
        let found = match selector {
            Some(Selector::Height(h)) => {
                self.state
                    .reads
                    .run("block read", move || ledger.block_by_height(h))
                    .await?
            }
            Some(Selector::Hash(hash)) => {
                if hash.len() != 32 {
                    return Err(Status::invalid_argument(format!(
                        "block hash must be 32 bytes, got {}",
                        hash.len()
                    )));
                }
                self.state
                    .reads
                    .run("block read", move || ledger.block_by_hash(&hash))
                    .await?
            }
            None => return Err(Status::invalid_argument("give a height or a hash")),
        };
        match found {
            Some((block, hash)) => Ok(Response::new(proto::GetBlockResponse {
                block: Some(block),
                hash: hash.to_vec(),
            })),
            None => {
                let tip = self.state.ledger.tip().height;
                let l = self.state.ledger.clone();
                let base = self
                    .state
                    .reads
                    .run("sync base read", move || l.sync_base())
                    .await?;
                match requested_height {
                    Some(h) if h > 0 && h <= base => Err(Status::failed_precondition(
                        crate::ledger::LedgerError::NotHeld {
                            what: format!("block {h}"),
                            base,
                        }
                        .to_string(),
                    )),
                    _ => Err(Status::not_found(format!(
                        "no such block (tip is at height {tip})"
                    ))),
                }
            }
        }
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let tip = self.state.ledger.tip().height;
        let from = if request.from_height == 0 {
            tip + 1
        } else {
            request.from_height
        };
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        // Subscribe to the live feed before reading history, so nothing
        // committed in between is missed.
        let live = self.state.feed.subscribe();
        tokio::spawn(stream_blocks(
            self.state.clone(),
            live,
            from,
            request.key_prefix,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let s = &self.state;
        let tip = s.ledger.tip();
        let params = s.params();
        let key = s.node_key.to_bytes().to_vec();
        let c = s.consensus.snapshot();
        let epoch = s.consensus.epoch();
        let me = epoch.me.unwrap_or(u32::MAX);
        let peers = epoch
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != me)
            .map(|(i, p)| proto::PeerStatus {
                index: i as u32,
                name: p.name.clone(),
                address: p.address.clone(),
                connected: p.connected.load(std::sync::atomic::Ordering::Relaxed),
                last_seen_height: p
                    .last_seen_height
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        let primary = s
            .consensus
            .primary_key()
            .map(|k| k.to_vec())
            .unwrap_or_else(|| key.clone());
        Ok(Response::new(proto::StatusResponse {
            chain_id: s.ledger.chain_id().to_owned(),
            node_name: s.name.clone(),
            node_id: key.clone(),
            height: tip.height,
            last_block_hash: tip.hash.to_vec(),
            last_block_time_ms: tip.timestamp_ms,
            pending_txs: s.mempool_len() as u64,
            block_interval_ms: params.block_interval_ms,
            max_block_txs: params.max_block_txs,
            max_block_bytes: params.max_block_bytes,
            max_tx_bytes: params.max_tx_bytes,
            view: c.view,
            primary,
            validators: epoch.validators.len() as u32,
            txs_committed: tip.txs_committed,
            version: crate::VERSION.to_owned(),
            replica_index: me,
            primary_index: c.primary,
            low_watermark: c.low_watermark,
            high_watermark: c.high_watermark,
            stable_checkpoint: c.stable_checkpoint,
            view_changes: c.view_changes,
            view_change_in_progress: c.view_change_in_progress,
            state_transfer_target: c.state_transfer_target.unwrap_or_default(),
            peers,
            corruption: s.corruption().unwrap_or_default(),
            observer: s.consensus.is_observer(),
            epoch_base: epoch.base,
            epoch_end: epoch.end.unwrap_or_default(),
            request_timeout_ms: c.request_timeout_ms,
            lowest_full_block: lowest_full_block(&s.ledger),
            last_backup_height: s.backups.last().map_or(0, |b| b.height),
            last_backup_at_ms: s.backups.last().map_or(0, |b| b.created_at_ms),
        }))
    }
}

async fn wait_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await.map(|_| ());
}

/// Sends stored blocks from `next` up to the tip, then live ones; falls
/// back to storage whenever the live feed skipped ahead or lagged.
async fn stream_blocks(
    state: Arc<NodeState>,
    mut live: broadcast::Receiver<Arc<crate::ledger::CommittedBlock>>,
    mut next: u64,
    prefix: Vec<u8>,
    out: mpsc::Sender<Result<proto::BlockEvent, Status>>,
) {
    let mut stopping = state.stopping();
    loop {
        // Catch up from storage.
        while next <= state.ledger.tip().height {
            let ledger = state.ledger.clone();
            let height = next;
            let filter = prefix.clone();
            // The block and the events of its contract calls, read together
            // off the async workers.
            let read = state
                .reads
                .run("block read", move || {
                    Ok(ledger.block_by_height(height)?.map(|(block, hash)| {
                        events::from_stored(&block, &hash, &filter, |id| {
                            ledger.contract_events(id).unwrap_or_default()
                        })
                    }))
                })
                .await;
            let event = match read {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) => {
                    let _ = out.send(Err(status)).await;
                    return;
                }
            };
            if out.send(Ok(event)).await.is_err() {
                return; // client went away
            }
            next += 1;
        }
        // Then follow the live feed.
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                _ = wait_stopping(&mut stopping) => {
                    let _ = out.send(Err(Status::unavailable("node is shutting down"))).await;
                    return;
                }
            };
            match received {
                Ok(block) if block.height < next => continue,
                Ok(block) if block.height == next => {
                    if out
                        .send(Ok(events::from_committed(&block, &prefix)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    next += 1;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break, // gap: read storage
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Where a node keeps its snapshots: `snapshots/` beside its database.
pub fn snapshot_root(ledger_dir: &std::path::Path) -> std::path::PathBuf {
    ledger_dir.parent().unwrap_or(ledger_dir).join("snapshots")
}
