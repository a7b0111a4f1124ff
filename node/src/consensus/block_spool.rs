//! Blocks fetched during state transfer wait on disk, not in memory, until
//! the hash chain they form reaches the certified checkpoint: only then is
//! any of them trusted, and they are applied by reading them back one at a
//! time. A catch-up of any length so holds one block in memory at a time.
//!
//! The spool is one file in the data directory, written anew by each
//! transfer. A record is the block's header hash (32 bytes), the length of
//! its encoding (u32, little endian) and the prost encoding of the
//! `CertifiedBlock`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::CertifiedBlock;

/// Name of the spool file in the data directory.
pub const SPOOL_FILE: &str = "state-transfer.spool";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("state-transfer spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state-transfer spool {path}: record {record} is damaged: {reason}")]
    Damaged {
        path: PathBuf,
        record: u64,
        reason: String,
    },
}

/// Blocks written in chain order.
pub struct SpoolWriter {
    path: PathBuf,
    out: BufWriter<File>,
    records: u64,
}

impl SpoolWriter {
    /// Starts an empty spool in `dir`, replacing any earlier one.
    pub fn create(dir: &Path) -> Result<Self, SpoolError> {
        let path = dir.join(SPOOL_FILE);
        let file = File::create(&path).map_err(|source| SpoolError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            records: 0,
        })
    }

    pub fn append(&mut self, hash: &[u8; 32], block: &CertifiedBlock) -> Result<(), SpoolError> {
        let bytes = block.encode_to_vec();
        let len = u32::try_from(bytes.len()).map_err(|_| SpoolError::Damaged {
            path: self.path.clone(),
            record: self.records,
            reason: format!("a block of {} bytes does not fit a record", bytes.len()),
        })?;
        let io = |source| SpoolError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.write_all(hash).map_err(io)?;
        self.out.write_all(&len.to_le_bytes()).map_err(io)?;
        self.out.write_all(&bytes).map_err(io)?;
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes the spool and opens it for reading from the first record.
    pub fn into_reader(mut self, max_record_bytes: usize) -> Result<SpoolReader, SpoolError> {
        self.out.flush().map_err(|source| SpoolError::Io {
            path: self.path.clone(),
            source,
        })?;
        let file = File::open(&self.path).map_err(|source| SpoolError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(SpoolReader {
            path: self.path,
            input: BufReader::with_capacity(1 << 20, file),
            records: self.records,
            read: 0,
            max_record_bytes,
        })
    }

    /// Throws the spool away.
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }
}

/// The spooled blocks, read back in order.
pub struct SpoolReader {
    path: PathBuf,
    input: BufReader<File>,
    records: u64,
    read: u64,
    max_record_bytes: usize,
}

impl SpoolReader {
    /// The next block and the hash recorded with it; `None` after the last.
    pub fn next_block(&mut self) -> Result<Option<([u8; 32], CertifiedBlock)>, SpoolError> {
        if self.read == self.records {
            return Ok(None);
        }
        let record = self.read;
        let io = |source| SpoolError::Io {
            path: self.path.clone(),
            source,
        };
        let mut hash = [0u8; 32];
        self.input.read_exact(&mut hash).map_err(io)?;
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(io)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > self.max_record_bytes {
            return Err(SpoolError::Damaged {
                path: self.path.clone(),
                record,
                reason: format!("length {len} over the limit of {}", self.max_record_bytes),
            });
        }
        let mut bytes = vec![0u8; len];
        self.input.read_exact(&mut bytes).map_err(io)?;
        let block = CertifiedBlock::decode(bytes.as_slice()).map_err(|e| SpoolError::Damaged {
            path: self.path.clone(),
            record,
            reason: e.to_string(),
        })?;
        self.read += 1;
        Ok(Some((hash, block)))
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Block;

    fn block(height: u64) -> CertifiedBlock {
        CertifiedBlock {
            block: Some(Block {
                header: Some(crate::proto::BlockHeader {
                    height,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            certificate: vec![height as u8; 3],
        }
    }

    #[test]
    fn blocks_come_back_in_order_and_the_file_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = SpoolWriter::create(dir.path()).expect("create");
        for h in 1..=3u64 {
            spool.append(&[h as u8; 32], &block(h)).expect("append");
        }
        assert_eq!(spool.records(), 3);
        let mut reader = spool.into_reader(1 << 20).expect("reader");
        for h in 1..=3u64 {
            let (hash, b) = reader.next_block().expect("read").expect("a block");
            assert_eq!(hash, [h as u8; 32]);
            assert_eq!(b, block(h));
        }
        assert!(reader.next_block().expect("end").is_none());
        drop(reader);
        assert!(!dir.path().join(SPOOL_FILE).exists());
    }

    #[test]
    fn an_oversized_record_is_refused_not_allocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = SpoolWriter::create(dir.path()).expect("create");
        spool.append(&[1; 32], &block(1)).expect("append");
        let mut reader = spool.into_reader(4).expect("reader");
        let err = reader.next_block().expect_err("too long");
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn a_new_spool_replaces_an_old_one_and_discard_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut old = SpoolWriter::create(dir.path()).expect("create");
        old.append(&[1; 32], &block(1)).expect("append");
        drop(old);
        let fresh = SpoolWriter::create(dir.path()).expect("create");
        let mut reader = fresh.into_reader(1 << 20).expect("reader");
        assert!(reader.next_block().expect("read").is_none());
        drop(reader);
        let spool = SpoolWriter::create(dir.path()).expect("create");
        spool.discard();
        assert!(!dir.path().join(SPOOL_FILE).exists());
    }
}
