//! The admission pipeline: decode and check, verify signatures in a batch
//! off the async workers, then admit to the mempool. Every refusal is
//! counted by reason.

use std::sync::Arc;
use std::time::Instant;

use crate::proto::SignedTransaction;
use crate::tx::envelope::{self, VerifiedTx, Write};
use crate::tx::{signature_batch, Rejection, TxId};

use super::NodeState;

/// Where a batch of transactions came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node: what is admitted is gossiped to every peer.
    Client,
    /// Another replica's gossip: admitted here, not passed on again.
    Peer,
}

/// Refuses, at the door, a configuration change the current configuration
/// would refuse: not from a member's admin key, a second vote, a proposal
/// that does not apply. The ordered execution judges it again, against the
/// configuration of its block, and records the outcome either way.
fn config_precheck(state: &NodeState, tx: &VerifiedTx) -> Result<(), Rejection> {
    use crate::governance::{self, Refusal};
    use crate::proto::{config_change::Change, RejectReason};
    let Write::Config(change) = &tx.write else {
        return Ok(());
    };
    if let Some(Change::InstallCode(install)) = &change.change {
        if let Err(e) = state.ledger.check_contract_code(&install.code) {
            return Err(Rejection::new(
                RejectReason::ConfigRefused,
                format!("transaction {}: the code cannot be installed: {e}", tx.id),
            ));
        }
    }
    let target = match &change.change {
        Some(Change::Vote(v)) => state.ledger.proposal(v.proposal_id).map_err(|e| {
            Rejection::new(
                RejectReason::Unspecified,
                format!("ledger read failed: {e}"),
            )
        })?,
        _ => None,
    };
    // `proposal` reports an expired proposal as such; judge the stored one.
    let target = target.map(|mut p| {
        if p.state == crate::proto::ProposalState::Expired as i32 {
            p.state = crate::proto::ProposalState::Open as i32;
        }
        p
    });
    let tip = state.ledger.tip();
    let ctx = governance::Context {
        height: tip.height + 1,
        block_ms: crate::clock::now_ms().max(tip.timestamp_ms),
        tx_id: tx.id.0,
    };
    let config = state.ledger.config();
    match governance::apply(
        &config,
        &tx.sender.to_bytes(),
        change,
        target.as_ref(),
        &ctx,
    ) {
        Ok(effects) if effects.outcome.applied => Ok(()),
        Ok(effects) => Err(Rejection::new(
            RejectReason::ConfigRefused,
            format!("transaction {}: {}", tx.id, effects.outcome.message),
        )),
        Err(Refusal::NotAuthorized(m)) => Err(Rejection::new(
            RejectReason::NotAuthorized,
            format!("transaction {}: {m}", tx.id),
        )),
        Err(Refusal::Refused(m)) => Err(Rejection::new(
            RejectReason::ConfigRefused,
            format!("transaction {}: {m}", tx.id),
        )),
    }
}

/// Runs the pipeline for a batch; one result per input, in order.
pub async fn admit(
    state: &Arc<NodeState>,
    txs: Vec<SignedTransaction>,
    origin: Origin,
) -> Vec<Result<TxId, Rejection>> {
    if state.consensus.is_observer() {
        let refusal = Rejection::new(
            crate::proto::RejectReason::ReadOnly,
            "this node is an observer: it follows the chain but does not order \
             transactions; submit to a validator",
        );
        state.metrics.rejected(refusal.label());
        return txs.iter().map(|_| Err(refusal.clone())).collect();
    }
    let span = tracing::debug_span!("admit", txs = txs.len());
    let _entered = span.enter();
    let limits = state.tx_limits();
    let chain_id = state.ledger.chain_id().to_owned();
    let mut results: Vec<Option<Result<TxId, Rejection>>> = Vec::with_capacity(txs.len());
    let mut decoded: Vec<VerifiedTx> = Vec::with_capacity(txs.len());
    let mut positions = Vec::with_capacity(txs.len());
    for (i, signed) in txs.into_iter().enumerate() {
        match envelope::decode(signed, &chain_id, &limits).and_then(|tx| {
            if origin == Origin::Client {
                config_precheck(state, &tx)?;
            }
            Ok(tx)
        }) {
            Ok(tx) => {
                positions.push(i);
                decoded.push(tx);
                results.push(None);
            }
            Err(rejection) => results.push(Some(Err(rejection))),
        }
    }
    drop(_entered);

    let started = Instant::now();
    let checked = decoded.len();
    let (decoded, valid) = if decoded.is_empty() {
        (decoded, Vec::new())
    } else {
        match tokio::task::spawn_blocking(move || {
            let valid = signature_batch::verify(&decoded);
            (decoded, valid)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "signature verification task failed");
                return results
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            Err(Rejection::new(
                                crate::proto::RejectReason::ShuttingDown,
                                "signature verification was interrupted; retry",
                            ))
                        })
                    })
                    .collect();
            }
        }
    };
    if checked > 0 {
        let path = match origin {
            Origin::Client => "client",
            Origin::Peer => "peer",
        };
        state
            .metrics
            .signatures_checked(path, checked, started.elapsed().as_secs_f64());
    }

    let mut to_admit = Vec::with_capacity(decoded.len());
    let mut admit_positions = Vec::with_capacity(decoded.len());
    for ((tx, ok), pos) in decoded.into_iter().zip(valid).zip(positions) {
        if ok {
            admit_positions.push(pos);
            to_admit.push(tx);
        } else {
            results[pos] = Some(Err(Rejection::new(
                crate::proto::RejectReason::BadSignature,
                format!(
                    "transaction {}: signature does not verify for its sender key",
                    tx.id
                ),
            )));
        }
    }
    let signed: Vec<SignedTransaction> = to_admit.iter().map(|t| t.signed.clone()).collect();
    let admitted = state.mempool.admit(to_admit, &state.ledger);
    let mut forward = Vec::new();
    for ((pos, result), signed) in admit_positions.into_iter().zip(admitted).zip(signed) {
        if result.is_ok() {
            forward.push(signed);
        }
        results[pos] = Some(result);
    }
    // Every replica gets what a client handed to this one: the primary to
    // order it, the backups so that their check of the primary's proposal
    // finds it verified already (off the critical path) and so that a new
    // primary after a view change holds it.
    if origin == Origin::Client {
        state.consensus.gossip(forward);
    }
    let results: Vec<Result<TxId, Rejection>> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Rejection::new(
                    crate::proto::RejectReason::Unspecified,
                    "transaction was not processed",
                ))
            })
        })
        .collect();
    for r in &results {
        if let Err(rejection) = r {
            state.metrics.rejected(rejection.label());
            tracing::debug!(reason = rejection.label(), message = %rejection.message, "transaction refused");
        }
    }
    state.metrics.mempool_txs.set(state.mempool_len() as i64);
    results
}
