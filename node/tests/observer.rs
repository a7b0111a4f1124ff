//! A node whose key is not in the validator set runs as an observer next to
//! a 4-replica consortium of real processes: it follows the chain by
//! verified stable checkpoints, holds the validators' blocks exactly,
//! serves reads, refuses transactions, and catches up again after kill -9.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::client::Client;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::proto::{self, RejectReason};
use kubeledger_node::tx::{envelope, reject};

const WAIT: Duration = Duration::from_secs(60);

async fn block_hash(c: &mut Client, h: u64) -> Vec<u8> {
    block_at(c, h).await.hash
}

/// Puts until the validators' stable checkpoint covers the last put;
/// returns that checkpoint.
async fn load_past_a_checkpoint(c: &mut Client, tag: &str) -> u64 {
    let key = client_key(7);
    let mut last = 0;
    for i in 0.. {
        let tx = c.sign(&key, envelope::put(format!("{tag}/{i}"), "v"));
        last = c.submit_and_wait(tx, WAIT).await.expect("put").height;
        let s = status(c).await;
        if i >= 20 && s.stable_checkpoint >= last {
            return s.stable_checkpoint;
        }
        assert!(i < 2_000, "no stable checkpoint covered height {last}");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_follows_verifies_serves_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = consortium(dir.path(), 4, ChainParams::default());
    let _validators: Vec<_> = nodes.iter().map(spawn_node_process).collect();

    // The observer: same genesis, a key that is no validator's.
    let observer = extra_node(dir.path(), &nodes[0], "observer");
    let mut child = spawn_node_process(&observer);

    let mut validator = connect_retry(&nodes[0].endpoint(), WAIT).await;
    let mut obs = connect_retry(&observer.endpoint(), WAIT).await;
    assert!(status(&mut obs).await.observer);
    assert!(!status(&mut validator).await.observer);

    let checkpoint = load_past_a_checkpoint(&mut validator, "a").await;
    wait_height(&obs, checkpoint, WAIT).await;
    for h in 1..=checkpoint {
        assert_eq!(
            block_hash(&mut obs, h).await,
            block_hash(&mut validator, h).await,
            "block {h} differs on the observer"
        );
    }
    let read = obs
        .inner
        .get(proto::GetRequest {
            key: b"a/0".to_vec(),
        })
        .await
        .expect("read on the observer")
        .into_inner();
    assert!(read.found, "the observer serves committed state");

    let tx = obs.sign(&client_key(8), envelope::put("w", "v"));
    let status_err = obs
        .inner
        .submit(proto::SubmitRequest { tx: Some(tx) })
        .await
        .expect_err("observers do not order transactions");
    assert_eq!(
        reject::from_status(&status_err).map(|r| r.reason),
        Some(RejectReason::ReadOnly)
    );

    // kill -9, the chain moves on, the observer comes back and catches up.
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let later = load_past_a_checkpoint(&mut validator, "b").await;
    assert!(later > checkpoint);
    let _child = spawn_node_process(&observer);
    let mut obs = connect_retry(&observer.endpoint(), WAIT).await;
    wait_height(&obs, later, WAIT).await;
    assert_eq!(
        block_hash(&mut obs, later).await,
        block_hash(&mut validator, later).await
    );
}
