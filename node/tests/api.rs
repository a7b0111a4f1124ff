//! The client API of a single node, end to end over gRPC.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::proto::{self, get_block_request::Selector, RejectReason, TxState};
use kubeledger_node::tx::envelope::{self, delete, put};
use kubeledger_node::tx::reject;
use prost::Message;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

async fn put_and_wait(
    client: &mut kubeledger_node::client::Client,
    tx: proto::SignedTransaction,
) -> proto::SubmitAndWaitResponse {
    client.submit_and_wait(tx, WAIT).await.expect("commits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_history_delete_and_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = InProcessNode::start(single_node(dir.path(), ChainParams::default())).await;
    let mut c = node.client().await;
    let key = client_key(1);

    let mut commits = Vec::new();
    for (nonce, payload) in [
        (1, put("HostBuilding:34", "balance=100")),
        (2, put("HostBuilding:34", "balance=80")),
        (3, delete("HostBuilding:34")),
        (4, put("HostBuilding:34", "balance=120")),
    ] {
        commits.push(put_and_wait(&mut c, signed(&key, nonce, payload)).await);
    }

    let got = get_key(&mut c, b"HostBuilding:34").await;
    assert!(got.found);
    assert_eq!(got.value, b"balance=120");
    let version = got.version.expect("version");
    assert_eq!(version.tx_id, commits[3].tx_id);
    assert_eq!(
        (version.height, version.tx_index),
        (commits[3].height, commits[3].tx_index)
    );

    let history = c.full_history(b"HostBuilding:34").await.expect("history");
    let values: Vec<(&[u8], bool)> = history
        .iter()
        .map(|e| (e.value.as_slice(), e.deleted))
        .collect();
    assert_eq!(
        values,
        vec![
            (&b"balance=100"[..], false),
            (&b"balance=80"[..], false),
            (&b""[..], true),
            (&b"balance=120"[..], false)
        ]
    );
    let ids: Vec<_> = history.iter().map(|e| e.tx_id.clone()).collect();
    let expected: Vec<_> = commits.iter().map(|c| c.tx_id.clone()).collect();
    assert_eq!(
        ids, expected,
        "history is oldest first and names the writing transactions"
    );

    // Pagination returns the same entries in pages.
    let page1 = c
        .inner
        .get_history(proto::GetHistoryRequest {
            key: b"HostBuilding:34".to_vec(),
            page_size: 3,
            page_token: vec![],
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(page1.entries.len(), 3);
    assert!(!page1.next_page_token.is_empty());
    let page2 = c
        .inner
        .get_history(proto::GetHistoryRequest {
            key: b"HostBuilding:34".to_vec(),
            page_size: 3,
            page_token: page1.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(page2.entries.len(), 1);
    assert!(page2.next_page_token.is_empty());
    assert_eq!(page2.entries[0].tx_id, commits[3].tx_id);
    let bad_token = c
        .inner
        .get_history(proto::GetHistoryRequest {
            key: b"HostBuilding:34".to_vec(),
            page_size: 3,
            page_token: b"junk".to_vec(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // A key that merely extends another has its own history.
    assert!(c
        .full_history(b"HostBuilding:3")
        .await
        .expect("history")
        .is_empty());

    // Transactions and blocks.
    let tx = c
        .inner
        .get_transaction(proto::GetTransactionRequest {
            tx_id: commits[1].tx_id.clone(),
        })
        .await
        .expect("tx")
        .into_inner();
    assert_eq!(tx.state, TxState::Committed as i32);
    assert_eq!(tx.height, commits[1].height);
    let by_height = block_at(&mut c, commits[1].height).await;
    assert_eq!(by_height.hash, commits[1].block_hash);
    let by_hash = c
        .inner
        .get_block(proto::GetBlockRequest {
            selector: Some(Selector::Hash(commits[1].block_hash.clone())),
        })
        .await
        .expect("block by hash")
        .into_inner();
    assert_eq!(by_hash.block, by_height.block);
    let missing = c
        .inner
        .get_block(proto::GetBlockRequest {
            selector: Some(Selector::Height(10_000)),
        })
        .await
        .expect_err("no such block");
    assert_eq!(missing.code(), Code::NotFound);

    let summary = c.verify_chain().await.expect("chain verifies");
    assert_eq!(summary.transactions, 4);
    node.stop().await;
}

fn rejection_of(status: &tonic::Status) -> RejectReason {
    reject::from_status(status)
        .map(|r| r.reason)
        .unwrap_or(RejectReason::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_distinct_status_is_counted_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        max_tx_bytes: 2048,
        max_value_bytes: 512,
        max_key_bytes: 64,
        ..ChainParams::default()
    };
    let node = InProcessNode::start(single_node(dir.path(), params)).await;
    let mut c = node.client().await;
    let key = client_key(2);
    let good = signed(&key, 1, put("k", "v"));
    put_and_wait(&mut c, good.clone()).await;
    let before = common::status(&mut c).await;

    let mut bad_sig = signed(&key, 2, put("k", "v2"));
    bad_sig.signature[0] ^= 0xff;
    let mut no_sig = signed(&key, 3, put("k", "v3"));
    no_sig.signature.clear();
    let mut tampered = signed(&key, 4, put("k", "v4"));
    let mut body = proto::TxBody::decode(tampered.body.clone()).expect("body");
    body.nonce = 99; // signed bytes changed after signing
    tampered.body = body.encode_to_vec().into();
    let cases: Vec<(&str, proto::SignedTransaction, Code, RejectReason)> = vec![
        (
            "malformed",
            malformed_tx(),
            Code::InvalidArgument,
            RejectReason::Malformed,
        ),
        (
            "wrong chain",
            envelope::sign(&key, "other-chain", 5, 1, put("k", "v")),
            Code::FailedPrecondition,
            RejectReason::WrongChain,
        ),
        (
            "bad signature",
            bad_sig,
            Code::Unauthenticated,
            RejectReason::BadSignature,
        ),
        (
            "tampered body",
            tampered,
            Code::Unauthenticated,
            RejectReason::BadSignature,
        ),
        (
            "missing signature",
            no_sig,
            Code::Unauthenticated,
            RejectReason::MissingSignature,
        ),
        (
            "oversized tx",
            signed(&key, 6, put("k", vec![b'x'; 4096])),
            Code::OutOfRange,
            RejectReason::TxTooLarge,
        ),
        (
            "oversized value",
            signed(&key, 7, put("k", vec![b'x'; 1000])),
            Code::OutOfRange,
            RejectReason::FieldTooLarge,
        ),
        (
            "empty key",
            signed(&key, 8, put("", "v")),
            Code::InvalidArgument,
            RejectReason::InvalidPayload,
        ),
        (
            "replay",
            good.clone(),
            Code::AlreadyExists,
            RejectReason::DuplicateCommitted,
        ),
    ];
    for (name, tx, code, reason) in cases {
        let status = c
            .inner
            .submit(proto::SubmitRequest { tx: Some(tx) })
            .await
            .expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_eq!(rejection_of(&status), reason, "{name}");
        assert!(!status.message().is_empty(), "{name} has a message");
    }
    let empty = c
        .inner
        .submit(proto::SubmitRequest { tx: None })
        .await
        .expect_err("no tx");
    assert_eq!(empty.code(), Code::InvalidArgument);

    // A batch mixing good and bad: the good one is admitted and commits.
    let fresh = signed(&key, 10, put("k2", "ok"));
    let mut broken = signed(&key, 11, put("k3", "no"));
    broken.signature[5] ^= 1;
    let results = submit_batch(&mut c, vec![fresh.clone(), broken, fresh.clone()]).await;
    let reasons: Vec<i32> = results.iter().map(|r| r.reject_reason).collect();
    assert_eq!(
        reasons,
        vec![
            RejectReason::Unspecified as i32,
            RejectReason::BadSignature as i32,
            RejectReason::DuplicatePending as i32
        ]
    );
    let id = envelope::tx_id(&fresh);
    wait_committed(&c, id, WAIT).await;

    let after = common::status(&mut c).await;
    assert_eq!(
        after.txs_committed,
        before.txs_committed + 1,
        "only the one good transaction was added"
    );
    let got = get_key(&mut c, b"k").await;
    assert_eq!(got.value, b"v", "refused writes changed nothing");

    let metrics = reqwest_metrics(&node).await;
    for reason in [
        "malformed",
        "wrong_chain",
        "bad_signature",
        "missing_signature",
        "tx_too_large",
        "field_too_large",
        "invalid_payload",
        "duplicate_committed",
        "duplicate_pending",
    ] {
        let line = format!("kubeledger_txs_rejected_total{{reason=\"{reason}\"}}");
        assert!(
            metrics.contains(&line),
            "metrics count {reason}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("kubeledger_txs_rejected_total{reason=\"bad_signature\"} 3"),
        "{metrics}"
    );
    // Bad input is no fault of the primary: no view change, so the request
    // timeout in force is the chain's view-change timeout.
    let vc_timeout = u64::from(ChainParams::default().view_change_timeout_ms);
    assert_eq!(
        (after.view_changes, after.request_timeout_ms),
        (0, vc_timeout)
    );
    let line = format!(
        "kubeledger_consensus_request_timeout_seconds {}",
        vc_timeout as f64 / 1000.0
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    node.stop().await;
}

async fn reqwest_metrics(node: &InProcessNode) -> String {
    scrape_metrics(node.addrs.metrics).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_refused_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = single_node(dir.path(), ChainParams::default());
    let key = client_key(3);
    let tx = signed(&key, 1, put("anchor/1", "record"));
    let node = InProcessNode::start(config.clone()).await;
    let mut c = node.client().await;
    let first = put_and_wait(&mut c, tx.clone()).await;
    node.stop().await;

    let node = InProcessNode::start(config).await;
    let mut c = node.client().await;
    let status = c
        .inner
        .submit(proto::SubmitRequest {
            tx: Some(tx.clone()),
        })
        .await
        .expect_err("replay");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(rejection_of(&status), RejectReason::DuplicateCommitted);
    let wait = c
        .submit_and_wait(tx, WAIT)
        .await
        .expect_err("replay via SubmitAndWait");
    assert!(wait.to_string().contains("already committed"), "{wait}");
    let history = c.full_history(b"anchor/1").await.expect("history");
    assert_eq!(history.len(), 1, "written exactly once");
    assert_eq!(history[0].tx_id, first.tx_id);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_filters_by_prefix_and_resumes_from_a_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = InProcessNode::start(single_node(dir.path(), ChainParams::default())).await;
    let mut c = node.client().await;
    let key = client_key(4);
    let a1 = put_and_wait(&mut c, signed(&key, 1, put("AgreementList:1", "x"))).await;
    let b1 = put_and_wait(&mut c, signed(&key, 2, put("HostBuilding:1", "y"))).await;
    let a2 = put_and_wait(&mut c, signed(&key, 3, put("AgreementList:2", "z"))).await;

    let mut stream = c
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: a1.height,
            key_prefix: b"AgreementList:".to_vec(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut seen = Vec::new();
    let mut last_height = 0;
    while last_height < a2.height {
        let event = stream.next().await.expect("event").expect("ok");
        let header = event.header.expect("header");
        assert_eq!(
            header.height,
            last_height.max(a1.height - 1) + 1,
            "heights arrive in order, none skipped"
        );
        last_height = header.height;
        for t in event.txs {
            assert!(t.key.starts_with(b"AgreementList:"));
            seen.push(t.tx_id);
        }
    }
    assert_eq!(seen, vec![a1.tx_id.clone(), a2.tx_id.clone()]);
    assert!(b1.height > a1.height);

    // Live: the next matching commit arrives on the same stream.
    let a3 = put_and_wait(&mut c, signed(&key, 4, put("AgreementList:3", "w"))).await;
    let live = loop {
        let event = stream.next().await.expect("event").expect("ok");
        if !event.txs.is_empty() {
            break event;
        }
    };
    assert_eq!(live.txs[0].tx_id, a3.tx_id);

    // Resuming later starts exactly there.
    let mut resumed = c
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: a2.height,
            key_prefix: vec![],
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = resumed.next().await.expect("event").expect("ok");
    assert_eq!(first.header.expect("header").height, a2.height);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_cut_by_size_before_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long interval: only the size limit can cut the first blocks.
    let params = ChainParams {
        block_interval_ms: 60_000,
        max_block_txs: 10,
        ..ChainParams::default()
    };
    let node = InProcessNode::start(single_node(dir.path(), params)).await;
    let mut c = node.client().await;
    let key = client_key(5);
    let txs: Vec<_> = (0..20)
        .map(|i| signed(&key, i, put(format!("k{i}"), "v")))
        .collect();
    let results = submit_batch(&mut c, txs).await;
    assert!(results.iter().all(|r| r.reject_reason == 0));
    let status = eventually(WAIT, || {
        let mut c = c.clone();
        async move {
            let s = try_status(&mut c).await?;
            (s.txs_committed == 20).then_some(s)
        }
    })
    .await;
    assert_eq!(status.height, 2, "two full blocks of 10");
    for h in 1..=2 {
        let b = block_at(&mut c, h).await;
        assert_eq!(b.block.expect("block").header.expect("header").tx_count, 10);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_everything_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 60_000,
        ..ChainParams::default()
    };
    let config = single_node(dir.path(), params);
    let node = InProcessNode::start(config.clone()).await;
    let mut c = node.client().await;
    let key = client_key(6);
    let txs: Vec<_> = (0..500)
        .map(|i| signed(&key, i, put(format!("g{i}"), "v")))
        .collect();
    let ids: Vec<_> = txs.iter().map(envelope::tx_id).collect();
    let results = submit_batch(&mut c, txs).await;
    assert!(results.iter().all(|r| r.reject_reason == 0));
    node.stop().await; // long before the 60 s interval

    let node = InProcessNode::start(config).await;
    let mut c = node.client().await;
    assert_committed(&mut c, &ids).await;
    node.stop().await;
}

/// The services the server reflection on `channel` lists, asked in the
/// reflection protocol version `$version` (`v1` or `v1alpha`).
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut reflection = ServerReflectionClient::new($channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(futures::stream::iter(vec![request]))
            .await
            .expect(concat!(stringify!($version), " reflection"))
            .into_inner();
        let response = responses.next().await.expect("a response").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!(concat!(
                "unexpected ",
                stringify!($version),
                " reflection answer"
            ));
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = InProcessNode::start(single_node(dir.path(), ChainParams::default())).await;
    let channel = kubeledger_node::client::channel(&node.endpoint())
        .await
        .expect("channel");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "kubeledger.v1.Ledger"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let names = reflected_services!(v1, channel.clone());
    assert!(
        names.iter().any(|n| n == "kubeledger.v1.Ledger"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );

    // The older protocol version, which grpcurl 1.8 speaks.
    let names = reflected_services!(v1alpha, channel);
    assert!(
        names.iter().any(|n| n == "kubeledger.v1.Ledger"),
        "{names:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_refused_whole_and_counted() {
    use kubeledger_node::api::ledger_service::MAX_BATCH_TXS;
    use kubeledger_protocol::bounded_codec::MAX_TOP_LEVEL_FIELDS;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = InProcessNode::start(single_node(dir.path(), ChainParams::default())).await;
    let mut c = node.client().await;
    let key = client_key(9);

    // One transaction over the batch limit: refused whole, nothing admitted.
    let txs: Vec<_> = (0..=MAX_BATCH_TXS as u64)
        .map(|i| signed(&key, i, put(format!("batch/{i}"), "v")))
        .collect();
    let first = envelope::tx_id(&txs[0]);
    let err = c
        .inner
        .submit_batch(proto::SubmitBatchRequest { txs })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let rejection = reject::from_status(&err).expect("a reason");
    assert_eq!(rejection.reason, RejectReason::BatchTooLarge);
    assert!(
        rejection.message.contains("at most 10000"),
        "{}",
        rejection.message
    );
    let known = c
        .inner
        .get_transaction(proto::GetTransactionRequest {
            tx_id: first.0.to_vec(),
        })
        .await
        .map(|r| r.into_inner().state);
    assert!(
        !matches!(known, Ok(s) if s == TxState::Committed as i32 || s == TxState::Pending as i32),
        "a transaction of the refused batch was admitted: {known:?}"
    );

    // Millions of 2-byte entries: refused before they are decoded.
    let flood = proto::SubmitBatchRequest {
        txs: vec![proto::SignedTransaction::default(); MAX_TOP_LEVEL_FIELDS + 1],
    };
    let err = c.inner.submit_batch(flood).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("fields"), "{err:?}");

    // The node is fine: a batch within the limit is admitted and commits.
    let ok = signed(&key, 1_000_000, put("batch/ok", "v"));
    let results = submit_batch(&mut c, vec![ok.clone()]).await;
    assert_eq!(results[0].reject_reason, RejectReason::Unspecified as i32);
    let metrics = reqwest_metrics(&node).await;
    let line = format!(
        "kubeledger_txs_rejected_total{{reason=\"batch_too_large\"}} {}",
        MAX_BATCH_TXS + 1
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    node.stop().await;
}
