//! Hashing, merkle trees, state commitments and key files.

pub mod keys;
pub mod merkle;

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash32 = [u8; 32];

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash32 {
    Sha256::digest(data).into()
}

/// Interprets `bytes` as a 32-byte hash, if it has exactly that length.
pub fn hash32(bytes: &[u8]) -> Option<Hash32> {
    bytes.try_into().ok()
}
