//! Contract execution for kubeledger: WebAssembly run by `wasmi` with fuel
//! metering, bounded memory and call depth, floating point refused at
//! compile time, and host functions that are the ledger's (get, put,
//! delete and scan over the contract's own key namespace; the caller; the
//! block's height and time; events; the call's input and output).
//!
//! Like the consensus crate, this is a pure function of its inputs: a
//! [`Call`] and a read-only [`ContractState`] in, an [`Outcome`] out (the
//! writes it would make, the events, the fuel used, the output or why it
//! failed). No clock, randomness or I/O is reachable from a contract, so
//! every replica computes the same outcome, and the ledger applies the
//! writes only when the call succeeded.
//!
//! The host interface is language-neutral (i32/i64 arguments, bytes in
//! linear memory); [`abi`] documents it.

pub mod abi;
mod compile;
mod failure;
mod host;
mod outcome;
mod state;

pub use compile::{code_hash, CodeHash, Compiled, Engine, EngineLimits};
pub use failure::{CompileError, Failure};
pub use outcome::{Call, Event, Outcome, Write};
pub use state::{namespaced, ContractState, MapState};
