//! The host interface a contract sees: what it must export and the
//! functions it may import, all from the module [`IMPORT_MODULE`].
//! Pointers and lengths are `i32` offsets and byte counts in the
//! contract's exported memory; a range outside it traps.
//!
//! Exports:
//! - `memory`: the contract's linear memory.
//! - one function `() -> ()` per entry point. `init` runs once, when the
//!   contract is instantiated; every other export is callable by Invoke
//!   (ordered, may write) and by Query (on one node, refused writes).
//!
//! Imports (module `kubeledger`):
//!
//! | function | signature | what it does |
//! |---|---|---|
//! | `input_len` | `() -> i32` | length of the call's input |
//! | `input_read` | `(ptr)` | copies the input to `ptr` |
//! | `output` | `(ptr, len)` | sets the call's output (last call wins) |
//! | `get` | `(key, key_len, buf, cap) -> i32` | the value's length, `-1` if absent; copies at most `cap` bytes |
//! | `put` | `(key, key_len, value, value_len)` | writes (refused in a query) |
//! | `delete` | `(key, key_len)` | deletes (refused in a query) |
//! | `scan` | `(from, from_len, to, to_len, buf, cap) -> i32` | the first key `k` with `from <= k < to` (`to_len` 0: no bound): its length, `-1` if none; copies at most `cap` bytes |
//! | `caller` | `(ptr)` | writes the caller's 32-byte public key |
//! | `block_height` | `() -> i64` | height of the block the call executes in |
//! | `block_time_ms` | `() -> i64` | that block's timestamp |
//! | `emit` | `(topic, topic_len, data, data_len)` | an event, delivered with the block |
//! | `abort` | `(msg, msg_len)` | fails the call with that message (a guest panic) |
//!
//! Keys are relative to the contract's namespace: a contract cannot name
//! a key outside it. Values read and written include the writes the call
//! made so far. Every host call costs fuel ([`fuel`]).

/// The module every host function is imported from.
pub const IMPORT_MODULE: &str = "kubeledger";
/// The export that must be the contract's memory.
pub const MEMORY_EXPORT: &str = "memory";
/// The entry point run at instantiation.
pub const INIT: &str = "init";

/// Fuel host functions cost, on top of the instructions that call them.
pub mod fuel {
    /// Every host call.
    pub const CALL: u64 = 100;
    /// Per byte moved between the host and the contract's memory.
    pub const PER_BYTE: u64 = 1;
    /// A state read (get, scan), on top of [`CALL`]: a storage lookup.
    pub const READ: u64 = 1_000;
    /// A write (put, delete), on top of [`CALL`].
    pub const WRITE: u64 = 2_000;
}

/// The host functions, for checking a module's imports at install time.
pub const HOST_FUNCTIONS: [&str; 12] = [
    "input_len",
    "input_read",
    "output",
    "get",
    "put",
    "delete",
    "scan",
    "caller",
    "block_height",
    "block_time_ms",
    "emit",
    "abort",
];
