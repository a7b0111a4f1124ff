//! Signed transactions: building, decoding, checking and verifying them.

pub mod envelope;
pub mod reject;
pub mod sender_keys;
pub mod signature_batch;

pub use envelope::{TxId, VerifiedTx};
pub use reject::Rejection;
