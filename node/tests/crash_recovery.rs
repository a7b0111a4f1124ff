//! A real node process under load, killed with SIGKILL at arbitrary
//! moments and restarted: every acknowledged transaction must survive,
//! nothing may be half-written, and the chain must verify from genesis.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kubeledger_node::config::StorageConfig;
use kubeledger_node::genesis::{ChainParams, Genesis};
use kubeledger_node::ledger::Ledger;
use kubeledger_node::proto::{self, TxState};
use kubeledger_node::tx::envelope::{self, put};
use tokio::process::{Child, Command};

const ROUNDS: usize = 3;

/// tx id -> (key, value) of transactions whose commit the client saw.
type Acknowledged = Arc<Mutex<HashMap<Vec<u8>, (String, String)>>>;

fn spawn_node(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kubeledger"))
        .arg("node")
        .arg("--config")
        .arg(config_path(dir))
        .arg("--log")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubeledger node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 50,
        max_block_txs: 500,
        ..ChainParams::default()
    };
    let config = single_node(dir.path(), params);
    let endpoint = format!("http://{}", config.listen.grpc);
    let acknowledged: Acknowledged = Arc::default();
    let key = client_key(9);
    let mut nonce = 0u64;

    for round in 0..ROUNDS {
        let mut child = spawn_node(dir.path());
        let mut client = connect_retry(&endpoint, Duration::from_secs(60)).await;
        let start = status(&mut client).await.height;

        // Acknowledgements come from the commit stream, as a client sees them.
        let mut events = client
            .inner
            .subscribe(proto::SubscribeRequest {
                from_height: start + 1,
                key_prefix: vec![],
            })
            .await
            .expect("subscribe")
            .into_inner();
        let mut sent: HashMap<Vec<u8>, (String, String)> = HashMap::new();
        let mut batches = 0;
        // Write until enough blocks are durable, then kill mid-stream with
        // more batches still in flight.
        loop {
            let txs: Vec<_> = (0..200)
                .map(|_| {
                    nonce += 1;
                    let (k, v) = (
                        format!("crash/{nonce}"),
                        format!("round {round} value {nonce}"),
                    );
                    let tx = envelope::sign(&key, CHAIN, nonce, 1, put(k.clone(), v.clone()));
                    sent.insert(envelope::tx_id(&tx).0.to_vec(), (k, v));
                    tx
                })
                .collect();
            let mut c = client.inner.clone();
            tokio::spawn(async move {
                let _ = c.submit_batch(proto::SubmitBatchRequest { txs }).await;
            });
            batches += 1;
            while let Ok(Some(Ok(event))) =
                tokio::time::timeout(Duration::from_millis(5), events.next()).await
            {
                let mut ack = acknowledged.lock().expect("lock");
                for t in event.txs {
                    if let Some(kv) = sent.get(&t.tx_id) {
                        ack.insert(t.tx_id.clone(), kv.clone());
                    }
                }
            }
            let height = try_status(&mut client).await.map_or(0, |s| s.height);
            if height >= start + 3 && batches >= 8 + round * 5 {
                break;
            }
            // Let commits keep pace so the kill lands among blocks in flight.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
        // Drain events that reached us before the process died.
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            let mut ack = acknowledged.lock().expect("lock");
            for t in event.txs {
                if let Some(kv) = sent.get(&t.tx_id) {
                    ack.insert(t.tx_id.clone(), kv.clone());
                }
            }
        }
    }

    // Restart once more and check everything acknowledged is there.
    let mut child = spawn_node(dir.path());
    let mut client = connect_retry(&endpoint, Duration::from_secs(60)).await;
    let ack = acknowledged.lock().expect("lock").clone();
    assert!(
        ack.len() >= 1000,
        "the load produced acknowledged commits ({})",
        ack.len()
    );
    let checks = futures::stream::iter(ack.iter().map(|(id, (k, v))| {
        let mut c = client.inner.clone();
        async move {
            let tx = c
                .get_transaction(proto::GetTransactionRequest { tx_id: id.clone() })
                .await
                .expect("acknowledged transaction is present")
                .into_inner();
            assert_eq!(tx.state, TxState::Committed as i32);
            let got = c
                .get(proto::GetRequest {
                    key: k.clone().into_bytes(),
                })
                .await
                .expect("get")
                .into_inner();
            assert_eq!(String::from_utf8_lossy(&got.value), v.as_str());
        }
    }))
    .buffer_unordered(16);
    checks.collect::<Vec<()>>().await;
    eprintln!(
        "{} acknowledged transactions checked after {ROUNDS} kills",
        ack.len()
    );
    let summary = client
        .verify_chain()
        .await
        .expect("hash links and merkle roots verify from genesis");
    assert!(summary.transactions >= ack.len() as u64);
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;

    // Offline: the state matches the tip's commitment, nothing half-written.
    let genesis = Genesis::load(&config.genesis_file).expect("genesis");
    let ledger = Ledger::open(
        &config.data_dir.join("ledger"),
        genesis,
        &StorageConfig::default(),
    )
    .expect("reopen");
    let report = ledger.verify().expect("chain and state commitment verify");
    assert_eq!(report.transactions, summary.transactions);
}
