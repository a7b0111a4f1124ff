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

pub mod api;
pub mod block;
pub mod client;
pub mod config;
pub mod consensus;
pub mod crypto;
pub mod genesis;
pub mod governance;
pub mod ledger;
pub mod local;
pub mod mempool;
pub mod metrics;
pub mod runtime;
pub mod tx;

/// Generated protobuf and gRPC types of the `kubeledger.v1` package.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kubeledger.v1");

    /// Encoded file descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kubeledger_descriptor");
}

/// Version of this build, reported by `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
