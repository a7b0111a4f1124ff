//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`:
//! honest, correctly signed inputs of each kind, so fuzzing starts from
//! messages that pass the first checks and mutates its way past them.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_corpus
//! ```

use std::path::{Path, PathBuf};

use kubeledger_fuzz::{fixture, CHAIN_ID, VALIDATORS};
use kubeledger_pbft::{
    Checkpoint, CommitCertificate, Config, Input, Message, NewView, Payload, PrePrepare,
    PreparedCert, Replica, ReplicaIndex, SignedMessage, TimerId, ViewChange, Vote,
};
use kubeledger_protocol::block::verify::tx_ids;
use kubeledger_protocol::block::{header_hash, tx_root};
use kubeledger_protocol::proto::{
    config_change, Block, BlockHeader, CertifiedBlock, PeerFrame, SignedTransaction,
    SubmitBatchRequest,
};
use kubeledger_protocol::tx::envelope;
use kubeledger_protocol::wire::codec;
use prost::Message as _;

fn sign(signer: ReplicaIndex, m: Message) -> SignedMessage {
    let fx = fixture();
    SignedMessage::sign(&fx.vset, signer, &fx.keys[signer as usize], m)
}

fn tx(i: u64) -> SignedTransaction {
    let fx = fixture();
    envelope::sign(
        &fx.keys[(i % VALIDATORS as u64) as usize],
        CHAIN_ID,
        i,
        1_700_000_000_000 + i,
        envelope::put(format!("key/{i}"), vec![i as u8; 16]),
    )
}

fn payload(n: u64) -> Payload {
    Payload {
        timestamp_ms: 1_700_000_000_100,
        proposer: 0,
        txs: (0..n)
            .map(|i| tx(i).encode_to_vec())
            .collect::<Vec<_>>()
            .into(),
    }
}

fn frame(from: ReplicaIndex, messages: &[SignedMessage], txs: Vec<SignedTransaction>) -> Vec<u8> {
    PeerFrame {
        from,
        consensus: messages
            .iter()
            .map(|m| codec::encode_message(m).expect("encodes"))
            .collect(),
        txs,
    }
    .encode_to_vec()
}

fn prepared(view: u64, seq: u64, p: &Payload) -> PreparedCert {
    let digest = p.digest();
    PreparedCert {
        pre_prepare: sign(
            0,
            Message::PrePrepare(PrePrepare {
                view,
                seq,
                digest,
                payload: p.clone(),
            }),
        ),
        prepares: (1..3)
            .map(|i| sign(i, Message::Prepare(Vote { view, seq, digest })))
            .collect(),
    }
}

fn checkpoint_proof(seq: u64) -> Vec<SignedMessage> {
    (1..4)
        .map(|i| {
            sign(
                i,
                Message::Checkpoint(Checkpoint {
                    seq,
                    state_root: [3; 32],
                    block_hash: [4; 32],
                }),
            )
        })
        .collect()
}

fn view_change(signer: ReplicaIndex, p: &Payload) -> SignedMessage {
    sign(
        signer,
        Message::ViewChange(ViewChange {
            new_view: 1,
            stable_seq: 0,
            checkpoint_proof: Vec::new(),
            prepared: vec![prepared(0, 1, p)],
            last_committed: 0,
        }),
    )
}

fn certificate(seq: u64, digest: [u8; 32]) -> CommitCertificate {
    CommitCertificate {
        view: 0,
        seq,
        digest,
        commits: (0..3)
            .map(|i| {
                sign(
                    i,
                    Message::Commit(Vote {
                        view: 0,
                        seq,
                        digest,
                    }),
                )
            })
            .collect(),
    }
}

fn peer_frames() -> Vec<Vec<u8>> {
    let p = payload(2);
    let d = p.digest();
    let vote = Vote {
        view: 0,
        seq: 1,
        digest: d,
    };
    let pre_prepare = sign(
        0,
        Message::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            digest: d,
            payload: p.clone(),
        }),
    );
    let vcs: Vec<SignedMessage> = (1..4).map(|i| view_change(i, &p)).collect();
    let new_view = sign(
        1,
        Message::NewView(NewView {
            view: 1,
            view_changes: vcs.clone(),
            pre_prepares: vec![sign(
                1,
                Message::PrePrepare(PrePrepare {
                    view: 1,
                    seq: 1,
                    digest: d,
                    payload: p.clone(),
                }),
            )],
        }),
    );
    // A NEW-VIEW in which one place carries a payload under a digest it
    // does not hash to (the wire keeps one payload per digest: a finding
    // of the round-trip check, kept as a seed).
    let mut lying = vcs.clone();
    if let Message::ViewChange(vc) = &mut lying[0].message {
        if let Message::PrePrepare(pp) = &mut vc.prepared[0].pre_prepare.message {
            pp.payload = payload(0);
        }
    }
    let lying_new_view = sign(
        1,
        Message::NewView(NewView {
            view: 1,
            view_changes: lying,
            pre_prepares: Vec::new(),
        }),
    );
    vec![
        frame(1, &[lying_new_view], Vec::new()),
        frame(1, &[sign(1, Message::Prepare(vote))], Vec::new()),
        frame(
            1,
            &[
                sign(1, Message::Prepare(vote)),
                sign(1, Message::Commit(vote)),
            ],
            Vec::new(),
        ),
        frame(1, &[pre_prepare], Vec::new()),
        frame(1, &vcs[..1], Vec::new()),
        frame(1, &[new_view], Vec::new()),
        frame(1, &checkpoint_proof(16)[..1], Vec::new()),
        frame(
            1,
            &[sign(1, Message::StableProof(checkpoint_proof(16)))],
            Vec::new(),
        ),
        frame(
            1,
            &[sign(
                1,
                Message::Committed {
                    payload: p.clone(),
                    certificate: certificate(1, d),
                },
            )],
            Vec::new(),
        ),
        frame(2, &[], vec![tx(1), tx(2), tx(3)]),
    ]
}

fn transactions() -> Vec<Vec<u8>> {
    let fx = fixture();
    let config = envelope::sign(
        &fx.keys[0],
        CHAIN_ID,
        9,
        1_700_000_000_000,
        envelope::config(config_change::Change::UpdateParams(Default::default())),
    );
    vec![
        tx(1).encode_to_vec(),
        envelope::sign(&fx.keys[1], CHAIN_ID, 2, 5, envelope::delete("key/1")).encode_to_vec(),
        config.encode_to_vec(),
    ]
}

fn block_after(previous: &BlockHeader, txs: Vec<SignedTransaction>) -> Block {
    let mut block = Block {
        header: Some(BlockHeader {
            chain_id: CHAIN_ID.into(),
            height: previous.height + 1,
            prev_hash: header_hash(previous).to_vec(),
            tx_root: Vec::new(),
            state_root: vec![1; 32],
            timestamp_ms: previous.timestamp_ms + 200,
            proposer: fixture().keys[0].verifying_key().to_bytes().to_vec(),
            validators_hash: vec![0; 32],
            tx_count: txs.len() as u32,
            next_validators_hash: Vec::new(),
        }),
        txs,
    };
    let root = tx_root(&tx_ids(&block));
    if let Some(h) = block.header.as_mut() {
        h.tx_root = root.to_vec();
    }
    block
}

fn state_transfer_responses() -> Vec<Vec<u8>> {
    let fx = fixture();
    let first = block_after(&fx.genesis, vec![tx(1), tx(2)]);
    let second = block_after(first.header.as_ref().expect("header"), vec![tx(3)]);
    let mut stream = Vec::new();
    for (height, block) in [(1, first), (2, second)] {
        let cert = codec::encode_certificate(&certificate(height, [height as u8; 32]))
            .expect("certificate encodes");
        CertifiedBlock {
            block: Some(block),
            certificate: cert,
        }
        .encode_length_delimited(&mut stream)
        .expect("a Vec grows");
    }
    vec![stream]
}

fn replica_states() -> Vec<Vec<u8>> {
    let fx = fixture();
    let replica = || {
        let mut r = Replica::new(Config::default(), fx.vset.clone(), 0, fx.keys[0].clone())
            .expect("replica");
        let _ = r.start();
        r
    };
    let mut proposing = replica();
    let _ = proposing.step(Input::Propose {
        payload: payload(3),
    });
    let mut changing = replica();
    let _ = changing.step(Input::RequestsPending(true));
    let _ = changing.step(Input::TimerFired(TimerId::Request));
    [proposing, changing, replica()]
        .iter()
        .map(|r| codec::encode("replica state", r.persistent()).expect("state encodes"))
        .collect()
}

fn write(dir: &Path, target: &str, inputs: Vec<Vec<u8>>) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    for (i, bytes) in inputs.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i:02}")), bytes)?;
    }
    println!("{target}: {} seeds in {}", inputs.len(), d.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&dir, "peer_frame", peer_frames())?;
    write(&dir, "transaction", transactions())?;
    let batch = SubmitBatchRequest {
        txs: (1..6).map(tx).collect(),
    }
    .encode_to_vec();
    write(&dir, "submit_batch", vec![batch])?;
    write(&dir, "state_transfer", state_transfer_responses())?;
    write(&dir, "replica_state", replica_states())?;
    Ok(())
}
