//! The single-replica orderer: cuts blocks from the mempool under the
//! block interval and size limits and commits them. A PBFT replica replaces
//! only this loop: it orders the same proposals through agreement before
//! handing them to the same [`crate::ledger::Ledger::commit`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::block::cutter::{BlockCutter, CutterLimits, Decision};
use crate::block::Proposal;
use crate::client::now_ms;
use crate::ledger::LedgerError;

use super::NodeState;

/// Back-off after a storage failure before trying the block again.
const STORAGE_RETRY: Duration = Duration::from_secs(1);

pub fn cutter_limits(state: &NodeState) -> CutterLimits {
    let params = state.params();
    CutterLimits {
        interval: Duration::from_millis(u64::from(params.block_interval_ms)),
        max_txs: params.max_block_txs as usize,
        max_bytes: usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX),
    }
}

/// Runs until `shutdown` turns true. The mempool is closed by then, so
/// nothing new arrives; what was already admitted is committed before the
/// loop ends, so an accepted transaction is not dropped by a restart.
pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let mut cutter = BlockCutter::new(cutter_limits(&state), Instant::now());
    loop {
        state.heartbeat();
        let stats = state.mempool.stats();
        let stopping = *shutdown.borrow();
        if stopping && stats.queued == 0 {
            break;
        }
        let decision = if stopping {
            Decision::Cut
        } else {
            cutter.decide(Instant::now(), stats.queued, stats.queued_bytes)
        };
        let wait_until = match decision {
            Decision::Cut => {
                cutter.cut(Instant::now());
                let limits = cutter.limits();
                propose_and_commit(&state, limits).await;
                continue;
            }
            Decision::Idle => None,
            Decision::WaitUntil(t) => Some(t),
        };
        // Wake for new transactions (a size cut may be due), the interval,
        // shutdown, or a heartbeat tick so liveness reflects a live loop.
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = state.mempool.admitted.notified() => {}
            _ = sleep_until(wait_until) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tick => {}
        }
    }
    tracing::info!("orderer stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

async fn propose_and_commit(state: &Arc<NodeState>, limits: CutterLimits) {
    let txs = state.mempool.take(limits.max_txs, limits.max_bytes);
    if txs.is_empty() {
        return;
    }
    let tip = state.ledger.tip();
    let proposal = Proposal {
        height: tip.height + 1,
        timestamp_ms: now_ms().max(tip.timestamp_ms),
        proposer: state.node_key.to_bytes(),
        txs,
    };
    let span = tracing::info_span!("block", height = proposal.height, txs = proposal.txs.len());
    let ledger = state.ledger.clone();
    let committed = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let result = ledger.commit(&proposal);
        (proposal, result)
    })
    .await;
    let (proposal, result) = match committed {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "commit task failed");
            return;
        }
    };
    match result {
        Ok(block) => {
            state.mempool.committed(&block.tx_ids);
            state.on_committed(Arc::new(block));
        }
        Err(LedgerError::DuplicateCommitted(id)) | Err(LedgerError::DuplicateInBlock(id)) => {
            // Admission makes this unreachable; if it happens anyway, drop the
            // offender and retry the rest rather than stall the chain.
            tracing::error!(tx = %id, "proposal held a duplicate transaction; dropping it");
            state.mempool.discard(&[id]);
            let rest = proposal.txs.into_iter().filter(|t| t.id != id).collect();
            state.mempool.requeue(rest);
        }
        Err(e) => {
            tracing::error!(error = %e, height = proposal.height, "block commit failed; retrying");
            state.set_storage_error(Some(e.to_string()));
            state.mempool.requeue(proposal.txs);
            tokio::time::sleep(STORAGE_RETRY).await;
        }
    }
}
