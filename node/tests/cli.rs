//! The `kubeledger` command line against a real node process: the README's
//! put / get / history / delete / status commands, with the client key file
//! given by `--key`.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use kubeledger_node::genesis::ChainParams;

fn kubeledger(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubeledger"))
        .args(args)
        .env_remove("KUBELEDGER_KEY")
        .env_remove("KUBELEDGER_ENDPOINT")
        .output()
        .expect("run kubeledger")
}

fn ok(args: &[&str]) -> String {
    let out = kubeledger(args);
    assert!(
        out.status.success(),
        "kubeledger {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_history_delete_and_status_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = single_node(
        dir.path(),
        ChainParams {
            block_interval_ms: 50,
            ..ChainParams::default()
        },
    );
    let mut child = {
        let nodes = kubeledger_node::local::LocalNode {
            name: config.name.clone(),
            dir: dir.path().join("node-0"),
            config_path: config_path(dir.path()),
            config: config.clone(),
        };
        spawn_node_process(&nodes)
    };
    let endpoint = format!("http://{}", config.listen.grpc);
    let _ = connect_retry(&endpoint, Duration::from_secs(60)).await;
    let key_file = dir.path().join("client.key");
    let key = key_file.to_str().expect("utf-8 path");
    let e = endpoint.as_str();

    let put = json(&[
        "put",
        "HostBuilding:34",
        r#"{"balance":100}"#,
        "--endpoint",
        e,
        "--key",
        key,
        "-o",
        "json",
    ]);
    assert!(put["height"].as_u64().is_some_and(|h| h >= 1), "{put}");
    assert!(
        Path::new(&key_file).exists(),
        "the client key is created on first use"
    );
    ok(&[
        "put",
        "HostBuilding:34",
        r#"{"balance":80}"#,
        "--endpoint",
        e,
        "--key",
        key,
    ]);

    let got = json(&["get", "HostBuilding:34", "--endpoint", e, "-o", "json"]);
    assert_eq!(got["found"], true, "{got}");
    assert_eq!(got["value"], r#"{"balance":80}"#, "{got}");

    let history = json(&["history", "HostBuilding:34", "--endpoint", e, "-o", "json"]);
    let values: Vec<&str> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["value"].as_str())
        .collect();
    assert_eq!(
        values,
        [r#"{"balance":100}"#, r#"{"balance":80}"#],
        "oldest first: {history}"
    );

    ok(&["delete", "HostBuilding:34", "--endpoint", e, "--key", key]);
    let history = json(&["history", "HostBuilding:34", "--endpoint", e, "-o", "json"]);
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3, "{history}");
    assert_eq!(
        versions[2]["deleted"], true,
        "the delete is recorded: {history}"
    );
    // A key that is not there (any more) is an answer, and a failed exit
    // status for scripts.
    let out = kubeledger(&["get", "HostBuilding:34", "--endpoint", e, "-o", "json"]);
    assert!(!out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["found"], false, "{got}");

    let status = json(&["status", "--endpoint", e, "-o", "json"]);
    assert_eq!(status["txs_committed"].as_u64(), Some(3), "{status}");

    // Bad input gets a clear error, not a panic.
    let out = kubeledger(&["get", "--endpoint", e]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<KEY>"));

    let _ = child.start_kill();
    let _ = child.wait().await;
}
