//! A replica stopped with SIGTERM exits cleanly; a snapshot taken of a
//! running replica seeds its emptied data directory: the restore proves the chain, its tip and its
//! checkpoint certificate first, refuses a snapshot whose manifest lies,
//! and the restored replica rejoins and agrees block for block.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::tx::envelope::put;

fn kubeledger(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubeledger"))
        .args(args)
        .output()
        .expect("run kubeledger")
}

fn restore_from(snapshot: &std::path::Path, config: &str, json: bool) -> std::process::Output {
    let from = snapshot.to_str().expect("utf-8");
    let mut args = vec!["snapshot", "restore", "--from", from, "--config", config];
    if json {
        args.extend(["-o", "json"]);
    }
    kubeledger(&args)
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "kubeledger failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// Submits `n` puts through `c`.
async fn load(
    c: &mut kubeledger_node::client::Client,
    key: &ed25519_dalek::SigningKey,
    nonce: &mut u64,
    n: u64,
) {
    let batch: Vec<_> = (0..n)
        .map(|_| {
            *nonce += 1;
            signed(key, *nonce, put(format!("k{nonce}"), format!("v{nonce}")))
        })
        .collect();
    let results = submit_batch(c, batch).await;
    assert!(results.iter().all(|r| r.reject_reason == 0), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restored_from_a_peer_s_snapshot_rejoins_on_the_same_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 20,
        max_block_txs: 5,
        ..ChainParams::default()
    };
    let nodes = consortium(dir.path(), 4, params);
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect_retry(&node.endpoint(), Duration::from_secs(60)).await);
    }
    let key = client_key(5);
    let mut nonce = 0u64;
    load(&mut clients[0], &key, &mut nonce, 200).await;
    // Past a few checkpoints (every 10 blocks), so one is stable.
    wait_height(&clients[2], 30, Duration::from_secs(60)).await;

    let created = json_of(&kubeledger(&[
        "snapshot",
        "create",
        "--endpoint",
        &nodes[2].endpoint(),
        "-o",
        "json",
    ]));
    let snapshot = std::path::PathBuf::from(created["path"].as_str().expect("path"));
    let height = created["height"].as_u64().expect("height");
    assert!(height >= 30, "{created}");
    assert!(
        created["checkpoint_seq"].as_u64().expect("seq") >= 10,
        "{created}"
    );

    // Replica 3 is stopped as Kubernetes stops a pod (SIGTERM), which it
    // must finish, its peers' streams to it open or not, then loses its data.
    let pid = children[3].id().expect("pid").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(term.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), children[3].wait())
        .await
        .expect("a replica stops on SIGTERM instead of waiting for its peers' streams")
        .expect("wait");
    assert!(exited.success(), "{exited:?}\n{}", log_tail(&nodes[3], 20));
    let ledger_dir = nodes[3].config.data_dir.join("ledger");
    std::fs::remove_dir_all(&ledger_dir).expect("wipe replica 3");
    let config = nodes[3].config_path.to_str().expect("utf-8 path");

    // A copy of the snapshot whose manifest is changed, refused with the
    // rule it breaks, leaving no ledger.
    let forged = dir.path().join("forged-snapshot");
    std::fs::create_dir_all(forged.join("ledger")).expect("mkdir");
    for entry in std::fs::read_dir(snapshot.join("ledger")).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), forged.join("ledger").join(entry.file_name())).expect("copy");
    }
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(snapshot.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let refuse = |changed: serde_json::Value, rule: &str| {
        std::fs::write(forged.join("manifest.json"), changed.to_string()).expect("write");
        let refused = restore_from(&forged, config, false);
        assert!(!refused.status.success());
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(why.contains(rule), "{why}");
        assert!(!ledger_dir.exists(), "a refused restore leaves no ledger");
    };
    // Another tip than the one it holds.
    let mut other_tip = manifest.clone();
    other_tip["height"] = serde_json::json!(height + 1);
    refuse(other_tip, "its manifest says");
    // A certificate with one signature byte changed: no quorum.
    let mut bytes =
        hex::decode(manifest["checkpoint"].as_str().expect("a certificate")).expect("hex");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    let mut forged_proof = manifest.clone();
    forged_proof["checkpoint"] = serde_json::json!(hex::encode(bytes));
    refuse(forged_proof, "checkpoint certificate is invalid");
    // No certificate at all.
    let mut unproven = manifest.clone();
    unproven
        .as_object_mut()
        .expect("object")
        .remove("checkpoint");
    refuse(unproven, "carries no checkpoint certificate");

    let restored = json_of(&restore_from(&snapshot, config, true));
    assert_eq!(restored["height"].as_u64(), Some(height), "{restored}");
    // Every block from genesis (block 0) on.
    assert_eq!(
        restored["blocks_verified"].as_u64(),
        Some(height + 1),
        "{restored}"
    );
    // A node that has a ledger is not overwritten.
    let again = restore_from(&snapshot, config, false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Back up from the snapshot's height; the chain has moved on meanwhile.
    load(&mut clients[0], &key, &mut nonce, 200).await;
    children[3] = spawn_node_process(&nodes[3]);
    let mut rejoined = connect_retry(&nodes[3].endpoint(), Duration::from_secs(60)).await;
    let start = try_status(&mut rejoined).await.map(|s| s.height);
    assert!(
        start.is_some_and(|h| h >= height),
        "it starts from the snapshot: {start:?}"
    );
    let target = status(&mut clients[0]).await.height;
    wait_height(&rejoined, target, Duration::from_secs(120)).await;
    assert_same_blocks(
        &mut rejoined,
        &mut clients[0],
        &[1, height, target],
        &nodes[3],
    )
    .await;
    drop(children);
}
