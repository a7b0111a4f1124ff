//! An outsider flooding a replica's peer port with forged consensus votes,
//! for `scripts/bench-flood.sh`: PREPAREs claiming to come from each other
//! replica in turn, signed with random bytes, sent as fast as the node takes
//! them, reconnecting whenever the node closes the stream.
//!
//! Usage: peer_flood <peer address> <seconds> [replicas]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kubeledger_node::consensus::codec::encode_message;
use kubeledger_node::proto::{peer_client::PeerClient, PeerFrame};
use kubeledger_pbft::{Message, SignedMessage, Vote};

/// Forged votes per frame.
const PER_FRAME: usize = 100;
/// Frames per stream before a fresh one (the node closes it sooner).
const FRAMES_PER_STREAM: usize = 1_000;

fn forged_frame(claimed: u32, seq: u64) -> PeerFrame {
    let consensus = (0..PER_FRAME as u64)
        .map(|i| {
            let msg = SignedMessage {
                signer: claimed,
                message: Message::Prepare(Vote {
                    view: 0,
                    seq: seq + i,
                    digest: rand::random(),
                }),
                signature: (0..64).map(|_| rand::random::<u8>()).collect(),
            };
            encode_message(&msg).expect("a vote encodes")
        })
        .collect();
    PeerFrame {
        from: claimed,
        consensus,
        txs: Vec::new(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: peer_flood <peer address> <seconds> [replicas]");
    }
    let address = format!("http://{}", args[1]);
    let seconds: u64 = args[2].parse().context("seconds")?;
    let replicas: u32 = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(4);
    let until = Instant::now() + Duration::from_secs(seconds);
    let (mut streams, mut sent, mut closed) = (0u64, 0u64, 0u64);
    let mut seq = 1u64;
    while Instant::now() < until {
        let Ok(mut client) = PeerClient::connect(address.clone()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        streams += 1;
        let claimed = (streams % u64::from(replicas)) as u32;
        // Built as the stream is sent, so a closed stream costs no more.
        let start = seq;
        let frames = futures::stream::iter(
            (0..FRAMES_PER_STREAM)
                .map(move |f| forged_frame(claimed, start + (f * PER_FRAME) as u64)),
        );
        seq += (FRAMES_PER_STREAM * PER_FRAME) as u64;
        match client.messages(frames).await {
            Ok(_) => sent += (FRAMES_PER_STREAM * PER_FRAME) as u64,
            Err(_) => closed += 1,
        }
    }
    println!(
        "flood: {streams} streams in {seconds} s, {closed} closed by the node, {sent} forged votes taken on streams it did not close"
    );
    Ok(())
}
