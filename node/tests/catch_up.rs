//! A replica that was down for many times more blocks than a peer serves in
//! one response catches up: it asks again from where each response ended,
//! checking the hash chain as the blocks stream in, and ends on the same
//! chain as the others.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::tx::envelope::put;

/// Blocks one `GetBlocks` response streams in this test.
const PER_RESPONSE: u64 = 40;
/// Blocks the others commit while the replica is down.
const LAG: u64 = 20 * PER_RESPONSE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_for_many_responses_of_blocks_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 10,
        max_block_txs: 1,
        ..ChainParams::default()
    };
    let mut nodes = consortium(dir.path(), 4, params);
    for node in &mut nodes {
        node.config.peer.max_blocks_per_response = PER_RESPONSE;
        std::fs::write(&node.config_path, node.config.to_toml()).expect("write config");
    }
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect_retry(&node.endpoint(), Duration::from_secs(60)).await);
    }
    let key = client_key(7);
    let mut nonce = 0u64;
    // Some blocks with everyone up, then replica 3 goes down.
    for _ in 0..20 {
        nonce += 1;
        submit_batch(
            &mut clients[0],
            vec![signed(&key, nonce, put(format!("k{nonce}"), "v"))],
        )
        .await;
    }
    wait_height(&clients[3], 10, Duration::from_secs(60)).await;
    children[3].start_kill().expect("SIGKILL");
    let _ = children[3].wait().await;
    let down_at = status(&mut clients[0]).await.height;

    // The others commit LAG more blocks: one transaction a block.
    let mut sent = 0;
    while status(&mut clients[0]).await.height < down_at + LAG {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                nonce += 1;
                signed(&key, nonce, put(format!("k{nonce}"), "v"))
            })
            .collect();
        sent += batch.len();
        let client = &mut clients[sent % 3];
        let results = submit_batch(client, batch).await;
        assert!(
            results.iter().all(|r| r.reject_reason == 0),
            "a transaction was refused: {results:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = status(&mut clients[0]).await.height;
    assert!(target >= down_at + LAG, "the others reached {target}");

    // Back up: it must fetch about LAG / PER_RESPONSE responses' worth.
    children[3] = spawn_node_process(&nodes[3]);
    let mut rejoined = connect_retry(&nodes[3].endpoint(), Duration::from_secs(60)).await;
    let reached = eventually(Duration::from_secs(180), || {
        let mut c = rejoined.clone();
        async move {
            let h = try_status(&mut c).await?.height;
            (h >= target).then_some(h)
        }
    })
    .await;
    assert!(reached >= target);
    eprintln!("down at {down_at}, others at {target}, rejoined at {reached}");
    let theirs = block_at(&mut clients[0], target).await;
    let ours = block_at(&mut rejoined, target).await;
    assert_eq!(
        ours.block.as_ref().and_then(|b| b.header.clone()),
        theirs.block.as_ref().and_then(|b| b.header.clone()),
        "block {target} differs after catching up\n{}",
        log_tail(&nodes[3], 40)
    );
    // The transfer counts once its last block is applied, just after the
    // tip moves there.
    let metrics_addr = nodes[3].config.listen.metrics;
    let transfers = eventually(Duration::from_secs(30), || async move {
        let n = sample(
            &scrape_metrics(metrics_addr).await,
            "kubeledger_state_transfers_total",
        );
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(transfers >= 1.0);
    drop(children);
}
