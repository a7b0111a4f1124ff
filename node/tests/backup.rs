//! Scheduled backups: a replica with `[backup]` takes a snapshot into its
//! backup directory every interval, keeps the newest `keep`, and reports
//! the last one in `Status` and its metrics. When its data volume is lost
//! (SIGKILL, then the ledger deleted), `snapshot restore --if-empty` from
//! the backup directory skips a newer backup that does not prove, restores
//! the newest that does, leaves a ledger alone on a second run, and the
//! replica rejoins and agrees block for block. The backups go to another
//! filesystem than the data (tmpfs) where the machine has one.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::ledger::snapshot;
use kubeledger_node::tx::envelope::put;

const WAIT: Duration = Duration::from_secs(120);

fn restore(from: &std::path::Path, config: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubeledger"))
        .args(["snapshot", "restore", "--if-empty", "-o", "json", "--from"])
        .arg(from)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run kubeledger");
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_volume_comes_back_from_its_scheduled_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 20,
        max_block_txs: 5,
        ..ChainParams::default()
    };
    let mut nodes = consortium(dir.path(), 4, params);
    // The backup volume is another filesystem where there is one (tmpfs),
    // so the copy out of the data volume is not a rename.
    let volume = tempfile::Builder::new()
        .prefix("kubeledger-backups")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("backup volume");
    let backups = volume.path().join("backups-3");
    nodes[3].config.backup.dir = Some(backups.clone());
    nodes[3].config.backup.interval_s = 1;
    nodes[3].config.backup.keep = 2;
    std::fs::write(&nodes[3].config_path, nodes[3].config.to_toml()).expect("write config");
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect_retry(&node.endpoint(), WAIT).await);
    }
    let key = client_key(7);
    let mut nonce = 0u64;
    let mut load = |n: u64| {
        let batch: Vec<_> = (0..n)
            .map(|_| {
                nonce += 1;
                signed(&key, nonce, put(format!("k{nonce}"), format!("v{nonce}")))
            })
            .collect();
        batch
    };
    let results = submit_batch(&mut clients[0], load(200)).await;
    assert!(results.iter().all(|r| r.reject_reason == 0), "{results:?}");

    eprintln!("step: backups are taken on schedule and pruned");
    let metrics_addr = nodes[3].config.listen.metrics;
    // A backup is taken only when something was committed since the last
    // one, so the load goes on while they are counted.
    let deadline = std::time::Instant::now() + WAIT;
    let taken = loop {
        let text = scrape_metrics(metrics_addr).await;
        if metric(&text, "kubeledger_backups_total{outcome=\"ok\"}") >= 3.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "3 backups not taken in {WAIT:?}"
        );
        let more = submit_batch(&mut clients[0], load(10)).await;
        assert!(more.iter().all(|r| r.reject_reason == 0), "{more:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(metric(&taken, "kubeledger_last_backup_height") > 0.0);
    assert!(metric(&taken, "kubeledger_last_backup_timestamp_seconds") > 1.6e9);
    let kept = snapshot::list(&backups).expect("list backups");
    assert!(
        kept.len() <= 2,
        "keep = 2, found {kept:?} after {} backups",
        metric(&taken, "kubeledger_backups_total{outcome=\"ok\"}")
    );
    let s = status(&mut clients[3]).await;
    assert!(s.last_backup_height > 0 && s.last_backup_at_ms > 0, "{s:?}");

    eprintln!("step: the replica loses its data volume");
    children[3].start_kill().expect("kill -9");
    let _ = children[3].wait().await;
    std::fs::remove_dir_all(nodes[3].config.data_dir.join("ledger")).expect("wipe");
    let kept = snapshot::list(&backups).expect("list backups");
    let newest = kept.first().expect("a backup").clone();
    let newest_height = snapshot::Manifest::load(&newest).expect("manifest").height;
    // A newer backup whose database did not make it to the volume does
    // not prove and is passed over for the newest one that does.
    let broken = backups.join(format!("snapshot-{:012}-0", newest_height + 1));
    std::fs::create_dir_all(broken.join("ledger")).expect("mkdir");
    std::fs::copy(newest.join("manifest.json"), broken.join("manifest.json"))
        .expect("copy manifest");
    assert_eq!(snapshot::list(&backups).expect("list")[0], broken);

    eprintln!("step: restore from the backup directory");
    let restored = restore(&backups, &nodes[3].config_path);
    assert_eq!(restored["restored"], true, "{restored}");
    assert_eq!(
        restored["height"].as_u64(),
        Some(newest_height),
        "{restored}"
    );
    // An init container runs on every start: a ledger is left alone.
    let again = restore(&backups, &nodes[3].config_path);
    assert_eq!(again["restored"], false, "{again}");
    std::fs::remove_dir_all(&broken).expect("remove the broken backup");

    eprintln!("step: the restored replica rejoins");
    let more = submit_batch(&mut clients[0], load(100)).await;
    assert!(more.iter().all(|r| r.reject_reason == 0), "{more:?}");
    children[3] = spawn_node_process(&nodes[3]);
    let mut rejoined = connect_retry(&nodes[3].endpoint(), WAIT).await;
    let start = status(&mut rejoined).await;
    assert!(start.height >= newest_height, "{start:?}");
    // It knows its backups after a restart.
    assert!(start.last_backup_height >= newest_height, "{start:?}");
    let target = status(&mut clients[0]).await.height;
    wait_height(&rejoined, target, WAIT).await;
    assert_same_blocks(
        &mut rejoined,
        &mut clients[0],
        &[1, newest_height, target],
        &nodes[3],
    )
    .await;
    drop(children);
}
