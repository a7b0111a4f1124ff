//! A call and what came of it.

use crate::Failure;

/// One call of a contract's entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The contract's name: its namespace.
    pub contract: String,
    pub function: String,
    pub input: Vec<u8>,
    /// The caller's ed25519 public key.
    pub caller: [u8; 32],
    pub height: u64,
    pub time_ms: u64,
    pub fuel: u64,
    /// A query: on one node, not ordered; writes fail the call.
    pub read_only: bool,
}

/// A write the call makes, with the full (namespaced) key; `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// An event the call emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: Vec<u8>,
    pub data: Vec<u8>,
}

/// What came of a call. On failure there are no writes and no events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: Result<Vec<u8>, Failure>,
    /// In the order of their last write, one per key.
    pub writes: Vec<Write>,
    pub events: Vec<Event>,
    pub fuel_used: u64,
}
