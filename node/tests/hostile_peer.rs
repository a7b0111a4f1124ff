//! An outsider on the peer port of a 4-replica consortium of real processes:
//! a 40 KB frame of signed messages nested 10,000 deep, sent to every peer
//! port, an unsigned PREPARE claiming a far height, and a flood of forged
//! votes claiming to be replica 1's. Every node stays up and ready,
//! believes no forged height, closes the flooding stream, counts what it
//! refused, and keeps committing.

mod common;

use std::time::Duration;

use common::*;
use kubeledger_node::genesis::ChainParams;
use kubeledger_node::proto::{peer_client::PeerClient, PeerFrame};
use kubeledger_pbft::{Message, SignedMessage, Vote};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

const N: usize = 4;
const WAIT: Duration = Duration::from_secs(45);
const FORGED_HEIGHT: u64 = 1_000_000_000;

/// A PREPARE that claims to be replica 1's, at a far sequence number, with a
/// signature of random bytes.
fn forged_prepare() -> Vec<u8> {
    forged_vote(FORGED_HEIGHT)
}

fn forged_vote(seq: u64) -> Vec<u8> {
    let msg = SignedMessage {
        signer: 1,
        message: Message::Prepare(Vote {
            view: 0,
            seq,
            digest: rand::random(),
        }),
        signature: (0..64).map(|_| rand::random::<u8>()).collect(),
    };
    kubeledger_node::consensus::codec::encode_message(&msg)
        .expect("encodes")
        .to_vec()
}

async fn send(peer_addr: std::net::SocketAddr, from: u32, message: Vec<u8>) {
    let mut client = PeerClient::connect(format!("http://{peer_addr}"))
        .await
        .expect("connect to the peer port");
    let frame = PeerFrame {
        from,
        consensus: vec![message.into()],
        txs: Vec::new(),
    };
    // The node may answer or drop the stream; what matters is what it does next.
    let _ = client.messages(futures::stream::iter(vec![frame])).await;
}

/// Sends `frames` frames of `per_frame` forged votes as replica 1 on one
/// stream; the node's answer.
async fn flood(peer_addr: std::net::SocketAddr, frames: usize, per_frame: usize) -> tonic::Status {
    let mut client = PeerClient::connect(format!("http://{peer_addr}"))
        .await
        .expect("connect to the peer port");
    let frames: Vec<PeerFrame> = (0..frames)
        .map(|f| PeerFrame {
            from: 1,
            consensus: (0..per_frame)
                .map(|i| forged_vote((f * per_frame + i) as u64 + 1).into())
                .collect(),
            txs: Vec::new(),
        })
        .collect();
    match client.messages(futures::stream::iter(frames)).await {
        Ok(_) => tonic::Status::ok("the node took every forged vote"),
        Err(status) => status,
    }
}

async fn ready(endpoint: &str) -> bool {
    let Ok(channel) = kubeledger_node::client::channel(endpoint).await else {
        return false;
    };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "kubeledger.v1.Ledger".into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

#[test]
fn deeply_nested_messages_are_refused_at_decode() {
    use kubeledger_node::consensus::codec::{decode_message, CodecError};
    // 40 KB that used to overflow the decoding thread's stack.
    let frame = nested_message(10_000);
    assert!(frame.len() < 64 * 1024);
    let err = decode_message(&frame).expect_err("refused");
    assert!(matches!(err, CodecError::Decode { .. }), "{err}");
    // The limit is exact and leaves the thread's count balanced: the deepest
    // honest nesting still decodes after a refusal.
    for depth in 1..=kubeledger_pbft::MAX_NESTING {
        let m = decode_message(&nested_message(depth)).expect("decodes");
        assert!(matches!(
            m.message,
            Message::StableProof(_) | Message::Prepare(_)
        ));
    }
    assert!(decode_message(&nested_message(kubeledger_pbft::MAX_NESTING + 1)).is_err());
    // A truncated deep frame is an error too.
    assert!(decode_message(&frame[..frame.len() / 2]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_on_the_peer_port_crashes_stalls_and_blinds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = ChainParams {
        block_interval_ms: 100,
        ..ChainParams::default()
    };
    let nodes = consortium(dir.path(), N, params);
    let mut children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(connect_retry(&n.endpoint(), WAIT).await);
    }
    for n in &nodes {
        eventually(WAIT, || async { ready(&n.endpoint()).await.then_some(()) }).await;
    }
    let load = Load::start(&clients, 2, 41, WAIT);

    // Every peer port gets the deeply nested frame, then the forged PREPARE
    // (sent as replica 1, to the others).
    for (i, n) in nodes.iter().enumerate() {
        send(n.config.listen.peer, 1, nested_message(10_000)).await;
        if i != 1 {
            send(n.config.listen.peer, 1, forged_prepare()).await;
        }
    }

    // A flood of forged votes on one stream: the node checks each signature
    // at the edge, refuses them, and closes the stream once the forgeries
    // pass the limit, so the sender has to connect again.
    let flooded = &nodes[0];
    let answer = flood(flooded.config.listen.peer, 50, 100).await;
    assert_eq!(answer.code(), tonic::Code::PermissionDenied, "{answer:?}");
    assert!(answer.message().contains("signature"), "{answer:?}");
    let metrics = scrape_metrics(flooded.config.listen.metrics).await;
    let refused = sample(
        &metrics,
        "kubeledger_consensus_messages_total{direction=\"unauthenticated\"}",
    );
    assert!(refused > 64.0, "refusals counted: {refused}\n{metrics}");
    // It stopped checking where it closed the stream, far short of 5,000.
    assert!(refused < 1_000.0, "refusals counted: {refused}");

    // Blocks keep committing past the attack on every node.
    let mut first = clients[0].clone();
    let attacked_at = status(&mut first).await.height;
    for c in &clients {
        wait_height(c, attacked_at + 5, WAIT).await;
    }
    for (i, child) in children.iter_mut().enumerate() {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "node {i} exited:\n{}",
            log_tail(&nodes[i], 40)
        );
    }
    for (i, (n, c)) in nodes.iter().zip(clients.iter_mut()).enumerate() {
        assert!(
            ready(&n.endpoint()).await,
            "node {i} is not ready:\n{}",
            log_tail(n, 40)
        );
        let s = status(c).await;
        for p in &s.peers {
            assert!(
                p.last_seen_height < FORGED_HEIGHT,
                "node {i} believed the forged height of {}: {}",
                p.name,
                p.last_seen_height
            );
        }
    }
    let (acknowledged, failed) = load.stop().await;
    assert!(!acknowledged.is_empty(), "no transaction committed");
    for c in clients.iter_mut() {
        assert_committed(c, &acknowledged).await;
    }
    assert_eq!(failed, 0, "honest transactions failed during the attack");
    for mut child in children {
        let _ = child.kill().await;
    }
}
