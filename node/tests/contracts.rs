//! Contracts on four real replicas: the asset-transfer example installed,
//! deployed through governance (its `init` runs on approval), invoked
//! concurrently by several clients, queried on every replica. The clean
//! failures (an overdraft, a contract that spins until out of fuel, one
//! that traps, an unknown contract or entry point, an `init` that fails)
//! commit with their outcome and no state change. A replica killed with
//! SIGKILL and restarted re-executes the calls with a cold engine and
//! ends on the same state root as the others.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::client::Client;
use kubeledger_node::crypto::keys;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::local::admin_key_path;
use kubeledger_node::proto::{self, config_change::Change};

const WAIT: Duration = Duration::from_secs(90);

fn example(name: &str) -> Vec<u8> {
    let path = format!("{}/../contracts/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn account(name: &str) -> Vec<u8> {
    let mut v = vec![name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v
}

fn transfer(from: &str, to: &str, amount: i64) -> Vec<u8> {
    let mut v = account(from);
    v.extend(account(to));
    v.extend_from_slice(&amount.to_le_bytes());
    v
}

async fn configure(
    c: &mut Client,
    admin: &ed25519_dalek::SigningKey,
    change: Change,
) -> proto::ConfigOutcome {
    c.submit_config(admin, change, WAIT)
        .await
        .expect("configuration change commits")
        .1
}

async fn install(c: &mut Client, admin: &ed25519_dalek::SigningKey, code: Vec<u8>) -> Vec<u8> {
    let hash = kubeledger_contract::code_hash(&code).to_vec();
    let outcome = configure(c, admin, Change::InstallCode(proto::InstallCode { code })).await;
    assert!(outcome.applied, "{}", outcome.message);
    hash
}

async fn deploy(
    c: &mut Client,
    admin: &ed25519_dalek::SigningKey,
    name: &str,
    code_hash: Vec<u8>,
    init_input: Vec<u8>,
) -> proto::ConfigOutcome {
    configure(
        c,
        admin,
        Change::DeployContract(proto::DeployContract {
            name: name.into(),
            code_hash,
            version: 1,
            init_input,
        }),
    )
    .await
}

async fn invoke(
    c: &mut Client,
    key: &ed25519_dalek::SigningKey,
    contract: &str,
    function: &str,
    input: Vec<u8>,
) -> proto::ContractOutcome {
    c.submit_call(
        key,
        proto::ContractCall {
            contract: contract.into(),
            function: function.into(),
            input,
            fuel: 0,
        },
        WAIT,
    )
    .await
    .expect("the call commits")
    .1
}

async fn balance(c: &mut Client, name: &str) -> i64 {
    let r = c
        .inner
        .query_contract(proto::QueryContractRequest {
            contract: "bank".into(),
            function: "balance".into(),
            input: account(name),
            caller: Vec::new(),
            fuel: 0,
        })
        .await
        .expect("query")
        .into_inner();
    let o = r.outcome.expect("outcome");
    assert!(o.ok, "{o:?}");
    i64::from_le_bytes(o.output.try_into().expect("8 bytes"))
}

/// The transactions of the `bank` contract a subscription lists, up to the
/// block by which `n` "transfer" events were emitted.
async fn calls_with_events(
    stream: &mut tonic::Streaming<proto::BlockEvent>,
    n: usize,
) -> Vec<proto::TxEvent> {
    let transfers = |txs: &[proto::TxEvent]| {
        txs.iter()
            .flat_map(|t| t.contract_events.iter())
            .filter(|e| e.topic == b"transfer" && e.contract == "bank")
            .count()
    };
    let mut txs = Vec::new();
    while transfers(&txs) < n {
        let block = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a block in time")
            .expect("stream")
            .expect("open");
        txs.extend(block.txs);
    }
    txs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_run_the_same_on_every_replica_and_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 20,
        ..ChainParams::default()
    };
    let nodes = consortium(dir.path(), 4, params);
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect_retry(&node.endpoint(), WAIT).await);
    }
    let admin = keys::load(&admin_key_path(dir.path(), "org1")).expect("admin key");

    eprintln!("step: install and deploy");
    let hash = install(&mut clients[0], &admin, example("asset_transfer")).await;
    let mut init = account("A");
    init.extend_from_slice(&1_000i64.to_le_bytes());
    init.extend(account("B"));
    init.extend_from_slice(&1_000i64.to_le_bytes());
    let deployed = deploy(&mut clients[0], &admin, "bank", hash.clone(), init).await;
    assert!(deployed.applied, "{}", deployed.message);
    // Code that does not compile is refused at the door, with the reason.
    let refused = clients[0]
        .submit_config(
            &admin,
            Change::InstallCode(proto::InstallCode {
                code: b"\0asm\x01\0\0\0garbage".to_vec(),
            }),
            WAIT,
        )
        .await
        .expect_err("refused");
    assert!(
        format!("{refused:?}").contains("cannot be installed"),
        "{refused:?}"
    );
    // A deployment of code nobody installed is refused.
    let missing = deploy(&mut clients[0], &admin, "ghost", vec![9; 32], Vec::new()).await;
    assert!(
        !missing.applied && missing.message.contains("install it first"),
        "{missing:?}"
    );
    // An init that fails rejects the deployment; nothing is deployed.
    let bad_init = deploy(
        &mut clients[0],
        &admin,
        "bank2",
        hash.clone(),
        vec![5, b'x'],
    )
    .await;
    assert!(
        !bad_init.applied && bad_init.message.contains("init failed"),
        "{bad_init:?}"
    );
    // A plain put cannot write the contract's namespace.
    let client = client_key(3);
    let forged = submit_batch(
        &mut clients[0],
        vec![signed(
            &client,
            1,
            kubeledger_node::tx::envelope::put(
                kubeledger_contract::namespaced("bank", b"A"),
                b"x".to_vec(),
            ),
        )],
    )
    .await;
    assert_ne!(forged[0].reject_reason, 0, "{forged:?}");

    // A subscriber on the contract's namespace, from the next block on
    // (live), sees every call with the events it emitted.
    let mut live = clients[1]
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: 0,
            key_prefix: kubeledger_contract::namespaced("bank", b""),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first_call_height = status(&mut clients[0]).await.height + 1;

    eprintln!("step: transfers from several clients at once");
    let mut tasks = Vec::new();
    for k in 0..4u8 {
        let mut c = clients[usize::from(k)].clone();
        tasks.push(tokio::spawn(async move {
            let key = client_key(10 + k);
            for i in 0..10 {
                let (from, to) = if (i + k) % 2 == 0 {
                    ("A", "B")
                } else {
                    ("B", "A")
                };
                let out = invoke(&mut c, &key, "bank", "transfer", transfer(from, to, 7)).await;
                assert!(out.ok, "{out:?}");
                assert_eq!(out.events.len(), 1);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }

    // 40 transfers, each with its "transfer" event, live and read back
    // from storage.
    let seen = calls_with_events(&mut live, 40).await;
    let mut stored = clients[2]
        .inner
        .subscribe(proto::SubscribeRequest {
            from_height: first_call_height,
            key_prefix: kubeledger_contract::namespaced("bank", b""),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let replayed = calls_with_events(&mut stored, 40).await;
    assert_eq!(seen.len(), replayed.len());

    eprintln!("step: clean failures");
    let key = client_key(20);
    let overdraft = invoke(
        &mut clients[1],
        &key,
        "bank",
        "transfer",
        transfer("A", "B", 1_000_000),
    )
    .await;
    assert_eq!(
        (overdraft.ok, overdraft.failure_kind.as_str()),
        (false, "abort"),
        "{overdraft:?}"
    );
    let spin = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "init"))
             (func (export "spin") (loop $l (br $l)))
             (func (export "boom") unreachable))"#,
    )
    .expect("wat");
    let spin_hash = install(&mut clients[0], &admin, spin).await;
    assert!(
        deploy(&mut clients[0], &admin, "spin", spin_hash, Vec::new())
            .await
            .applied
    );
    let out = invoke(&mut clients[2], &key, "spin", "spin", Vec::new()).await;
    assert_eq!(out.failure_kind, "out_of_fuel", "{out:?}");
    assert_eq!(
        out.fuel_used,
        kubeledger_node::tx::envelope::DEFAULT_CALL_FUEL
    );
    let out = invoke(&mut clients[2], &key, "spin", "boom", Vec::new()).await;
    assert_eq!(out.failure_kind, "trap", "{out:?}");
    let out = invoke(&mut clients[2], &key, "nobody", "x", Vec::new()).await;
    assert_eq!(out.failure_kind, "unknown_contract", "{out:?}");
    let out = invoke(&mut clients[2], &key, "bank", "steal", Vec::new()).await;
    assert_eq!(out.failure_kind, "unknown_function", "{out:?}");
    let out = invoke(&mut clients[2], &key, "bank", "init", Vec::new()).await;
    assert_eq!(out.failure_kind, "unknown_function", "{out:?}");

    eprintln!("step: every replica agrees");
    let tip = status(&mut clients[0]).await.height;
    for c in &clients {
        wait_height(c, tip, WAIT).await;
    }
    let (a, b) = (
        balance(&mut clients[0], "A").await,
        balance(&mut clients[0], "B").await,
    );
    assert_eq!(a + b, 2_000, "transfers keep the total");
    for c in clients.iter_mut() {
        assert_eq!((balance(c, "A").await, balance(c, "B").await), (a, b));
    }
    let reference = block_at(&mut clients[0], tip)
        .await
        .block
        .and_then(|b| b.header);
    for c in clients.iter_mut().skip(1) {
        assert_eq!(
            block_at(c, tip).await.block.and_then(|b| b.header),
            reference
        );
    }

    // Every replica counts the calls by outcome.
    for node in &nodes {
        let text = scrape_metrics(node.config.listen.metrics).await;
        let count = |outcome: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "kubeledger_contract_calls_total{{outcome=\"{outcome}\"}}"
                    ))?
                    .trim()
                    .parse::<f64>()
                    .ok()
                })
                .unwrap_or(0.0)
        };
        assert!(
            count("ok") >= 40.0 && count("out_of_fuel") >= 1.0 && count("trap") >= 1.0,
            "{text}"
        );
    }

    eprintln!("step: a replica killed and restarted re-executes with a cold engine");
    children[3].start_kill().expect("kill -9");
    let _ = children[3].wait().await;
    std::fs::remove_dir_all(nodes[3].config.data_dir.join("ledger")).expect("wipe");
    for i in 0..5 {
        let out = invoke(
            &mut clients[0],
            &key,
            "bank",
            "transfer",
            transfer("A", "B", 1 + i),
        )
        .await;
        assert!(out.ok, "{out:?}");
    }
    children[3] = spawn_node_process(&nodes[3]);
    let mut rejoined = connect_retry(&nodes[3].endpoint(), WAIT).await;
    let tip = status(&mut clients[0]).await.height;
    wait_height(&rejoined, tip, WAIT).await;
    assert_same_blocks(&mut rejoined, &mut clients[0], &[tip], &nodes[3]).await;
    assert_eq!(
        balance(&mut rejoined, "A").await,
        balance(&mut clients[0], "A").await
    );
    drop(children);
}
