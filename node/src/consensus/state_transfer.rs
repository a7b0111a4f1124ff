//! Catching up from peers: fetch the committed blocks up to a certified
//! checkpoint, as many requests as it takes, checking the hash chain as
//! they arrive and spooling them to disk ([`super::block_spool`]); once the
//! chain ends at the checkpoint's block hash, re-execute them (which
//! recomputes and so checks every state root). Memory stays at one block
//! whatever the distance.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubeledger_pbft::{Digest, ReplicaIndex, Seq, SignedMessage, ValidatorSet};

use super::block_spool::{SpoolError, SpoolReader, SpoolWriter};
use super::codec::verified_certificate;
use crate::block::verify::verify_successor;
use crate::block::Proposal;
use crate::governance::validators::epoch_at;
use crate::node_state::NodeState;
use crate::proto::peer_client::PeerClient;
use crate::proto::{CertifiedBlock, GetBlocksRequest};
use crate::tx::VerifiedTx;

/// Largest block message accepted during state transfer.
const MAX_BLOCK_MESSAGE: usize = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot reach peer {peer}: {message}")]
    Unreachable { peer: String, message: String },
    #[error("peer {peer} sent a block that does not extend the chain: {message}")]
    BadChain { peer: String, message: String },
    #[error("peer {peer} stopped at height {reached}, before the target {target}")]
    Short {
        peer: String,
        reached: u64,
        target: u64,
    },
    #[error("fetched chain ends at {found}, the checkpoint certifies {expected}")]
    WrongTip { expected: String, found: String },
    #[error("re-executing block {height} gave hash {found}, the peer's block has {expected}")]
    Diverged {
        height: u64,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("the local tip's header (block {0}) is missing")]
    LocalTipMissing(u64),
    #[error(
        "block {0} read back from the state-transfer spool is not the block checked on arrival"
    )]
    SpoolChanged(u64),
    #[error("state-transfer task failed: {0}")]
    Task(String),
}

/// Fetches and applies blocks until the ledger reaches `target_seq` with
/// `block_hash`, trying each listed peer in turn (then all others), and
/// retrying with back-off until done or the node stops.
pub async fn run(
    state: &Arc<NodeState>,
    target_seq: Seq,
    block_hash: Digest,
    _certificate: &[SignedMessage],
    peers: &[ReplicaIndex],
) {
    let epoch = state.consensus.epoch();
    let n = epoch.validators.len() as u32;
    let me = epoch.me;
    let mut order: Vec<ReplicaIndex> = peers.to_vec();
    order.extend((0..n).filter(|i| Some(*i) != me && !peers.contains(i)));
    let order: Vec<(ReplicaIndex, String)> = order
        .into_iter()
        .filter_map(|i| {
            epoch
                .validators
                .get(i as usize)
                .map(|v| (i, v.peer_address.clone()))
        })
        .collect();
    let mut backoff = Duration::from_millis(200);
    let stopping = state.stopping();
    // What earlier peers served and passed the checks, for the next one
    // to carry on from.
    let mut partial: Option<Partial> = None;
    loop {
        if state.ledger.tip().height >= target_seq {
            return;
        }
        for (peer, address) in &order {
            match fetch_resuming(state, address, target_seq, block_hash, partial.take()).await {
                Ok(()) => {
                    state.metrics.state_transfers.inc();
                    tracing::info!(peer, height = target_seq, "state transfer complete");
                    return;
                }
                Err(failed) => {
                    partial = failed.partial;
                    tracing::warn!(
                        peer,
                        error = %failed.error,
                        kept_up_to = partial.as_ref().map(|p| p.chain.header.height),
                        "state transfer from peer failed"
                    );
                }
            }
            if *stopping.borrow() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if *stopping.borrow() {
            return;
        }
    }
}

/// Fetches the blocks after the local tip up to `target_seq` from the peer
/// at `address`, checking the hash chain block by block as they stream in
/// and spooling them to disk; once the chain ends at the certified
/// `block_hash`, re-executes them in order. A response that ends early (a
/// peer serves a bounded number of blocks per request) is followed by a
/// request from where it ended, for as long as each one makes progress.
pub(crate) async fn fetch_from(
    state: &Arc<NodeState>,
    address: &str,
    target_seq: Seq,
    block_hash: Digest,
) -> Result<(), TransferError> {
    fetch_resuming(state, address, target_seq, block_hash, None)
        .await
        .map_err(|failed| failed.error)
}

/// Blocks fetched and checked so far, not yet applied: what a peer that
/// stalled or stopped short leaves for the next peer. (After a block that
/// does not extend the chain, or a chain that ends elsewhere, nothing is
/// kept: which peer lied is not known.)
pub(crate) struct Partial {
    /// The ledger's tip when the transfer started.
    from: u64,
    chain: ChainEnd,
    spool: SpoolWriter,
}

/// A failed fetch, and what of it the next peer may carry on from.
pub(crate) struct Failed {
    pub error: TransferError,
    partial: Option<Partial>,
}

impl From<TransferError> for Failed {
    fn from(error: TransferError) -> Self {
        Self {
            error,
            partial: None,
        }
    }
}

/// [`fetch_from`], carrying on from `resume` when it still starts at the
/// ledger's tip.
async fn fetch_resuming(
    state: &Arc<NodeState>,
    address: &str,
    target_seq: Seq,
    block_hash: Digest,
    resume: Option<Partial>,
) -> Result<(), Failed> {
    let tip = state.ledger.tip();
    let partial = match resume.filter(|p| p.from == tip.height) {
        Some(p) => p,
        None => {
            let dir = state.ledger.dir();
            Partial {
                from: tip.height,
                chain: ChainEnd {
                    header: state
                        .ledger
                        .header(tip.height)
                        .map_err(TransferError::from)?
                        .ok_or(TransferError::LocalTipMissing(tip.height))?,
                    hash: tip.hash,
                },
                spool: SpoolWriter::new(dir.parent().unwrap_or(dir)),
            }
        }
    };
    let address = address.to_owned();
    let unreachable = |message: String| TransferError::Unreachable {
        peer: address.clone(),
        message,
    };
    let keep = |error: TransferError, partial: Partial| Failed {
        error,
        partial: Some(partial),
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e.connect_timeout(Duration::from_secs(2)),
        Err(e) => return Err(keep(unreachable(e.to_string()), partial)),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Err(keep(unreachable(e.to_string()), partial)),
    };
    let mut client = PeerClient::new(channel).max_decoding_message_size(MAX_BLOCK_MESSAGE);
    let Partial {
        from,
        mut chain,
        spool,
    } = partial;
    let mut slot = Some(spool);
    let fetched = fetch_chain(
        &mut client,
        state,
        &address,
        target_seq,
        &mut chain,
        &mut slot,
    )
    .await;
    // On an error the spool is kept only if the peer merely failed; dropping
    // it removes its file.
    let spool = match (fetched, slot) {
        (Ok(()), Some(spool)) => spool,
        (Ok(()), None) => return Err(TransferError::Task("spool lost".into()).into()),
        (Err(error), Some(spool))
            if matches!(
                error,
                TransferError::Unreachable { .. } | TransferError::Short { .. }
            ) =>
        {
            return Err(keep(error, Partial { from, chain, spool }))
        }
        (Err(error), _) => return Err(error.into()),
    };
    if chain.hash != block_hash {
        return Err(TransferError::WrongTip {
            expected: hex::encode(block_hash),
            found: hex::encode(chain.hash),
        }
        .into());
    }
    let state2 = state.clone();
    let peer = address.clone();
    tokio::task::spawn_blocking(move || {
        let blocks = spool.into_reader(MAX_BLOCK_MESSAGE)?;
        apply(&state2, &peer, blocks)
    })
    .await
    .map_err(|e| unreachable(format!("apply task failed: {e}")))?
    .map_err(Failed::from)
}

/// The last block of the chain checked so far.
struct ChainEnd {
    header: crate::proto::BlockHeader,
    hash: Digest,
}

/// How long a peer may leave a block request without an answer or the
/// next block.
const STALL: Duration = Duration::from_secs(10);
/// A peer must deliver at least this many blocks in every [`RATE_WINDOW`]
/// (or reach the target) to be kept: one block every 9 s is not progress.
const MIN_BLOCKS_PER_WINDOW: u64 = 30;
const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Largest commit certificate a block may carry: a quorum of up to 64
/// validators' COMMITs is under 8 KiB.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// The length of an ed25519 signature: the hash chain does not cover
/// signatures, so their length is checked here.
const SIGNATURE_BYTES: usize = 64;

/// Streams and checks blocks after `chain` until `target_seq`, one
/// request after another, into `spool`, flushing it off the async workers.
async fn fetch_chain(
    client: &mut PeerClient<tonic::transport::Channel>,
    state: &Arc<NodeState>,
    address: &str,
    target_seq: Seq,
    chain: &mut ChainEnd,
    slot: &mut Option<SpoolWriter>,
) -> Result<(), TransferError> {
    let unreachable = |message: String| TransferError::Unreachable {
        peer: address.to_owned(),
        message,
    };
    let bad = |message: String| TransferError::BadChain {
        peer: address.to_owned(),
        message,
    };
    let mut window_start = tokio::time::Instant::now();
    let mut window_blocks = 0u64;
    while chain.header.height < target_seq {
        let asked_from = chain.header.height + 1;
        let request = client.get_blocks(GetBlocksRequest {
            from_height: asked_from,
            to_height: target_seq,
        });
        let mut stream = tokio::time::timeout(STALL, request)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer to a block request in {} s",
                    STALL.as_secs()
                ))
            })?
            .map_err(|e| unreachable(e.to_string()))?
            .into_inner();
        loop {
            let item = match tokio::time::timeout(STALL, stream.next()).await {
                Err(_) => {
                    return Err(unreachable(format!(
                        "no block for {} s at height {}",
                        STALL.as_secs(),
                        chain.header.height + 1
                    )))
                }
                Ok(None) => break,
                Ok(Some(item)) => item.map_err(|e| unreachable(e.to_string()))?,
            };
            // A long transfer is progress, not a stuck storage loop.
            state.heartbeat(crate::node_state::Loop::Storage);
            state
                .metrics
                .state_transfer_bytes
                .inc_by(prost::Message::encoded_len(&item) as u64);
            let block = item
                .block
                .as_ref()
                .ok_or_else(|| bad("empty block".into()))?;
            let header = verify_successor(&chain.header, &chain.hash, block)
                .map_err(|e| bad(e.to_string()))?
                .clone();
            if item.certificate.len() > MAX_CERTIFICATE_BYTES {
                return Err(bad(format!(
                    "block {} carries a certificate of {} bytes, over {MAX_CERTIFICATE_BYTES}",
                    header.height,
                    item.certificate.len()
                )));
            }
            if let Some(tx) = block
                .txs
                .iter()
                .find(|t| t.signature.len() != SIGNATURE_BYTES)
            {
                return Err(bad(format!(
                    "block {} holds a signature of {} bytes",
                    header.height,
                    tx.signature.len()
                )));
            }
            let hash = crate::block::header_hash(&header);
            let reached = header.height;
            chain.header = header;
            chain.hash = hash;
            let full = slot.as_mut().is_some_and(|spool| spool.push(&hash, &item));
            if full {
                flush_into(slot).await?;
            }
            window_blocks += 1;
            if reached >= target_seq {
                return flush_into(slot).await;
            }
            if window_start.elapsed() >= RATE_WINDOW {
                if window_blocks < MIN_BLOCKS_PER_WINDOW {
                    return Err(unreachable(format!(
                        "{window_blocks} blocks in {} s: too slow",
                        RATE_WINDOW.as_secs()
                    )));
                }
                window_start = tokio::time::Instant::now();
                window_blocks = 0;
            }
        }
        if chain.header.height < asked_from {
            return Err(TransferError::Short {
                peer: address.to_owned(),
                reached: chain.header.height,
                target: target_seq,
            });
        }
        tracing::debug!(
            peer = address,
            reached = chain.header.height,
            target = target_seq,
            "state transfer: response ended, asking from where it stopped"
        );
    }
    flush_into(slot).await
}

/// Writes the spool's buffered blocks on a blocking thread. If that fails
/// the spool is gone from `slot` (and its file with it).
async fn flush_into(slot: &mut Option<SpoolWriter>) -> Result<(), TransferError> {
    let Some(mut spool) = slot.take() else {
        return Err(TransferError::Task("spool lost".into()));
    };
    let spool = tokio::task::spawn_blocking(move || spool.flush().map(|()| spool))
        .await
        .map_err(|e| TransferError::Task(e.to_string()))??;
    *slot = Some(spool);
    Ok(())
}

/// Re-executes the spooled blocks, whose chain ends at the certified
/// checkpoint; each must reproduce the fetched hash.
fn apply(state: &NodeState, peer: &str, mut blocks: SpoolReader) -> Result<(), TransferError> {
    let chain_id = state.ledger.chain_id().to_owned();
    // Transactions of a certified chain were validated when ordered; the
    // size limits still apply through decoding.
    let limits = crate::tx::envelope::TxLimits {
        max_tx_bytes: usize::MAX,
        max_key_bytes: usize::MAX,
        max_value_bytes: usize::MAX,
    };
    let mut vset: Option<(u64, ValidatorSet)> = None;
    while let Some((hash, item)) = blocks.next_block()? {
        let CertifiedBlock {
            block: Some(block),
            certificate: cert,
        } = item
        else {
            continue;
        };
        let Some(header) = block.header.clone() else {
            continue;
        };
        if crate::block::header_hash(&header) != hash {
            // What was checked on arrival is not what came back from disk.
            return Err(TransferError::SpoolChanged(header.height));
        }
        let mut txs: Vec<Arc<VerifiedTx>> = Vec::with_capacity(block.txs.len());
        for signed in block.txs {
            let tx = crate::tx::envelope::decode(signed, &chain_id, &limits).map_err(|r| {
                TransferError::BadChain {
                    peer: peer.to_owned(),
                    message: format!("block {}: {}", header.height, r.message),
                }
            })?;
            txs.push(Arc::new(tx));
        }
        let proposal = Proposal {
            height: header.height,
            timestamp_ms: header.timestamp_ms,
            proposer: header.proposer.as_slice().try_into().unwrap_or_default(),
            txs,
        };
        // The served certificate is kept (and served on) only if it holds:
        // the chain itself is already proven by the checkpoint it ends at.
        let config = state.ledger.config();
        let epoch = epoch_at(&config, header.height);
        if vset.as_ref().is_none_or(|(base, _)| *base != epoch.base) {
            vset = super::epoch::validator_set(epoch.validators, epoch.base)
                .ok()
                .map(|v| (epoch.base, v));
        }
        let served = !cert.is_empty();
        let cert = match &vset {
            Some((_, v)) => verified_certificate(cert, header.height, v),
            None => None,
        };
        if served && cert.is_none() {
            state.metrics.certificates_refused.inc();
        }
        state.heartbeat(crate::node_state::Loop::Storage);
        let committed = state.ledger.commit_certified(&proposal, cert.as_deref())?;
        if committed.hash != hash {
            // The certified chain is right (a quorum signed it); executing
            // it here gave another block, so this replica's state is wrong.
            state.report_corruption(format!(
                "re-executing certified block {} gave hash {} instead of {}",
                header.height,
                hex::encode(committed.hash),
                hex::encode(hash)
            ));
            return Err(TransferError::Diverged {
                height: header.height,
                expected: hex::encode(hash),
                found: hex::encode(committed.hash),
            });
        }
        state.mempool.committed(&committed.tx_ids);
        state.on_committed(Arc::new(committed));
    }
    Ok(())
}

#[cfg(test)]
mod transfer_tests {
    //! Fetching from real `Peer` services over loopback: an honest peer that
    //! serves few blocks per response, a peer on a fork, and a peer of
    //! another chain.

    use super::*;
    use crate::config::{HealthConfig, MempoolConfig, StorageConfig};
    use crate::consensus::inbound::Inbound;
    use crate::consensus::transport::PeerService;
    use crate::genesis::Genesis;
    use crate::ledger::Ledger;
    use crate::proto::peer_server::PeerServer;
    use crate::tx::envelope::{decode, put, sign};
    use ed25519_dalek::SigningKey;

    const BLOCKS: u64 = 30;

    fn node(dir: &std::path::Path, genesis: &Genesis) -> Arc<NodeState> {
        let key = SigningKey::from_bytes(&[1; 32]);
        let ledger = Ledger::open(
            &dir.join("ledger"),
            genesis.clone(),
            &StorageConfig::default(),
        )
        .expect("open");
        Arc::new(NodeState::new(
            "n".into(),
            key.verifying_key(),
            Arc::new(ledger),
            (&MempoolConfig::default()).into(),
            HealthConfig::default(),
        ))
    }

    /// Commits `BLOCKS` blocks of one put each, the values marked `fork`.
    fn grow(state: &NodeState, fork: &str) {
        grow_to(state, fork, BLOCKS);
    }

    /// Commits `blocks` blocks of one put each, the values marked `fork`.
    fn grow_to(state: &NodeState, fork: &str, blocks: u64) {
        let client = SigningKey::from_bytes(&[9; 32]);
        let chain = state.ledger.chain_id().to_owned();
        for nonce in 1..=blocks {
            let signed = sign(&client, &chain, nonce, 1, put(format!("k{nonce}"), fork));
            let tx = decode(signed, &chain, &state.tx_limits()).expect("valid");
            let tip = state.ledger.tip();
            state
                .ledger
                .commit_certified(
                    &Proposal {
                        height: tip.height + 1,
                        timestamp_ms: tip.timestamp_ms + 10,
                        proposer: state.node_key.to_bytes(),
                        txs: vec![Arc::new(tx)],
                    },
                    None,
                )
                .expect("commit");
        }
    }

    /// Serves `state`'s blocks, `per_response` at a time; its address.
    async fn serve(state: Arc<NodeState>, per_response: u64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = crate::config::PeerConfig {
            max_blocks_per_response: per_response,
        };
        let service = PeerService::new(
            state,
            Arc::new(Inbound::default()),
            &serving,
            &Default::default(),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(service))
                .serve_with_incoming(crate::connections::accept(listener)),
        );
        addr.to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn liars_are_refused_with_nothing_applied_and_an_honest_peer_is_followed_to_the_end() {
        let dirs: Vec<_> = (0..4)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let key = SigningKey::from_bytes(&[1; 32]);
        let genesis = crate::genesis::single_validator_for_tests(&key);
        let mut other_chain = genesis.clone();
        other_chain.chain_id = "another".into();

        let honest = node(dirs[0].path(), &genesis);
        grow(&honest, "v");
        let fork = node(dirs[1].path(), &genesis);
        grow(&fork, "forged");
        let foreign = node(dirs[2].path(), &other_chain);
        grow(&foreign, "v");
        let behind = node(dirs[3].path(), &genesis);
        let target = honest.ledger.tip();
        assert_eq!(target.height, BLOCKS);

        // A fork of the same length: a sound chain that does not end at
        // the certified hash. Nothing of it is applied.
        let fork_addr = serve(fork, 1_000).await;
        let e = fetch_from(&behind, &fork_addr, BLOCKS, target.hash)
            .await
            .expect_err("a fork ends elsewhere");
        assert!(matches!(e, TransferError::WrongTip { .. }), "{e}");
        assert_eq!(behind.ledger.tip().height, 0);
        let spooled = || {
            std::fs::read_dir(dirs[3].path())
                .expect("list")
                .filter_map(|e| e.ok())
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(super::super::block_spool::SPOOL_PREFIX)
                })
        };
        assert!(!spooled(), "the fork's blocks are thrown away");

        // Another chain: its first block does not follow our genesis.
        let foreign_addr = serve(foreign, 1_000).await;
        let e = fetch_from(&behind, &foreign_addr, BLOCKS, target.hash)
            .await
            .expect_err("another chain");
        assert!(matches!(e, TransferError::BadChain { .. }), "{e}");
        assert_eq!(behind.ledger.tip().height, 0);

        // A peer that has not got as far as the target: it stops short,
        // and nothing it served is applied before the certified hash.
        let short_addr = serve(honest.clone(), 1_000).await;
        let e = fetch_from(&behind, &short_addr, BLOCKS + 5, [7; 32])
            .await
            .expect_err("short of the target");
        assert!(
            matches!(
                e,
                TransferError::Short {
                    reached: BLOCKS,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(behind.ledger.tip().height, 0);
        assert!(!spooled());

        // The honest peer serves 7 blocks a response: five requests.
        let honest_addr = serve(honest.clone(), 7).await;
        fetch_from(&behind, &honest_addr, BLOCKS, target.hash)
            .await
            .expect("caught up");
        assert_eq!(behind.ledger.tip().height, BLOCKS);
        assert_eq!(behind.ledger.tip().hash, target.hash);
        assert_eq!(
            behind.ledger.header(BLOCKS).expect("read"),
            honest.ledger.header(BLOCKS).expect("read")
        );
        assert!(!spooled(), "the spool goes once applied");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_a_peer_served_before_stopping_short_is_kept_for_the_next_but_not_a_liar_s() {
        let dirs: Vec<_> = (0..4)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let key = SigningKey::from_bytes(&[1; 32]);
        let genesis = crate::genesis::single_validator_for_tests(&key);
        let honest = node(dirs[0].path(), &genesis);
        grow(&honest, "v");
        // The same chain, but only 20 blocks of it.
        let behind_peer = node(dirs[1].path(), &genesis);
        grow_to(&behind_peer, "v", 20);
        let fork = node(dirs[2].path(), &genesis);
        grow(&fork, "forged");
        let me = node(dirs[3].path(), &genesis);
        let target = honest.ledger.tip();

        let short = serve(behind_peer, 7).await;
        let failed = fetch_resuming(&me, &short, BLOCKS, target.hash, None)
            .await
            .expect_err("short");
        assert!(
            matches!(failed.error, TransferError::Short { reached: 20, .. }),
            "{}",
            failed.error
        );
        let kept = failed.partial.expect("what it served is kept");
        assert_eq!(kept.chain.header.height, 20);
        assert_eq!(me.ledger.tip().height, 0, "nothing applied yet");

        // A forger after that: nothing is kept (it may be the earlier
        // peer that lied).
        let forger = serve(fork, 1_000).await;
        let failed = fetch_resuming(&me, &forger, BLOCKS, target.hash, Some(kept))
            .await
            .expect_err("the fork does not extend block 20");
        assert!(
            matches!(failed.error, TransferError::BadChain { .. }),
            "{}",
            failed.error
        );
        assert!(failed.partial.is_none());

        // Short again, then the honest peer carries on from block 20.
        let failed = fetch_resuming(&me, &short, BLOCKS, target.hash, None)
            .await
            .expect_err("short");
        let honest_addr = serve(honest.clone(), 4).await;
        fetch_resuming(&me, &honest_addr, BLOCKS, target.hash, failed.partial)
            .await
            .map_err(|f| f.error)
            .expect("caught up");
        assert_eq!(me.ledger.tip().hash, target.hash);
        assert_eq!(me.ledger.verify().expect("verifies").blocks, BLOCKS + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::codec;
    use ed25519_dalek::SigningKey;
    use kubeledger_pbft::{CommitCertificate, Message, Vote};

    fn keys() -> Vec<SigningKey> {
        (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect()
    }

    fn vset(keys: &[SigningKey]) -> ValidatorSet {
        let public: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        ValidatorSet::for_epoch(&public, 0).expect("vset")
    }

    fn certificate(
        vset: &ValidatorSet,
        keys: &[SigningKey],
        signers: &[u32],
        seq: Seq,
        forge: Option<u32>,
    ) -> Vec<u8> {
        let vote = Vote {
            view: 0,
            seq,
            digest: [7; 32],
        };
        let commits = signers
            .iter()
            .map(|&i| {
                // A forgery: signed by another key than the signer's.
                let key = if forge == Some(i) {
                    &keys[((i + 1) % 4) as usize]
                } else {
                    &keys[i as usize]
                };
                SignedMessage::sign(vset, i, key, Message::Commit(vote))
            })
            .collect();
        codec::encode_certificate(&CommitCertificate {
            view: 0,
            seq,
            digest: [7; 32],
            commits,
        })
        .expect("encode")
    }

    #[test]
    fn only_a_quorum_certificate_for_the_block_s_height_is_kept() {
        let keys = keys();
        let vset = vset(&keys);
        let good = certificate(&vset, &keys, &[0, 1, 2], 5, None);
        assert_eq!(
            verified_certificate(good.clone(), 5, &vset),
            Some(good.clone())
        );
        // Another height's certificate, served with this block.
        assert_eq!(verified_certificate(good, 6, &vset), None);
        // Too few signers for a quorum of 4.
        let short = certificate(&vset, &keys, &[0, 1], 5, None);
        assert_eq!(verified_certificate(short, 5, &vset), None);
        // One forged signature among a quorum's worth.
        let forged = certificate(&vset, &keys, &[0, 1, 2], 5, Some(1));
        assert_eq!(verified_certificate(forged, 5, &vset), None);
        // The same signer three times.
        let repeated = certificate(&vset, &keys, &[1, 1, 1], 5, None);
        assert_eq!(verified_certificate(repeated, 5, &vset), None);
        // Garbage, and nothing.
        assert_eq!(verified_certificate(vec![0xff; 40], 5, &vset), None);
        assert_eq!(verified_certificate(Vec::new(), 5, &vset), None);
        // Another validator set's signatures (another epoch).
        let other: Vec<SigningKey> = (11..=14u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let other_set = self::vset(&other);
        let foreign = certificate(&other_set, &other, &[0, 1, 2], 5, None);
        assert_eq!(verified_certificate(foreign, 5, &vset), None);
    }
}
