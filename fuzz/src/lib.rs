//! What each fuzz target does with its input, as library functions: the
//! targets in `fuzz_targets/` call them, and `examples/make_corpus.rs`
//! writes the seed corpus they start from.
//!
//! Every function goes through the same decoders and checks the node runs on
//! bytes from the network (or from its own disk, for the replica state), in
//! the same order, and asserts the properties that must hold whatever the
//! input: nothing panics, single and batch signature checks agree, and what
//! decodes re-encodes to an equal message.

use std::sync::OnceLock;

use bytes::Buf;
use ed25519_dalek::SigningKey;
use kubeledger_pbft::{
    Action, Config, Input, PersistentState, Replica, ReplicaIndex, SignedMessage, TimerId,
    ValidatorSet,
};
use kubeledger_protocol::block::header_hash;
use kubeledger_protocol::block::verify::verify_successor;
use kubeledger_protocol::bounded_codec;
use kubeledger_protocol::proto::{
    BlockHeader, CertifiedBlock, PeerFrame, SignedTransaction, SubmitBatchRequest,
};
use kubeledger_protocol::tx::envelope::{self, TxLimits, VerifiedTx};
use kubeledger_protocol::tx::signature_batch;
use kubeledger_protocol::wire::{self, codec, payload_table};

/// Validators of the fuzzed chain.
pub const VALIDATORS: usize = 4;
/// Chain id of the fuzzed chain.
pub const CHAIN_ID: &str = "fuzz-chain";
/// Consensus messages of one frame stepped into the replica (a frame may
/// carry many more; each is decoded and checked).
const MAX_STEPPED: usize = 64;
/// Blocks of one state-transfer response checked.
const MAX_BLOCKS: usize = 16;
/// Transactions of a frame or batch whose signatures are checked (all are
/// decoded): enough for the batch to mix good and bad signatures, few
/// enough that a run stays about the decoders.
const MAX_VERIFIED: usize = 8;

/// Keys, validator set and genesis header shared by every run.
pub struct Fixture {
    pub keys: Vec<SigningKey>,
    pub vset: ValidatorSet,
    pub genesis: BlockHeader,
    pub limits: TxLimits,
    /// A transaction with a good signature, batched with fuzzed ones.
    pub honest_tx: VerifiedTx,
}

/// The shared fixture (built once per process).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys: Vec<SigningKey> = (0..VALIDATORS)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let public: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let vset = ValidatorSet::new(&public).expect("four distinct validator keys");
        let genesis = BlockHeader {
            chain_id: CHAIN_ID.into(),
            height: 0,
            prev_hash: vec![7; 32],
            tx_root: vec![0; 32],
            state_root: vec![0; 32],
            timestamp_ms: 1_700_000_000_000,
            proposer: Vec::new(),
            validators_hash: vec![0; 32],
            tx_count: 0,
            next_validators_hash: Vec::new(),
        };
        let limits = TxLimits {
            max_tx_bytes: 1024 * 1024,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
        };
        let signed = envelope::sign(&keys[0], CHAIN_ID, 1, 1, envelope::put("k", "v"));
        let honest_tx = envelope::decode(signed, CHAIN_ID, &limits).expect("honest transaction");
        Fixture {
            keys,
            vset,
            genesis,
            limits,
            honest_tx,
        }
    })
}

impl Fixture {
    /// Replica 0 of the fixture's validator set, fresh and started.
    pub fn replica(&self) -> Replica {
        let mut r = Replica::new(
            Config::default(),
            self.vset.clone(),
            0,
            self.keys[0].clone(),
        )
        .expect("replica 0 of the fixture");
        let _ = r.start();
        r
    }
}

/// Steps `input` and answers the payload validations it asks for (as the
/// node's validator would for payloads it accepts), so proposals can go on
/// to prepare and commit.
fn step(replica: &mut Replica, input: Input) {
    let actions = replica.step(input);
    for a in actions {
        if let Action::ValidatePayload {
            seq, view, digest, ..
        } = a
        {
            let _ = replica.step(Input::PayloadValidated {
                seq,
                view,
                digest,
                valid: true,
            });
        }
    }
}

/// A `Peer.Messages` frame: the bounded decode, the gossiped transactions
/// through admission's stateless checks and signature batch, and each
/// consensus entry through the wire decoder, the edge's authenticity check
/// and `Replica::step`. The fuzzer cannot sign, so an entry that fails the
/// check is also stepped re-signed by the validator it names: the protocol
/// logic behind the signature check is fuzzed too.
pub fn peer_frame(data: &[u8]) {
    let fx = fixture();
    let Ok(frame) = bounded_codec::decode::<PeerFrame>(data) else {
        return;
    };
    check_transactions(frame.txs);
    let from = frame.from;
    let mut replica = fx.replica();
    for bytes in frame.consensus.iter().take(MAX_STEPPED) {
        let Ok(msg) = codec::decode_message(bytes) else {
            continue;
        };
        round_trips(&msg);
        if wire::authentic(&fx.vset, from, &msg) {
            step(&mut replica, Input::Message { from, msg });
            continue;
        }
        let signer = (msg.signer % VALIDATORS as ReplicaIndex).max(1);
        let resigned =
            SignedMessage::sign(&fx.vset, signer, &fx.keys[signer as usize], msg.message);
        step(
            &mut replica,
            Input::Message {
                from: signer,
                msg: resigned,
            },
        );
    }
    let _ = replica.step(Input::TimerFired(TimerId::Request));
    let _ = replica.step(Input::TimerFired(TimerId::ViewChange));
}

/// What decodes from the wire encodes back to the same message, if every
/// payload in it hashes to the digest it sits under. (The wire keeps one
/// payload per digest; a message with a payload under a false digest may
/// come back with another, and the replica refuses it either way.)
fn round_trips(msg: &SignedMessage) {
    let mut honest = true;
    payload_table::for_each_place(&mut msg.clone(), &mut |digest, payload| {
        honest &= payload.digest() == *digest;
    });
    if !honest {
        return;
    }
    let bytes = codec::encode_message(msg).expect("a decoded message encodes");
    let again = codec::decode_message(&bytes).expect("an encoded message decodes");
    assert_eq!(
        &again, msg,
        "consensus message changed through encode/decode"
    );
}

/// One `SignedTransaction` as a client submits it.
pub fn transaction(data: &[u8]) {
    let Ok(signed) = bounded_codec::decode::<SignedTransaction>(data) else {
        return;
    };
    check_transactions(vec![signed]);
}

/// A `SubmitBatch` request.
pub fn submit_batch(data: &[u8]) {
    let Ok(request) = bounded_codec::decode::<SubmitBatchRequest>(data) else {
        return;
    };
    check_transactions(request.txs);
}

/// Admission's stateless checks, then the signature batch; every verdict of
/// the batch equals the single check's, whatever else is in the batch.
fn check_transactions(txs: Vec<SignedTransaction>) {
    let fx = fixture();
    let mut decoded: Vec<VerifiedTx> = txs
        .into_iter()
        .filter_map(|t| envelope::decode(t, CHAIN_ID, &fx.limits).ok())
        .take(MAX_VERIFIED)
        .collect();
    if decoded.is_empty() {
        return;
    }
    decoded.insert(decoded.len() / 2, fx.honest_tx.clone());
    let batch = signature_batch::verify(&decoded);
    assert_eq!(batch.len(), decoded.len());
    for (tx, verdict) in decoded.iter().zip(&batch) {
        let single = signature_batch::verify_one(&tx.sender, &tx.signature, &tx.signed.body);
        assert_eq!(
            single, *verdict,
            "batch and single signature checks disagree on {:?}",
            tx.id
        );
    }
}

/// A `Peer.GetBlocks` response: length-delimited `CertifiedBlock`s, each
/// bounded-decoded, checked as the successor of the one before (from the
/// fixture's genesis), its certificate verified before it would be kept,
/// and its transactions decoded as re-execution decodes them.
pub fn state_transfer(mut data: &[u8]) {
    let fx = fixture();
    let unbounded = TxLimits {
        max_tx_bytes: usize::MAX,
        max_key_bytes: usize::MAX,
        max_value_bytes: usize::MAX,
    };
    let mut previous = fx.genesis.clone();
    let mut previous_hash = header_hash(&previous);
    for _ in 0..MAX_BLOCKS {
        let Ok(len) = prost::encoding::decode_length_delimiter(&mut data) else {
            return;
        };
        if len > data.remaining() {
            return;
        }
        let (item, rest) = data.split_at(len);
        data = rest;
        let Ok(item) = bounded_codec::decode::<CertifiedBlock>(item) else {
            return;
        };
        let Some(block) = item.block else {
            return;
        };
        let Ok(header) = verify_successor(&previous, &previous_hash, &block) else {
            return;
        };
        let header = header.clone();
        let _ = codec::verified_certificate(item.certificate, header.height, &fx.vset);
        for tx in block.txs {
            let _ = envelope::decode(tx, CHAIN_ID, &unbounded);
        }
        previous_hash = header_hash(&header);
        previous = header;
    }
}

/// The replica state as the node stores it: decoded, restored into a
/// replica, started, and driven by timers and the ledger's reports.
pub fn replica_state(data: &[u8]) {
    let fx = fixture();
    let Ok(st) = codec::decode::<PersistentState>("replica state", data, usize::MAX) else {
        return;
    };
    let executed = st.last_committed;
    let Ok(mut replica) = Replica::restore(
        Config::default(),
        fx.vset.clone(),
        0,
        fx.keys[0].clone(),
        st,
        executed,
    ) else {
        return;
    };
    let _ = replica.start();
    let _ = replica.step(Input::RequestsPending(true));
    let _ = replica.step(Input::TimerFired(TimerId::Request));
    let _ = replica.step(Input::TimerFired(TimerId::ViewChange));
    let _ = replica.status();
    let _ = replica.in_flight_payloads().count();
}
