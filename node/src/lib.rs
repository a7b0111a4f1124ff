//! The kubeledger ledger node.
//!
//! The node is split along one boundary: **consensus orders, the ledger
//! executes**. The PBFT replica ([`consensus`], for any number of
//! validators, one included) takes verified transactions from the
//! [`mempool`] through the primary's block cutter, agrees on them with its
//! peers, and hands each committed payload to
//! [`ledger::Ledger::commit_certified`], which validates it against the
//! chain, executes it, and writes block, commit certificate, state,
//! history and indexes in one fsynced RocksDB batch.
//!
//! ```text
//!  clients ──gRPC──▶ api ──▶ admission ──▶ mempool ──▶ consensus ◀──▶ peers
//!                     ▲                                   │
//!                     │                                executor ──▶ ledger ──▶ RocksDB
//!                     └──── commit notifications (subscribe, wait) ◀──┘
//! ```
//!
//! The modules stand in layers; each imports only the ones below it:
//!
//! ```text
//!  runtime            the process: wires the rest together, shuts it down
//!  api   consensus    the client gRPC server; replication and the executor
//!  node_state         what both share: NodeState, admission, the commit feed,
//!                     heartbeats, bounded reads, the consensus status board
//!  ledger  mempool  metrics  connections  config  clock   (and the protocol)
//! ```
//!
//! Neither [`api`] nor [`consensus`] imports the other or [`runtime`], and
//! [`node_state`] imports none of the three: the consensus task publishes
//! on the status board, and admission gossips through the
//! [`node_state::consensus_board::TxGossip`] handle the peer transport
//! puts there.

pub mod api;
pub mod backup;
pub mod client;
pub mod clock;
pub mod config;
pub mod connections;
pub mod consensus;
pub mod ledger;
pub mod local;
pub mod mempool;
pub mod metrics;
pub mod node_state;
pub mod restore;
pub mod runtime;
pub mod state_sync;

// What the node shares with clients and the operator.
pub use kubeledger_protocol::{block, crypto, genesis, governance, tx};

/// The `kubeledger.v1` messages and clients (from `kubeledger-protocol`)
/// and the node's gRPC servers, generated here.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    pub use kubeledger_protocol::proto::*;
    tonic::include_proto!("kubeledger.v1");
}

/// Version of this build, reported by `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
