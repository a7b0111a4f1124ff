//! ed25519 key files: the 32-byte secret seed as 64 hex characters.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} must hold 64 hex characters (a 32-byte ed25519 seed)")]
    Format { path: PathBuf },
    #[error("{0:?} is not a 32-byte ed25519 public key in hex")]
    PublicKey(String),
    #[error("a signing key seed must be 64 hex characters (32 bytes): {0}")]
    Seed(String),
}

/// The signing key of a hex seed (64 hex characters; surrounding whitespace
/// ignored), as key files and the operator's key Secrets hold it.
pub fn parse_seed(seed_hex: &str) -> Result<SigningKey, KeyError> {
    let bytes =
        hex::decode(seed_hex.trim()).map_err(|e| KeyError::Seed(format!("not hex: {e}")))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Seed(format!("expected 32 bytes, got {}", bytes.len())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Generates a fresh signing key from the operating system's RNG.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

/// Reads a signing key from a hex key file.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_seed(&text).map_err(|_| KeyError::Format {
        path: path.to_owned(),
    })
}

/// Writes a signing key to `path` (mode 0600 on Unix), creating parent
/// directories. Refuses to overwrite an existing file.
pub fn save(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path).map_err(write_err)?;
    writeln!(file, "{}", hex::encode(key.to_bytes())).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// Loads the key at `path`, generating and saving one first if it does not exist.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), KeyError> {
    if path.exists() {
        return Ok((load(path)?, false));
    }
    let key = generate();
    save(path, &key)?;
    Ok((key, true))
}

/// Parses a hex-encoded ed25519 public key.
pub fn parse_public(hex_key: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::PublicKey(hex_key.to_owned()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicKey(hex_key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/node.key");
        let (key, created) = load_or_generate(&path).expect("generate");
        assert!(created);
        let (again, created) = load_or_generate(&path).expect("load");
        assert!(!created);
        assert_eq!(key.to_bytes(), again.to_bytes());
        assert!(save(&path, &generate()).is_err());
    }

    #[test]
    fn malformed_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not hex").expect("write");
        let err = load(&path).expect_err("must fail");
        assert!(err.to_string().contains("64 hex characters"), "{err}");
    }
}
