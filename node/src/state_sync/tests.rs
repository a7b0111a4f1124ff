//! Manifests and chunks from a real ledger, honest and forged.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use kubeledger_pbft::{Checkpoint, Message, SignedMessage, StableCheckpoint};

use super::manifest::{verify, verify_chunk, ChunkError, ManifestError};
use super::serve::{build_manifest, chunk};
use crate::block::Proposal;
use crate::config::StorageConfig;
use crate::consensus::epoch;
use crate::crypto::hash32;
use crate::genesis::Genesis;
use crate::governance::genesis_config::genesis_validators;
use crate::ledger::state_at::ChunkLimits;
use crate::ledger::Ledger;
use crate::proto::StateManifest;
use crate::tx::envelope::{decode, put, sign};

const KEYS: u64 = 250;
const LIMITS: ChunkLimits = ChunkLimits {
    max_entries: 40,
    max_bytes: 1 << 20,
};

struct Chain {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    genesis: Genesis,
    key: SigningKey,
}

/// A one-validator chain: KEYS keys over blocks of 25, every fifth
/// written again and every seventh deleted.
fn chain() -> Chain {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::from_bytes(&[1; 32]);
    let genesis = crate::genesis::single_validator_for_tests(&key);
    let ledger = Ledger::open(
        &dir.path().join("ledger"),
        genesis.clone(),
        &StorageConfig::default(),
    )
    .expect("open");
    let client = SigningKey::from_bytes(&[9; 32]);
    let chain_id = ledger.chain_id().to_owned();
    let limits = ledger.genesis().params.tx_limits();
    let mut nonce = 0;
    let mut writes = Vec::new();
    for k in 0..KEYS {
        writes.push(put(format!("k{k}"), format!("v{k}")));
    }
    for k in (0..KEYS).step_by(5) {
        writes.push(put(format!("k{k}"), format!("again{k}")));
    }
    for k in (0..KEYS).step_by(7) {
        writes.push(crate::proto::tx_body::Payload::Delete(
            crate::proto::Delete {
                key: format!("k{k}").into_bytes(),
            },
        ));
    }
    for block in writes.chunks(25) {
        let txs = block
            .iter()
            .map(|w| {
                nonce += 1;
                Arc::new(
                    decode(
                        sign(&client, &chain_id, nonce, 1, w.clone()),
                        &chain_id,
                        &limits,
                    )
                    .expect("valid"),
                )
            })
            .collect();
        let tip = ledger.tip();
        ledger
            .commit(&Proposal {
                height: tip.height + 1,
                timestamp_ms: tip.timestamp_ms + 10,
                proposer: key.verifying_key().to_bytes(),
                txs,
            })
            .expect("commit");
    }
    Chain {
        _dir: dir,
        ledger,
        genesis,
        key,
    }
}

/// The tip certified by `signer` as the chain's one validator.
fn certified(c: &Chain, signer: &SigningKey) -> StableCheckpoint {
    let tip = c.ledger.tip();
    let header = c.ledger.header(tip.height).expect("read").expect("tip");
    let vset = epoch::validator_set(&genesis_validators(&c.genesis), 0).expect("set");
    let cp = Checkpoint {
        seq: tip.height,
        state_root: hash32(&header.state_root).expect("root"),
        block_hash: tip.hash,
    };
    StableCheckpoint {
        seq: cp.seq,
        state_root: cp.state_root,
        block_hash: cp.block_hash,
        proof: vec![SignedMessage::sign(
            &vset,
            0,
            signer,
            Message::Checkpoint(cp),
        )],
    }
}

fn manifest(c: &Chain) -> StateManifest {
    build_manifest(&c.ledger, &certified(c, &c.key), LIMITS).expect("manifest")
}

#[test]
fn an_honest_manifest_and_its_chunks_verify_and_hold_the_state() {
    let c = chain();
    let m = manifest(&c);
    let v = verify(&genesis_validators(&c.genesis), &m).expect("verifies");
    let live = (0..KEYS).filter(|k| k % 7 != 0).count() as u64;
    assert_eq!(v.state_entries(), live);
    assert!(v.chunks.len() > 3, "{} chunks", v.chunks.len());
    let mut seen = 0;
    for spec in &v.chunks {
        let served = chunk(&c.ledger, v.height, &spec.start, &spec.end).expect("chunk");
        let entries = verify_chunk(spec, v.height, served).expect("chunk verifies");
        for e in &entries {
            let stored = c.ledger.get(&e.key).expect("read").expect("present");
            assert_eq!(
                (stored.value.as_ref(), stored.height, stored.index),
                (e.value.as_slice(), e.height, e.index)
            );
            assert_eq!(stored.tx_id, e.tx_id);
        }
        seen += entries.len() as u64;
    }
    assert_eq!(seen, live);
}

#[test]
fn the_state_at_an_older_height_is_served_as_it_was() {
    let c = chain();
    let (chunks, total) = c.ledger.plan_state_chunks(4, LIMITS).expect("plan at 4");
    let header = c.ledger.header(4).expect("read").expect("block 4");
    assert_eq!(header.state_root, total.root().to_vec());
    let entries: usize = chunks.iter().map(|c| c.entries as usize).sum();
    assert_eq!(entries, 100, "blocks 1-4 put k0..k99 once each");
}

#[test]
fn forged_manifests_are_refused_before_anything_is_fetched() {
    let c = chain();
    let validators = genesis_validators(&c.genesis);
    let honest = manifest(&c);

    let mut m = honest.clone();
    m.accumulator[0] ^= 1;
    assert_eq!(
        verify(&validators, &m).unwrap_err(),
        ManifestError::WrongAccumulator
    );

    let mut m = honest.clone();
    m.chunks[1].accumulator[5] ^= 1;
    assert_eq!(
        verify(&validators, &m).unwrap_err(),
        ManifestError::ChunksDoNotAddUp
    );

    let mut m = honest.clone();
    m.chunks.remove(1);
    assert!(matches!(
        verify(&validators, &m).unwrap_err(),
        ManifestError::BadChunkInfo { index: 1, .. }
    ));

    // Certified by a key that is not the chain's validator.
    let outsider = SigningKey::from_bytes(&[42; 32]);
    let m = build_manifest(&c.ledger, &certified(&c, &outsider), LIMITS).expect("manifest");
    assert!(matches!(
        verify(&validators, &m).unwrap_err(),
        ManifestError::BadCheckpoint { .. }
    ));

    // Another block's header under the certificate.
    let mut m = honest.clone();
    m.header = c.ledger.header(3).expect("read");
    assert!(matches!(
        verify(&validators, &m).unwrap_err(),
        ManifestError::WrongHeader { .. }
    ));

    // An epoch proof with no successor listed.
    let mut m = honest.clone();
    if let Some(cp) = m.checkpoint.as_mut() {
        cp.epoch_proofs.push(cp.clone());
    }
    assert!(verify(&validators, &m).is_err());
}

#[test]
fn forged_chunks_are_caught_on_their_own() {
    let c = chain();
    let v = verify(&genesis_validators(&c.genesis), &manifest(&c)).expect("verifies");
    let spec = &v.chunks[1];
    let honest = chunk(&c.ledger, v.height, &spec.start, &spec.end).expect("chunk");

    let mut forged = honest.clone();
    forged.entries[2].value = b"forged".to_vec();
    assert_eq!(
        verify_chunk(spec, v.height, forged).unwrap_err(),
        ChunkError::Sum
    );

    let mut forged = honest.clone();
    forged.entries[2].height += 1;
    assert_eq!(
        verify_chunk(spec, v.height, forged).unwrap_err(),
        ChunkError::Sum
    );

    let mut forged = honest.clone();
    forged.entries.pop();
    assert!(matches!(
        verify_chunk(spec, v.height, forged).unwrap_err(),
        ChunkError::Count { .. }
    ));

    // An entry of the next chunk in place of one of this chunk's.
    let next = &v.chunks[2];
    let other = chunk(&c.ledger, v.height, &next.start, &next.end).expect("chunk");
    let mut forged = honest.clone();
    let last = forged.entries.len() - 1;
    forged.entries[last] = other.entries[0].clone();
    assert_eq!(
        verify_chunk(spec, v.height, forged).unwrap_err(),
        ChunkError::Order(last)
    );

    let mut forged = honest;
    forged.entries.swap(0, 1);
    assert_eq!(
        verify_chunk(spec, v.height, forged).unwrap_err(),
        ChunkError::Order(1)
    );
}

#[test]
fn a_manifest_that_moves_weight_between_chunks_verifies_but_no_honest_chunk_matches_it() {
    // The sums add up, so only the chunks can tell: the driver gives up a
    // manifest once two peers' answers for one chunk disagree with it.
    let c = chain();
    let validators = genesis_validators(&c.genesis);
    let mut m = manifest(&c);
    m.chunks[0].accumulator[0] = m.chunks[0].accumulator[0].wrapping_add(1);
    m.chunks[1].accumulator[0] = m.chunks[1].accumulator[0].wrapping_sub(1);
    let v = verify(&validators, &m).expect("the sums still add up");
    let spec = &v.chunks[0];
    let honest = chunk(&c.ledger, v.height, &spec.start, &spec.end).expect("chunk");
    assert_eq!(
        verify_chunk(spec, v.height, honest).unwrap_err(),
        ChunkError::Sum
    );
}

#[test]
fn a_ledger_built_from_a_manifest_verifies_and_executes_the_next_block_alike() {
    use crate::ledger::synced_base::SyncProgress;
    use prost::Message as _;
    let c = chain();
    let m = manifest(&c);
    let v = verify(&genesis_validators(&c.genesis), &m).expect("verifies");
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = Ledger::open(
        &dir.path().join("ledger"),
        c.genesis.clone(),
        &StorageConfig::default(),
    )
    .expect("open");
    let mut progress = SyncProgress {
        height: v.height,
        headers_low: v.height + 1,
        next_hash: hex::encode(v.block_hash),
        txs: 0,
        chunks_done: "0".repeat(v.chunks.len()),
        source: "test".into(),
    };
    fresh
        .begin_state_sync(&progress, &m.encode_to_vec())
        .expect("begin");
    let mut headers = Vec::new();
    let mut expected = v.block_hash;
    for h in (1..=v.height).rev() {
        let served = super::serve::header_with_ids(&c.ledger, h)
            .expect("read")
            .expect("held");
        let (header, ids) =
            super::manifest::verify_header(h, &expected, served).expect("on the chain");
        expected = hash32(&header.prev_hash).expect("hash");
        progress.txs += u64::from(header.tx_count);
        headers.push((header, ids));
    }
    progress.headers_low = 1;
    progress.next_hash = hex::encode(expected);
    fresh
        .write_synced_headers(&headers, &progress)
        .expect("headers");
    for (i, spec) in v.chunks.iter().enumerate() {
        let served = chunk(&c.ledger, v.height, &spec.start, &spec.end).expect("chunk");
        let entries = verify_chunk(spec, v.height, served).expect("verifies");
        progress.mark_chunk(i);
        fresh
            .write_synced_entries(&entries, &progress)
            .expect("entries");
    }
    fresh
        .finish_state_sync(&v.header, &v.accumulator, progress.txs)
        .expect("finish");
    assert_eq!(fresh.tip(), c.ledger.tip());
    assert_eq!(fresh.sync_base().expect("base"), v.height);
    let report = fresh.verify().expect("the synced ledger verifies");
    assert_eq!(report.transactions, c.ledger.tip().txs_committed);
    // It refuses a replay of a transaction from before its sync point.
    let (block, _) = c.ledger.block_by_height(1).expect("read").expect("block 1");
    let id = crate::tx::envelope::tx_id(&block.txs[0]);
    assert!(fresh.contains_tx(&id).expect("lookup"));
    assert!(matches!(
        fresh.transaction(&id),
        Err(crate::ledger::LedgerError::NotHeld { .. })
    ));
    // The next block executes to the same header on both.
    let client = SigningKey::from_bytes(&[9; 32]);
    let chain_id = c.ledger.chain_id().to_owned();
    let limits = c.ledger.genesis().params.tx_limits();
    let txs = vec![Arc::new(
        decode(
            sign(&client, &chain_id, 10_000, 1, put("k3", "after")),
            &chain_id,
            &limits,
        )
        .expect("valid"),
    )];
    let tip = c.ledger.tip();
    let next = Proposal {
        height: tip.height + 1,
        timestamp_ms: tip.timestamp_ms + 10,
        proposer: c.key.verifying_key().to_bytes(),
        txs,
    };
    let a = c.ledger.commit(&next).expect("commit on the full ledger");
    let b = fresh.commit(&next).expect("commit on the synced ledger");
    assert_eq!(a.hash, b.hash);
}
