//! kubeledger operator: runs kubeledger consortia on Kubernetes.
//!
//! # Reconcile pipeline
//!
//! Both controllers follow the same steps, each in its own module:
//!
//! 1. **dereference** – read what the custom resource points at (the Member's
//!    Consortium, existing key Secrets, the founders of a Consortium);
//! 2. **validate** – check what the CRD schema and CEL rules cannot
//!    (unique node names, genesis already fixed, …);
//! 3. **build** – [`build`] turns the resources into the desired Kubernetes
//!    objects with pure functions (no I/O); [`build::MemberObjects`] are a
//!    Member's, built the same way for `kubeledger-operator render`;
//! 4. **apply** – server-side apply of every object with `force` under the one
//!    field manager [`FIELD_MANAGER`];
//! 5. **update status** – derived from what was applied and from polling the
//!    nodes' `Status` RPC; patched only when it changed.
//!
//! Each controller's reconcile is a short driver calling one named step after
//! the other ([`controller::member`], [`controller::consortium`]), each step
//! in a module of its own under the controller's directory; waiting is a
//! returned outcome, and an [`Error`] names the step and the object that failed.
//!
//! The Member reconcile also applies the Member's part in the on-chain
//! configuration ([`controller::on_chain`]): the votes its spec lists and, for a
//! Member joining a running consortium, its admission (and, when it is
//! deleted, its removal). The Consortium reconcile proposes the chain
//! parameters its spec asks for ([`controller::params`]); [`planning`] decides
//! what to ask of the chain, with pure functions.
//!
//! The Consortium reconcile also runs the health monitor: [`health`] classifies
//! every validator from its recent polls and plans restarts within the quorum
//! budget (pure functions, explicit time); [`controller::healing`] performs them.

pub mod build;
pub mod chain;
pub mod controller;
pub mod crd;
pub mod error;
pub mod genesis;
pub mod health;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod planning;
pub mod probe;
pub mod render;
pub mod server;
pub mod telemetry;

#[cfg(test)]
pub mod fixtures;

pub use error::{Error, Result};

/// The single field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "kubeledger-operator";

/// The node API's messages and gRPC client.
pub use kubeledger_protocol::proto;
