//! State sync: a node that joins a long chain fetches the world state as of
//! a recent stable checkpoint from its peers, in chunks, each verified,
//! instead of replaying every block since genesis; then only the blocks
//! after it. See [`manifest`] for what is checked, [`driver`] for the
//! fetching and resuming, [`serve`] for the serving side, and
//! [`crate::ledger::synced_base`] for what such a node holds below its
//! sync point.

pub mod driver;
pub mod manifest;
pub mod serve;
#[cfg(test)]
mod tests;

pub use driver::{Outcome, StateSync, SyncError};
