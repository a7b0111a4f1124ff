//! What every part of kubeledger agrees on: the node, its CLI and clients,
//! and the operator.
//!
//! - [`proto`]: the `kubeledger.v1` protobuf messages and gRPC clients
//!   (servers are the node's), decoded through [`bounded_codec`].
//! - [`tx`]: the signed transaction envelope: canonical encoding, id,
//!   signing, verification (one rule for single and batch checks), limits
//!   and the reasons a transaction is refused.
//! - [`block`]: blocks, their hashes and merkle roots, and the checks that
//!   a block extends a chain.
//! - [`chain_params`]: the one table of chain parameters, and the types
//!   made from it (genesis, protobuf, live/fixed halves for status).
//! - [`genesis`] and [`governance`]: the chain's configuration at height 0,
//!   and the deterministic rules that change it.
//! - [`crypto`]: hashing, merkle trees and key files.
//! - [`wire`]: how consensus messages, certificates and the replica's
//!   durable state are encoded, with the bounds that keep a peer's bytes
//!   from exhausting a node.
//!
//! Nothing here does I/O beyond reading key and genesis files, and nothing
//! runs a server: this crate is what the fuzz targets exercise.

pub mod block;
pub mod bounded_codec;
pub mod chain_params;
pub mod crypto;
pub mod genesis;
pub mod governance;
pub mod tx;
pub mod wire;

/// Generated protobuf types and gRPC clients of the `kubeledger.v1` package.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kubeledger.v1");

    /// Encoded file descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kubeledger_descriptor");
}
