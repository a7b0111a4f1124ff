//! The validator set grows and shrinks under load, with real processes.
//!
//! Four founding replicas (policy Automatic: the consortium admin's
//! proposals apply at once) and a fifth node that starts as an observer:
//!
//! 1. node-2 is killed (-9) before anything changes; the other three keep
//!    ordering (quorum 3 of 4).
//! 2. org5 is admitted with the observer's key: the new set of five takes
//!    over after the announced checkpoint. The observer promotes itself to
//!    a validator; headers from the switch on carry the new set's hash.
//! 3. node-2 restarts. It was down across the switch: it fetches the
//!    certificate that ended its epoch from a peer, catches up and joins
//!    the new set.
//! 4. node-3 is killed. Four of five remain, exactly a quorum of five, so
//!    blocks commit only because both the promoted node and the node that
//!    came back vote.
//! 5. node-3 restarts and the load stops; org5 is removed on the idle
//!    chain, which still reaches the switch (the primary cuts empty blocks
//!    until the epoch's end); the set of four takes over again, orders
//!    more, and the fifth node demotes itself to an observer.
//!
//! Throughout: the load (through node-0 and node-1) never fails, no
//! acknowledged transaction is lost, and every node holds the same chain.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::client::Client;
use kubeledger_node::crypto::keys;
use kubeledger_node::genesis::{Admission, AdmissionMode, ChainParams};
use kubeledger_node::local::admin_key_path;
use kubeledger_node::proto::{self, config_change::Change};
use kubeledger_node::tx::envelope;

const WAIT: Duration = Duration::from_secs(90);

async fn header(c: &mut Client, h: u64) -> proto::BlockHeader {
    block_at(c, h)
        .await
        .block
        .and_then(|b| b.header)
        .expect("header")
}

/// Waits until the node works in the epoch starting after `base`.
async fn wait_epoch(c: &Client, base: u64, observer: bool) -> proto::StatusResponse {
    eventually(WAIT, || {
        let mut c = c.clone();
        async move {
            let s = status(&mut c).await;
            (s.epoch_base == base && s.observer == observer && s.height >= base).then_some(s)
        }
    })
    .await
}

/// Submits a configuration change as the consortium admin (org1); the
/// first height the new validator set orders.
async fn change(c: &mut Client, admin: &ed25519_dalek::SigningKey, change: Change) -> u64 {
    let (committed, outcome) = c
        .submit_config(admin, change, WAIT)
        .await
        .expect("configuration change commits");
    assert!(outcome.applied, "not applied: {}", outcome.message);
    let proposal = c
        .inner
        .list_proposals(proto::ListProposalsRequest::default())
        .await
        .expect("proposals")
        .into_inner()
        .proposals
        .into_iter()
        .find(|p| p.id == outcome.proposal_id)
        .expect("proposal listed");
    assert_eq!(proposal.state, proto::ProposalState::Approved as i32);
    assert!(
        proposal.effective_height > committed.height + 20,
        "the switch is at least a window after the decision: {proposal:?}"
    );
    proposal.effective_height
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_join_and_leave_under_load() {
    // KUBELEDGER_KEEP_TEST_DIR=1 keeps the nodes' logs and data.
    let keep = std::env::var_os("KUBELEDGER_KEEP_TEST_DIR").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    eprintln!("test dir: {}", dir.path().display());
    let admission = Admission {
        mode: AdmissionMode::Automatic,
        ..Default::default()
    };
    let nodes = consortium_with(dir.path(), 4, ChainParams::default(), admission);
    let fifth = extra_node(dir.path(), &nodes[0], "node-4");
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut fifth_child = spawn_node_process(&fifth);
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(connect_retry(&n.endpoint(), WAIT).await);
    }
    let mut fifth_client = connect_retry(&fifth.endpoint(), WAIT).await;
    assert!(status(&mut fifth_client).await.observer);
    let org1 = keys::load(&admin_key_path(dir.path(), "org1")).expect("admin key");

    // Load through node-0 and node-1, which stay up throughout.
    let load = Load::start(&clients[..2], 4, 20, WAIT);
    wait_height(&clients[0], 5, WAIT).await;

    eprintln!("step: 1");
    // 1. node-2 goes down before the change.
    children[2].start_kill().expect("SIGKILL node-2");
    let _ = children[2].wait().await;
    let h = status(&mut clients[0]).await.height;
    wait_height(&clients[0], h + 5, WAIT).await;

    eprintln!("step: 2");
    // 2. Admit org5 with the fifth node's key: it is promoted at the switch.
    let fifth_key = keys::load(&fifth.config.key_file).expect("fifth key");
    let admit = Change::Admit(proto::AdmitMember {
        member: "org5".into(),
        organization: "Organisation 5".into(),
        admin_key: keys::generate().verifying_key().to_bytes().to_vec(),
        nodes: vec![proto::NodeInfo {
            name: "node-4".into(),
            public_key: fifth_key.verifying_key().to_bytes().to_vec(),
            peer_address: fifth.config.listen.peer.to_string(),
        }],
    });
    let grow_from = change(&mut clients[0], &org1, admit).await;
    let grow_base = grow_from - 1;
    assert_eq!(grow_base % 10, 0, "the switch follows a checkpoint");
    let promoted = wait_epoch(&fifth_client, grow_base, false).await;
    assert_eq!(promoted.validators, 5);
    assert_eq!(
        wait_epoch(&clients[0], grow_base, false).await.validators,
        5
    );

    eprintln!("step: 3");
    // 3. node-2 comes back after the switch and catches up across it.
    children[2] = spawn_node_process(&nodes[2]);
    let back = connect_retry(&nodes[2].endpoint(), WAIT).await;
    let rejoined = wait_epoch(&back, grow_base, false).await;
    assert_eq!(rejoined.validators, 5);

    eprintln!("step: 4");
    // 4. With node-3 down, 4 of 5 is exactly a quorum: blocks commit only
    //    with the votes of node-2 and of the promoted node.
    children[3].start_kill().expect("SIGKILL node-3");
    let _ = children[3].wait().await;
    let h = status(&mut clients[0]).await.height;
    wait_height(&clients[0], h + 10, WAIT).await;
    wait_height(&fifth_client, h + 10, WAIT).await;

    eprintln!("step: 5");
    // 5. node-3 back; the load stops; org5 removed on the idle chain.
    children[3] = spawn_node_process(&nodes[3]);
    let node3 = connect_retry(&nodes[3].endpoint(), WAIT).await;
    wait_epoch(&node3, grow_base, false).await;
    let (mut acked, failures) = load.stop().await;
    assert_eq!(failures, 0, "load transactions failed");
    let remove = Change::Remove(proto::RemoveMember {
        member: "org5".into(),
    });
    let shrink_from = change(&mut clients[1], &org1, remove).await;
    let shrink_base = shrink_from - 1;
    let demoted = wait_epoch(&fifth_client, shrink_base, true).await;
    assert_eq!(demoted.validators, 4);
    for c in &clients {
        assert_eq!(wait_epoch(c, shrink_base, false).await.validators, 4);
    }
    // The set of four orders again, past a checkpoint of its own.
    let key = client_key(30);
    for i in 0.. {
        let tx = clients[2].sign(&key, envelope::put(format!("after/{i}"), "v"));
        let id = envelope::tx_id(&tx);
        clients[2]
            .submit_and_wait(tx, WAIT)
            .await
            .expect("the set of four commits");
        acked.insert(id);
        if status(&mut clients[0]).await.stable_checkpoint > shrink_base {
            break;
        }
        assert!(i < 2_000, "no checkpoint after the shrink");
    }

    eprintln!("step: Same chain");
    // Same chain everywhere; each header names the set of its height. The
    // observer follows stable checkpoints, so on the now idle chain it
    // holds the blocks up to the last one.
    let tip = status(&mut clients[0]).await.height;
    for c in &clients {
        wait_height(c, tip, WAIT).await;
    }
    let stable = status(&mut clients[0]).await.stable_checkpoint;
    assert!(
        stable > shrink_base,
        "a checkpoint of the last epoch is stable"
    );
    wait_height(&fifth_client, stable, WAIT).await;
    let mut reference = clients[0].clone();
    let genesis_set = header(&mut reference, 1).await.validators_hash;
    let grown_set = header(&mut reference, grow_from).await.validators_hash;
    let shrunk_set = header(&mut reference, shrink_from).await.validators_hash;
    assert_ne!(genesis_set, grown_set);
    assert_ne!(grown_set, shrunk_set);
    assert_eq!(
        header(&mut reference, grow_base).await.validators_hash,
        genesis_set
    );
    assert_eq!(
        header(&mut reference, shrink_base).await.validators_hash,
        grown_set
    );
    for h in 1..=tip {
        let want = header(&mut reference, h).await;
        for c in clients.iter().skip(1) {
            let mut c = c.clone();
            assert_eq!(header(&mut c, h).await, want, "block {h} differs");
        }
        if h <= stable {
            let mut c = fifth_client.clone();
            assert_eq!(header(&mut c, h).await, want, "block {h} differs on node-4");
        }
    }
    assert!(!acked.is_empty());
    assert_committed(&mut reference, &acked).await;
    // The last block of each epoch names the next set.
    assert_eq!(
        header(&mut reference, grow_base).await.next_validators_hash,
        grown_set
    );
    assert_eq!(
        header(&mut reference, shrink_base)
            .await
            .next_validators_hash,
        shrunk_set
    );
    assert!(header(&mut reference, grow_from)
        .await
        .next_validators_hash
        .is_empty());

    eprintln!("step: State sync across both switches");
    // A new node joins by state sync: from the genesis set it verifies its
    // way through both epoch ends with headers alone, then follows.
    let mut late = extra_node(dir.path(), &nodes[0], "node-5");
    late.config.state_sync.min_distance = 1;
    std::fs::write(&late.config_path, late.config.to_toml()).expect("write config");
    let _late_child = spawn_node_process(&late);
    let mut late_client = connect_retry(&late.endpoint(), WAIT).await;
    let s = status(&mut late_client).await;
    assert!(s.observer);
    assert!(
        s.lowest_full_block > shrink_base,
        "{s:?}\n{}",
        log_tail(&late, 30)
    );
    assert_eq!(s.epoch_base, shrink_base, "{s:?}");
    let synced_at = s.lowest_full_block - 1;
    // Its tip is the reference chain's block (bodies at or below the sync
    // point are not held, so compare hashes).
    let tip = status(&mut late_client).await;
    assert_eq!(
        tip.last_block_hash,
        block_at(&mut reference, tip.height).await.hash,
        "the synced node's tip {} is not on the chain",
        tip.height
    );
    // An observer follows stable checkpoints: it reaches the reference's
    // latest one, and a transaction above its height is not known yet.
    let checkpoint = status(&mut reference).await.stable_checkpoint;
    wait_height(&late_client, checkpoint, WAIT).await;
    let followed = status(&mut late_client).await.height;
    let mut checked = 0;
    for c in &acked.iter().take(20).collect::<Vec<_>>() {
        let request = proto::GetTransactionRequest {
            tx_id: c.0.to_vec(),
        };
        let at = reference
            .inner
            .get_transaction(request.clone())
            .await
            .expect("committed on the reference")
            .into_inner()
            .height;
        let answer = late_client.inner.get_transaction(request).await;
        if at > followed {
            continue;
        }
        checked += 1;
        match answer {
            // Above the sync point it holds the body; at or below, the
            // transaction is known (no replay) but its body is not held.
            Ok(t) => {
                assert!(at > synced_at, "block {at} is at or below the sync point");
                assert_eq!(t.into_inner().height, at);
            }
            Err(e) => {
                assert!(at <= synced_at, "block {at} is above the sync point: {e:?}");
                assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
            }
        }
    }
    assert!(
        checked > 0,
        "no acknowledged transaction at or below {followed}"
    );
    fifth_child.start_kill().ok();
}
