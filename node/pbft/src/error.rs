//! Construction errors. Peer input never produces an error: it is dropped
//! and counted in [`crate::Stats`].

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("validator set is empty")]
    EmptyValidatorSet,
    #[error("validator {0} has an invalid ed25519 public key")]
    InvalidKey(usize),
    #[error("replica index {0} is not in the validator set")]
    NotAValidator(u32),
    #[error("signing key does not match validator {0}'s public key")]
    KeyMismatch(u32),
    #[error(
        "stored replica state (stable checkpoint {stable}) is from an earlier epoch than the one starting at {base}"
    )]
    StaleEpoch { stable: u64, base: u64 },
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
}
