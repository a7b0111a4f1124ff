//! Consortium governance: the configuration is ledger state, changed only
//! by ordered [`ConfigChange`](crate::proto::ConfigChange) transactions
//! signed by member admin keys.
//!
//! Everything here is deterministic: a change is judged from the current
//! configuration, the proposal it refers to, its sender and the block's
//! height and timestamp, never from a clock, so every replica that executes
//! the same block reaches the same verdict and writes the same state.
//!
//! - [`keys`]: where configuration, proposals and outcomes live in state.
//! - [`params`]: chain parameters, their schedule and the activation delay.
//! - [`genesis_config`]: the configuration at height 0, from the genesis file.
//! - [`tally`]: the admission policy's verdict on a proposal's ballots.
//! - [`validators`]: the validator set, its epochs and when a change applies.
//! - [`apply`]: one change against the configuration.

pub mod apply;
pub mod genesis_config;
pub mod keys;
pub mod params;
pub mod tally;
pub mod validators;

pub use apply::{apply, valid_name, Context, Effects, Refusal, MAX_CONTRACTS};
pub use params::{activation_delay, params_at};

#[cfg(test)]
mod tests;
