//! The kubeledger ledger node.
//!
//! The node is split along one boundary: **consensus orders, the ledger
//! executes**. An orderer (today [`runtime::solo`], a single replica; PBFT
//! replicas later) takes verified transactions from the [`mempool`], cuts
//! them into a [`block::Proposal`] under the block interval and size
//! limits, and hands the proposal to [`ledger::Ledger::commit`], which
//! validates it against the chain, executes it, and writes block, state,
//! history and indexes in one fsynced RocksDB batch.
//!
//! ```text
//!  clients ──gRPC──▶ api ──▶ tx::admission ──▶ mempool ──▶ orderer ──▶ ledger ──▶ RocksDB
//!                     ▲                                                 │
//!                     └────────── commit notifications (subscribe, wait)┘
//! ```

pub mod api;
pub mod block;
pub mod client;
pub mod config;
pub mod crypto;
pub mod genesis;
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
