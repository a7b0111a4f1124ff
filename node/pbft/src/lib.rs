//! PBFT consensus (Castro & Liskov) as a pure, deterministic state machine.
//!
//! Feed [`Input`]s to [`Replica::step`] and carry out the returned
//! [`Action`]s. The replica performs no I/O, reads no clock and uses no
//! randomness; signing and verification are pure functions. Sequence number
//! == block height; the ledger validates, executes and stores payloads.

mod censorship;
mod checkpoint;
mod error;
mod log;
mod message;
mod normal_case;
mod quorum;
mod replica;
mod state_transfer;
mod timers;
mod validators;
mod view_change;

pub use checkpoint::verify_checkpoint_proof;
pub use error::Error;
pub use log::Slot;
pub use message::{
    Checkpoint, CommitCertificate, Digest, Message, NewView, Payload, PrePrepare, PreparedCert,
    ReplicaIndex, Seq, SignedMessage, Txs, View, ViewChange, Vote, MAX_NESTING,
};
pub use quorum::{max_faulty, quorum, weak_quorum};
pub use replica::{
    Action, Config, Input, PersistentState, RejectReason, Replica, StableCheckpoint, Stats, Status,
};
pub use timers::TimerId;
pub use validators::ValidatorSet;
