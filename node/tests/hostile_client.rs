//! A hostile client against a 4-replica consortium of real processes, while
//! honest clients keep every replica busy. The hostile client sends every
//! replica malformed, non-canonical, oversized, wrong-chain, badly signed and
//! replayed transactions, replays of pending ones inside a batch, and more
//! than one sender's pending quota; it sends the primary, in addition, a
//! batch over `MAX_BATCH_TXS`, a batch over `MAX_TOP_LEVEL_FIELDS` fields, a
//! 4 MiB transaction, an undecodable request and one over the request size
//! limit, and it holds 200 `Subscribe` and 200 `GetBlocks` streams open on
//! the primary (half read as fast as it sends, half never read again) while
//! it repeats the cheap attacks on every replica.
//!
//! Each attack gets its own refusal (status code and reject reason). Every
//! replica stays up and ready throughout (sampled during the attack), honest
//! transactions keep committing during it, every height advances, the
//! replicas agree on the chain, and each replica's
//! `kubeledger_txs_rejected_total` shows exactly what it refused.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use futures::future::join_all;
use kubeledger_node::api::ledger_service::MAX_BATCH_TXS;
use kubeledger_node::api::MAX_REQUEST_BYTES;
use kubeledger_node::client::Client;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::local::LocalNode;
use kubeledger_node::proto::{
    self, ledger_client::LedgerClient, peer_client::PeerClient, tx_body::Payload, RejectReason,
};
use kubeledger_node::tx::envelope::{self, put};
use kubeledger_node::tx::{reject, TxId};
use kubeledger_protocol::bounded_codec::MAX_TOP_LEVEL_FIELDS;
use prost::Message;
use tokio::process::Child;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

const N: usize = 4;
/// Bound on every wait; each failure says what did not happen.
const WAIT: Duration = Duration::from_secs(45);
/// Pending transactions one sender may have on a replica (set in every
/// replica's config; honest load workers have one pending at a time).
const QUOTA: usize = 5;
/// Streams of each kind (`Subscribe`, `GetBlocks`) held open on the primary.
const STREAMS: usize = 200;
/// Connections they share, per kind: the first half carry the streams that
/// are read, the second half the ones that never are (so that unread data
/// cannot hold up the read streams' connection window).
const CONNECTIONS: usize = 8;
/// Honest transactions that must commit, and blocks every replica must
/// execute, while the attack is on.
const HONEST_DURING: usize = 40;
const BLOCKS_DURING: u64 = 15;
/// Key prefix of the honest load ([`Load`]).
const HONEST_PREFIX: &[u8] = b"load/";

/// Refusals sent to one replica, by metric label.
type Counts = HashMap<&'static str, u64>;

/// Reasons only the hostile client causes: the replica's counter must equal
/// what was sent to it. (Duplicates can also come from gossip races, so
/// those are checked as lower bounds.)
const EXACT: &[&str] = &[
    "malformed",
    "non_canonical",
    "wrong_chain",
    "bad_signature",
    "missing_signature",
    "tx_too_large",
    "field_too_large",
    "invalid_payload",
    "batch_too_large",
    "sender_quota",
];
const AT_LEAST: &[&str] = &["duplicate_committed", "duplicate_pending"];

fn rejection_of(status: &tonic::Status) -> RejectReason {
    reject::from_status(status)
        .map(|r| r.reason)
        .unwrap_or(RejectReason::Unspecified)
}

fn count(counts: &mut Counts, reason: RejectReason, n: u64) {
    *counts.entry(reject::label_for(reason)).or_default() += n;
}

/// One hostile transaction and the refusal it must get.
struct Bad {
    name: &'static str,
    tx: proto::SignedTransaction,
    code: Code,
    reason: RejectReason,
}

impl Bad {
    fn new(
        name: &'static str,
        tx: proto::SignedTransaction,
        code: Code,
        reason: RejectReason,
    ) -> Self {
        Self {
            name,
            tx,
            code,
            reason,
        }
    }
}

/// The cheap hostile transactions, fresh each call: none may be admitted.
fn cheap_bad_txs(key: &SigningKey, committed: &proto::SignedTransaction) -> Vec<Bad> {
    let fresh = |what: &str| signed(key, rand::random(), put(format!("hostile/{what}"), "v"));
    let mut bad_sig = fresh("bad-signature");
    bad_sig.signature[17] ^= 0x04; // one bit
    let mut tampered = fresh("tampered");
    let mut body = tampered.body.to_vec();
    let last = body.len() - 1;
    body[last] ^= 0x01; // the last byte of the value: still canonical
    tampered.body = body.into();
    let mut unsigned = fresh("unsigned");
    unsigned.signature.clear();
    // The nonce field again after the payload: decodes, but re-encodes
    // differently. Signed as sent, so only the encoding is at fault.
    let mut body = fresh("non-canonical").body.to_vec();
    body.extend_from_slice(&[0x18, 0x07]);
    let non_canonical = proto::SignedTransaction {
        signature: key.sign(&body).to_bytes().to_vec(),
        body: body.into(),
    };
    vec![
        Bad::new(
            "malformed body",
            malformed_tx(),
            Code::InvalidArgument,
            RejectReason::Malformed,
        ),
        Bad::new(
            "non-canonical body",
            non_canonical,
            Code::InvalidArgument,
            RejectReason::NonCanonical,
        ),
        Bad::new(
            "wrong chain",
            envelope::sign(
                key,
                "other-chain",
                rand::random(),
                kubeledger_node::client::now_ms(),
                put("hostile/wrong-chain", "v"),
            ),
            Code::FailedPrecondition,
            RejectReason::WrongChain,
        ),
        Bad::new(
            "flipped signature bit",
            bad_sig,
            Code::Unauthenticated,
            RejectReason::BadSignature,
        ),
        Bad::new(
            "body changed after signing",
            tampered,
            Code::Unauthenticated,
            RejectReason::BadSignature,
        ),
        Bad::new(
            "no signature",
            unsigned,
            Code::Unauthenticated,
            RejectReason::MissingSignature,
        ),
        Bad::new(
            "empty key",
            signed(key, rand::random(), put("", "v")),
            Code::InvalidArgument,
            RejectReason::InvalidPayload,
        ),
        Bad::new(
            "replay of a committed transaction",
            committed.clone(),
            Code::AlreadyExists,
            RejectReason::DuplicateCommitted,
        ),
    ]
}

/// Transactions over the chain's size limits (256 KiB a transaction,
/// 128 KiB a value).
fn oversized_txs(key: &SigningKey) -> Vec<Bad> {
    vec![
        Bad::new(
            "transaction over max_tx_bytes",
            signed(
                key,
                rand::random(),
                put("hostile/big", vec![b'x'; 300 * 1024]),
            ),
            Code::OutOfRange,
            RejectReason::TxTooLarge,
        ),
        Bad::new(
            "value over max_value_bytes",
            signed(
                key,
                rand::random(),
                put("hostile/value", vec![b'x'; 200 * 1024]),
            ),
            Code::OutOfRange,
            RejectReason::FieldTooLarge,
        ),
    ]
}

/// Fails unless `status` carries `expected` (gRPC code, reason); counts
/// the refusal.
fn assert_refused_and_count(
    status: &tonic::Status,
    expected: (Code, RejectReason),
    counts: &mut Counts,
) {
    assert_eq!(
        (status.code(), rejection_of(status)),
        expected,
        "{status:?}"
    );
    count(counts, expected.1, 1);
}

/// Submits `bad` alone; it must be refused as expected.
async fn refuse(c: &mut Client, bad: Bad, counts: &mut Counts) {
    let status = c
        .inner
        .submit(proto::SubmitRequest { tx: Some(bad.tx) })
        .await
        .expect_err(bad.name);
    assert_eq!(
        (status.code(), rejection_of(&status)),
        (bad.code, bad.reason),
        "{}: {status:?}",
        bad.name
    );
    assert!(!status.message().is_empty(), "{} has a message", bad.name);
    count(counts, bad.reason, 1);
}

/// Submits all of `bads` in one batch; each must be refused as expected.
async fn refuse_in_batch(c: &mut Client, bads: Vec<Bad>, counts: &mut Counts) {
    let expected: Vec<(&str, i32)> = bads.iter().map(|b| (b.name, b.reason as i32)).collect();
    let results = c
        .inner
        .submit_batch(proto::SubmitBatchRequest {
            txs: bads.into_iter().map(|b| b.tx).collect(),
        })
        .await
        .expect("a batch of bad transactions is answered per transaction")
        .into_inner()
        .results;
    let got: Vec<(&str, i32)> = expected
        .iter()
        .zip(&results)
        .map(|((name, _), r)| (*name, r.reject_reason))
        .collect();
    assert_eq!(got, expected, "batch of bad transactions");
    for (_, reason) in expected {
        count(counts, RejectReason::try_from(reason).expect("a reason"), 1);
    }
}

/// Every per-transaction attack on one replica, once; the refusals sent
/// and the hostile transactions that were (rightly) admitted.
async fn attack_replica(
    mut c: Client,
    seed: u8,
    committed: proto::SignedTransaction,
) -> (Counts, Vec<TxId>) {
    let key = client_key(seed);
    let mut counts = Counts::new();
    let mut admitted = Vec::new();
    let mut bads = cheap_bad_txs(&key, &committed);
    bads.extend(oversized_txs(&key));
    for bad in bads {
        refuse(&mut c, bad, &mut counts).await;
    }

    // A committed transaction replayed through SubmitAndWait.
    let status = c
        .inner
        .submit_and_wait(proto::SubmitAndWaitRequest {
            tx: Some(committed.clone()),
            timeout_ms: 1_000,
        })
        .await
        .expect_err("replay through SubmitAndWait");
    assert_refused_and_count(
        &status,
        (Code::AlreadyExists, RejectReason::DuplicateCommitted),
        &mut counts,
    );

    // No transaction at all: refused as malformed, and counted.
    let status = c
        .inner
        .submit(proto::SubmitRequest { tx: None })
        .await
        .expect_err("a request without a transaction");
    assert_refused_and_count(
        &status,
        (Code::InvalidArgument, RejectReason::Malformed),
        &mut counts,
    );

    // Replays of a pending transaction: the same one three times in a
    // batch, admitted once.
    let pending = signed(
        &key,
        rand::random(),
        put(format!("hostile/{seed}/pending"), "v"),
    );
    let results = submit_batch(
        &mut c,
        vec![pending.clone(), pending.clone(), pending.clone()],
    )
    .await;
    let reasons: Vec<i32> = results.iter().map(|r| r.reject_reason).collect();
    assert_eq!(
        reasons,
        vec![
            RejectReason::Unspecified as i32,
            RejectReason::DuplicatePending as i32,
            RejectReason::DuplicatePending as i32
        ],
        "replays of a pending transaction"
    );
    count(&mut counts, RejectReason::DuplicatePending, 2);
    admitted.push(envelope::tx_id(&pending));

    // One sender over its pending quota: a fresh key, so exactly QUOTA of
    // these are admitted and the next is refused.
    let spammer = client_key(seed + 10);
    let txs: Vec<_> = (0..=QUOTA as u64)
        .map(|i| signed(&spammer, i, put(format!("hostile/{seed}/quota/{i}"), "v")))
        .collect();
    let ids: Vec<TxId> = txs.iter().map(envelope::tx_id).collect();
    let results = submit_batch(&mut c, txs).await;
    let reasons: Vec<i32> = results.iter().map(|r| r.reject_reason).collect();
    let mut expected = vec![RejectReason::Unspecified as i32; QUOTA];
    expected.push(RejectReason::SenderQuota as i32);
    assert_eq!(reasons, expected, "one sender past its quota: {results:?}");
    count(&mut counts, RejectReason::SenderQuota, 1);
    admitted.extend_from_slice(&ids[..QUOTA]);
    (counts, admitted)
}

/// Passes request bytes through unchanged, and answers as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;
#[derive(Debug, Clone, Copy, Default)]
struct RawEncoder;
#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `bytes` as the request message of `method` on the Ledger service.
async fn raw_request(endpoint: &str, method: &'static str, bytes: Vec<u8>) -> tonic::Status {
    let channel = kubeledger_node::client::channel(endpoint)
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    match grpc
        .unary::<Vec<u8>, Vec<u8>, _>(tonic::Request::new(bytes), path, RawCodec)
        .await
    {
        Ok(r) => panic!("{method} accepted hostile bytes: {:?}", r.into_inner()),
        Err(status) => status,
    }
}

/// The attacks only the primary gets (the expensive ones).
async fn attack_primary(mut c: Client, endpoint: String, seed: u8) -> Counts {
    let mut counts = Counts::new();

    // One transaction over the batch limit, each validly signed: refused
    // whole, before anything is checked, nothing admitted.
    let key = client_key(seed);
    let txs = tokio::task::spawn_blocking(move || {
        (0..=MAX_BATCH_TXS as u64)
            .map(|i| signed(&key, i, put(format!("hostile/batch/{i}"), "v")))
            .collect::<Vec<_>>()
    })
    .await
    .expect("signing");
    let probes = [
        envelope::tx_id(&txs[0]),
        envelope::tx_id(&txs[MAX_BATCH_TXS]),
    ];
    let status = c
        .inner
        .submit_batch(proto::SubmitBatchRequest { txs })
        .await
        .expect_err("a batch over MAX_BATCH_TXS is refused");
    assert_eq!(
        (status.code(), rejection_of(&status)),
        (Code::OutOfRange, RejectReason::BatchTooLarge),
        "{status:?}"
    );
    assert!(
        status.message().contains(&MAX_BATCH_TXS.to_string()),
        "{status:?}"
    );
    count(
        &mut counts,
        RejectReason::BatchTooLarge,
        MAX_BATCH_TXS as u64 + 1,
    );
    for id in probes {
        let known = c
            .inner
            .get_transaction(proto::GetTransactionRequest {
                tx_id: id.0.to_vec(),
            })
            .await;
        assert!(
            matches!(&known, Err(s) if s.code() == Code::NotFound),
            "a transaction of the refused batch was admitted: {known:?}"
        );
    }

    // Two-byte entries past the field bound: refused before decoding
    // (not a transaction refusal, so not counted by reason).
    let flood = proto::SubmitBatchRequest {
        txs: vec![proto::SignedTransaction::default(); MAX_TOP_LEVEL_FIELDS + 1],
    };
    let status = c
        .inner
        .submit_batch(flood)
        .await
        .expect_err("a request over MAX_TOP_LEVEL_FIELDS fields is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("fields"), "{status:?}");

    // A 4 MiB transaction (within the request limit, far over the chain's).
    refuse(
        &mut c,
        Bad::new(
            "4 MiB transaction",
            signed(
                &client_key(seed),
                rand::random(),
                put("hostile/huge", vec![b'x'; 4 << 20]),
            ),
            Code::OutOfRange,
            RejectReason::TxTooLarge,
        ),
        &mut counts,
    )
    .await;

    // Bytes that are no SubmitRequest at all: a length running past the end.
    // gRPC maps an unparsable message to INTERNAL.
    let status = raw_request(
        &endpoint,
        "/kubeledger.v1.Ledger/Submit",
        vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01],
    )
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    // A request over the server's size limit: refused from its length
    // prefix.
    let status = raw_request(
        &endpoint,
        "/kubeledger.v1.Ledger/SubmitBatch",
        vec![0; MAX_REQUEST_BYTES + 1],
    )
    .await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    counts
}

/// The cheap attacks, repeated on every replica until stopped.
struct Barrage {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Counts>>,
}

impl Barrage {
    fn start(clients: &[Client], seed: u8, committed: &proto::SignedTransaction) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (mut c, stop, committed) = (c.clone(), stop.clone(), committed.clone());
                let key = client_key(seed + i as u8);
                tokio::spawn(async move {
                    let mut counts = Counts::new();
                    while !stop.load(Ordering::Relaxed) {
                        for bad in cheap_bad_txs(&key, &committed) {
                            refuse(&mut c, bad, &mut counts).await;
                        }
                        refuse_in_batch(&mut c, cheap_bad_txs(&key, &committed), &mut counts).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    counts
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops it; what each replica was sent.
    async fn stop(self) -> Vec<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.push(t.await.expect("barrage task"));
        }
        all
    }
}

/// Read streams held open on one replica.
struct ReadStreams {
    /// Never read again after their first item.
    held_events: Vec<tonic::Streaming<proto::BlockEvent>>,
    held_blocks: Vec<tonic::Streaming<proto::CertifiedBlock>>,
    /// Reading as fast as the replica sends.
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// The highest height each read stream delivered.
    event_heights: Arc<Vec<AtomicU64>>,
    block_heights: Arc<Vec<AtomicU64>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// The connections, kept open as long as the streams.
    _channels: Vec<Channel>,
}

async fn channels(endpoint: &str) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(
            kubeledger_node::client::channel(endpoint)
                .await
                .expect("connect"),
        );
    }
    out
}

fn read_by_reader(i: usize) -> bool {
    i % CONNECTIONS < CONNECTIONS / 2
}

impl ReadStreams {
    /// Opens `STREAMS` `Subscribe` streams on the gRPC port and `STREAMS`
    /// `GetBlocks` streams on the peer port, all from height 1; each must
    /// deliver its first item.
    async fn open(node: &LocalNode) -> Self {
        let grpc = channels(&node.endpoint()).await;
        let peer = channels(&format!("http://{}", node.config.listen.peer)).await;
        let events = join_all((0..STREAMS).map(|i| {
            let mut c = LedgerClient::new(grpc[i % CONNECTIONS].clone());
            async move {
                let mut s = c
                    .subscribe(proto::SubscribeRequest {
                        from_height: 1,
                        key_prefix: Vec::new(),
                    })
                    .await
                    .expect("Subscribe is served")
                    .into_inner();
                let first = s
                    .message()
                    .await
                    .expect("a first event")
                    .expect("the stream stays open");
                assert_eq!(first.header.expect("header").height, 1);
                s
            }
        }))
        .await;
        let blocks = join_all((0..STREAMS).map(|i| {
            let mut c = PeerClient::new(peer[i % CONNECTIONS].clone());
            async move {
                let mut s = c
                    .get_blocks(proto::GetBlocksRequest {
                        from_height: 1,
                        to_height: u64::MAX,
                    })
                    .await
                    .expect("GetBlocks is served")
                    .into_inner();
                let first = s
                    .message()
                    .await
                    .expect("a first block")
                    .expect("the stream stays open");
                assert_eq!(height_of(&first), 1);
                (c, s)
            }
        }))
        .await;

        let readers_per_kind = (0..STREAMS).filter(|i| read_by_reader(*i)).count();
        let event_heights: Arc<Vec<AtomicU64>> =
            Arc::new((0..readers_per_kind).map(|_| AtomicU64::new(1)).collect());
        let block_heights: Arc<Vec<AtomicU64>> =
            Arc::new((0..readers_per_kind).map(|_| AtomicU64::new(1)).collect());
        let errors: Arc<Mutex<Vec<String>>> = Default::default();
        let mut readers = Vec::new();
        let mut held_events = Vec::new();
        let mut held_blocks = Vec::new();
        let mut slot = 0;
        for (i, mut s) in events.into_iter().enumerate() {
            if !read_by_reader(i) {
                held_events.push(s);
                continue;
            }
            let (heights, errors, k) = (event_heights.clone(), errors.clone(), slot);
            slot += 1;
            readers.push(tokio::spawn(async move {
                loop {
                    match s.message().await {
                        Ok(Some(event)) => {
                            let h = event.header.map_or(0, |h| h.height);
                            heights[k].fetch_max(h, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            errors
                                .lock()
                                .expect("errors")
                                .push("Subscribe ended".into());
                            return;
                        }
                        Err(e) => {
                            errors
                                .lock()
                                .expect("errors")
                                .push(format!("Subscribe: {e}"));
                            return;
                        }
                    }
                }
            }));
        }
        slot = 0;
        for (i, (mut c, mut s)) in blocks.into_iter().enumerate() {
            if !read_by_reader(i) {
                held_blocks.push(s);
                continue;
            }
            let (heights, errors, k) = (block_heights.clone(), errors.clone(), slot);
            slot += 1;
            readers.push(tokio::spawn(async move {
                // A stream ends at the tip: ask again from the next height.
                let mut next = 2;
                loop {
                    loop {
                        match s.message().await {
                            Ok(Some(b)) => {
                                let h = height_of(&b);
                                heights[k].fetch_max(h, Ordering::Relaxed);
                                next = h + 1;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                errors
                                    .lock()
                                    .expect("errors")
                                    .push(format!("GetBlocks: {e}"));
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    s = match c
                        .get_blocks(proto::GetBlocksRequest {
                            from_height: next,
                            to_height: u64::MAX,
                        })
                        .await
                    {
                        Ok(r) => r.into_inner(),
                        Err(e) => {
                            errors
                                .lock()
                                .expect("errors")
                                .push(format!("GetBlocks: {e}"));
                            return;
                        }
                    };
                }
            }));
        }
        Self {
            held_events,
            held_blocks,
            readers,
            event_heights,
            block_heights,
            errors,
            _channels: grpc.into_iter().chain(peer).collect(),
        }
    }

    /// The lowest height any read stream of each kind has delivered.
    fn lowest(&self) -> (u64, u64) {
        let min = |v: &[AtomicU64]| {
            v.iter()
                .map(|h| h.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        };
        (min(&self.event_heights), min(&self.block_heights))
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }

    /// Closes every stream; how many were held unread.
    fn close(self) -> usize {
        for r in &self.readers {
            r.abort();
        }
        self.held_events.len() + self.held_blocks.len()
    }
}

fn height_of(b: &proto::CertifiedBlock) -> u64 {
    b.block
        .as_ref()
        .and_then(|b| b.header.as_ref())
        .map_or(0, |h| h.height)
}

/// Whether `tx` is one of the honest load's puts.
fn is_honest(tx: &proto::SignedTransaction) -> bool {
    proto::TxBody::decode(tx.body.clone())
        .ok()
        .and_then(|b| b.payload)
        .is_some_and(|p| matches!(p, Payload::Put(p) if p.key.starts_with(HONEST_PREFIX)))
}

/// The first honest transaction committed on `c`, with its height.
async fn first_honest(mut c: Client) -> Option<(proto::SignedTransaction, u64)> {
    let tip = status(&mut c).await.height;
    for h in 1..=tip {
        let block = block_at(&mut c, h).await.block?;
        if let Some(tx) = block.txs.into_iter().find(is_honest) {
            return Some((tx, h));
        }
    }
    None
}

/// The gRPC readiness probe (the Ledger service's health).
async fn ready(endpoint: &str) -> Result<(), String> {
    let channel = kubeledger_node::client::channel(endpoint)
        .await
        .map_err(|e| format!("gRPC port: {e}"))?;
    let r = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "kubeledger.v1.Ledger".into(),
        })
        .await
        .map_err(|e| format!("health check: {e}"))?;
    match r.into_inner().status {
        s if s == ServingStatus::Serving as i32 => Ok(()),
        s => Err(format!("health status {s}")),
    }
}

/// The HTTP readiness probe, `/readyz` on the metrics port.
async fn readyz(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("metrics port: {e}"))?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("/readyz request: {e}"))?;
    let mut out = String::new();
    stream
        .read_to_string(&mut out)
        .await
        .map_err(|e| format!("/readyz response: {e}"))?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("/readyz: {out}"))
    }
}

/// Samples every replica until stopped: its process is running, and both
/// readiness probes pass.
struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Child>, u64, Vec<String>)>,
}

impl Monitor {
    fn start(nodes: Vec<LocalNode>, mut children: Vec<Child>, attacking: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut rounds_under_attack = 0;
            let probe = Duration::from_secs(10);
            while !stopping.load(Ordering::Relaxed) {
                let during = attacking.load(Ordering::Relaxed);
                for (i, (n, child)) in nodes.iter().zip(children.iter_mut()).enumerate() {
                    if let Some(exit) = child.try_wait().expect("poll child") {
                        failures.push(format!("node {i} exited ({exit})"));
                        continue;
                    }
                    for result in [
                        tokio::time::timeout(probe, ready(&n.endpoint())).await,
                        tokio::time::timeout(probe, readyz(n.config.listen.metrics)).await,
                    ] {
                        match result {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => failures.push(format!("node {i} not ready: {e}")),
                            Err(_) => failures.push(format!("node {i}: readiness probe hung")),
                        }
                    }
                }
                if during && attacking.load(Ordering::Relaxed) {
                    rounds_under_attack += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (children, rounds_under_attack, failures)
        });
        Self { stop, task }
    }

    async fn stop(self) -> (Vec<Child>, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("monitor")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_crashes_stalls_and_blinds_nothing() {
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 100,
        ..ChainParams::default()
    };
    let mut nodes = consortium(dir.path(), N, params);
    for n in &mut nodes {
        n.config.mempool.max_txs_per_sender = QUOTA;
        std::fs::write(&n.config_path, n.config.to_toml()).expect("write config");
    }
    let children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(connect_retry(&n.endpoint(), WAIT).await);
    }
    for n in &nodes {
        eventually(WAIT, || async { ready(&n.endpoint()).await.ok() }).await;
    }
    let load = Load::start(&clients, N as u8, 41, WAIT);

    // An honest transaction committed on every replica, to replay.
    let (committed, committed_at) = eventually(WAIT, || first_honest(clients[0].clone())).await;
    for c in &clients {
        wait_height(c, committed_at, WAIT).await;
    }
    let primary = status(&mut clients[0]).await.primary_index as usize;
    assert!(primary < N, "a primary: {primary}");

    let attacking = Arc::new(AtomicBool::new(false));
    let monitor = Monitor::start(nodes.clone(), children, attacking.clone());

    // The attack.
    attacking.store(true, Ordering::Relaxed);
    let attack_began = Instant::now();
    let mut start = Vec::new();
    for c in clients.iter_mut() {
        start.push(status(c).await.height);
    }
    let streams = ReadStreams::open(&nodes[primary]).await;
    let barrage = Barrage::start(&clients, 120, &committed);
    let (per_replica, extra) = tokio::join!(
        join_all(clients.iter().enumerate().map(|(i, c)| attack_replica(
            c.clone(),
            100 + i as u8,
            committed.clone()
        ))),
        attack_primary(clients[primary].clone(), nodes[primary].endpoint(), 130),
    );

    // Honest transactions keep committing, and every replica keeps
    // executing blocks, while the barrage runs and the streams are held.
    let deadline = Instant::now() + WAIT;
    let mut scanned = start[primary];
    let mut honest_during = 0;
    loop {
        let mut heights = Vec::new();
        for c in clients.iter_mut() {
            heights.push(status(c).await.height);
        }
        for h in scanned + 1..=heights[primary] {
            let block = block_at(&mut clients[primary], h)
                .await
                .block
                .expect("block");
            honest_during += block.txs.iter().filter(|t| is_honest(t)).count();
        }
        scanned = heights[primary];
        let advanced = heights
            .iter()
            .zip(&start)
            .all(|(h, s)| *h >= s + BLOCKS_DURING);
        let (events_at, blocks_at) = streams.lowest();
        let streams_follow = events_at > start[primary] && blocks_at > start[primary];
        if honest_during >= HONEST_DURING && advanced && streams_follow {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "under attack, in {WAIT:?}: {honest_during} honest transactions committed, \
             heights {heights:?} from {start:?}, read streams at {:?}, stream errors {:?}",
            streams.lowest(),
            streams.errors()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream_errors = streams.errors();
    assert!(
        stream_errors.is_empty(),
        "read streams failed: {stream_errors:?}"
    );
    let barraged = barrage.stop().await;
    let held = streams.close();
    attacking.store(false, Ordering::Relaxed);
    let attack_lasted = attack_began.elapsed();
    let (children, rounds_under_attack, failures) = monitor.stop().await;
    assert!(
        failures.is_empty(),
        "{failures:#?}\n{}",
        nodes
            .iter()
            .map(|n| log_tail(n, 30))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        rounds_under_attack >= 2,
        "readiness sampled {rounds_under_attack} times under attack"
    );

    // Everything honest that was acknowledged, and every hostile
    // transaction that was rightly admitted, is committed everywhere.
    let (acknowledged, failed) = load.stop().await;
    assert!(!acknowledged.is_empty(), "no honest transaction committed");
    assert_eq!(failed, 0, "honest transactions failed during the attack");
    let admitted: Vec<TxId> = per_replica.iter().flat_map(|(_, a)| a.clone()).collect();
    let mut top = 0;
    for id in &admitted {
        let height = wait_committed(&clients[primary], *id, WAIT).await;
        top = top.max(height);
    }
    for c in clients.iter_mut() {
        top = top.max(status(c).await.height);
    }
    for c in &clients {
        wait_height(c, top, WAIT).await;
    }
    // (One replica at a time per client; the replicas in parallel.)
    let everything: Vec<TxId> = acknowledged.iter().chain(&admitted).copied().collect();
    join_all(clients.iter().map(|c| {
        let (mut c, everything) = (c.clone(), &everything);
        async move { assert_committed(&mut c, everything).await }
    }))
    .await;

    // Every height advanced; the replicas agree where they all are.
    let mut end = Vec::new();
    let mut view_changes = Vec::new();
    for c in clients.iter_mut() {
        let s = status(c).await;
        end.push(s.height);
        view_changes.push(s.view_changes);
    }
    for (i, (s, e)) in start.iter().zip(&end).enumerate() {
        assert!(e > s, "node {i} did not advance: {s} -> {e}");
    }
    for height in [start.iter().copied().min().unwrap_or(1), top] {
        let mut hashes = Vec::new();
        for c in clients.iter_mut() {
            hashes.push(block_at(c, height).await.hash);
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "replicas disagree at height {height}: {hashes:?}"
        );
    }

    // Each replica counted exactly the refusals it was sent.
    for (i, n) in nodes.iter().enumerate() {
        let mut sent = per_replica[i].0.clone();
        let extras = if i == primary {
            extra.clone()
        } else {
            Counts::new()
        };
        for (reason, k) in barraged[i].iter().chain(&extras) {
            *sent.entry(*reason).or_default() += *k;
        }
        let metrics = scrape_metrics(n.config.listen.metrics).await;
        for reason in EXACT.iter().chain(AT_LEAST) {
            let series = format!("kubeledger_txs_rejected_total{{reason=\"{reason}\"}}");
            let counted = sample(&metrics, &series) as u64;
            let expected = sent.get(reason).copied().unwrap_or(0);
            if EXACT.contains(reason) {
                assert_eq!(counted, expected, "node {i}: {series}");
            } else {
                assert!(
                    counted >= expected,
                    "node {i}: {series} {counted} < {expected}"
                );
            }
        }
        eprintln!("node {i}: refusals sent {sent:?}");
    }
    eprintln!(
        "attack: {attack_lasted:?}, {honest_during} honest transactions committed during it, \
         {rounds_under_attack} readiness rounds, {held} streams held unread; heights {start:?} \
         -> {end:?}; view changes {view_changes:?}; primary {primary}; total {:?}",
        began.elapsed()
    );
    for mut child in children {
        let _ = child.kill().await;
    }
}
