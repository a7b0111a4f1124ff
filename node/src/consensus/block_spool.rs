//! Blocks fetched during state transfer wait on disk, not in memory, until
//! the hash chain they form reaches the certified checkpoint: only then is
//! any of them trusted, and they are applied by reading them back one at a
//! time. A catch-up of any length so holds one block in memory at a time.
//!
//! The spool is a file in the data directory (beside the database), one
//! per transfer, removed when the transfer ends however it ends. A record is the block's header hash (32 bytes), the length of
//! its encoding (u32, little endian) and the prost encoding of the
//! `CertifiedBlock`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

use crate::proto::CertifiedBlock;

/// Prefix of spool file names in the data directory; each transfer has
/// its own file, `state-transfer-<n>.spool`.
pub const SPOOL_PREFIX: &str = "state-transfer-";

/// Blocks held in memory before they are written out together.
pub const FLUSH_BYTES: usize = 8 * 1024 * 1024;

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

/// Blocks written in chain order. Appending only buffers; [`Self::flush`]
/// does the file I/O and belongs on a blocking thread. The file is removed
/// when the writer is dropped, unless it became a [`SpoolReader`] (which
/// removes it in turn).
pub struct SpoolWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    pending: Vec<([u8; 32], Vec<u8>)>,
    pending_bytes: usize,
    records: u64,
}

impl SpoolWriter {
    /// A new, empty spool in `dir`, under a name no other transfer of this
    /// process uses. The file is created by the first flush.
    pub fn new(dir: &Path) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            path: dir.join(format!("{SPOOL_PREFIX}{}-{n}.spool", std::process::id())),
            out: None,
            pending: Vec::new(),
            pending_bytes: 0,
            records: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers a block; true once enough is buffered to flush.
    pub fn push(&mut self, hash: &[u8; 32], block: &CertifiedBlock) -> bool {
        let bytes = block.encode_to_vec();
        self.pending_bytes += bytes.len() + 36;
        self.pending.push((*hash, bytes));
        self.pending_bytes >= FLUSH_BYTES
    }

    /// Writes the buffered blocks to the file (blocking I/O).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError::Io { path, source }
        };
        if self.out.is_none() {
            let file = File::create(&self.path).map_err(io(&self.path))?;
            self.out = Some(BufWriter::with_capacity(1 << 20, file));
        }
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        for (hash, bytes) in self.pending.drain(..) {
            let len = u32::try_from(bytes.len()).map_err(|_| SpoolError::Damaged {
                path: self.path.clone(),
                record: self.records,
                reason: format!("a block of {} bytes does not fit a record", bytes.len()),
            })?;
            out.write_all(&hash).map_err(io(&self.path))?;
            out.write_all(&len.to_le_bytes()).map_err(io(&self.path))?;
            out.write_all(&bytes).map_err(io(&self.path))?;
            self.records += 1;
        }
        self.pending_bytes = 0;
        out.flush().map_err(io(&self.path))
    }

    pub fn records(&self) -> u64 {
        self.records + self.pending.len() as u64
    }

    /// Flushes the spool and opens it for reading from the first record
    /// (blocking I/O).
    pub fn into_reader(mut self, max_record_bytes: usize) -> Result<SpoolReader, SpoolError> {
        self.flush()?;
        let file = File::open(&self.path).map_err(|source| SpoolError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.out = None;
        // The reader owns the file from here.
        let path = std::mem::take(&mut self.path);
        Ok(SpoolReader {
            path,
            input: BufReader::with_capacity(1 << 20, file),
            records: self.records,
            read: 0,
            max_record_bytes,
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the spools a previous run of the node left in `dir` (a crash
/// mid-transfer); how many. Call before any transfer of this run starts.
pub fn remove_stale(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SPOOL_PREFIX) && name.ends_with(".spool") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
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
        let mut spool = SpoolWriter::new(dir.path());
        for h in 1..=3u64 {
            assert!(!spool.push(&[h as u8; 32], &block(h)));
            if h == 2 {
                spool.flush().expect("flush");
            }
        }
        assert_eq!(spool.records(), 3);
        let path = spool.path().to_owned();
        let mut reader = spool.into_reader(1 << 20).expect("reader");
        for h in 1..=3u64 {
            let (hash, b) = reader.next_block().expect("read").expect("a block");
            assert_eq!(hash, [h as u8; 32]);
            assert_eq!(b, block(h));
        }
        assert!(reader.next_block().expect("end").is_none());
        drop(reader);
        assert!(!path.exists());
    }

    #[test]
    fn an_oversized_record_is_refused_not_allocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = SpoolWriter::new(dir.path());
        spool.push(&[1; 32], &block(1));
        let mut reader = spool.into_reader(4).expect("reader");
        let err = reader.next_block().expect_err("too long");
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn spools_left_by_a_crash_are_removed_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = SpoolWriter::new(dir.path());
        spool.push(&[1; 32], &block(1));
        spool.flush().expect("flush");
        // A crash: the writer is never dropped.
        std::mem::forget(spool);
        std::fs::write(dir.path().join("other.txt"), "kept").expect("write");
        assert_eq!(remove_stale(dir.path()).expect("remove"), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn an_abandoned_spool_is_removed_and_two_spools_never_share_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut one = SpoolWriter::new(dir.path());
        let mut two = SpoolWriter::new(dir.path());
        assert_ne!(one.path(), two.path());
        one.push(&[1; 32], &block(1));
        one.flush().expect("flush");
        two.push(&[2; 32], &block(2));
        two.flush().expect("flush");
        let path = one.path().to_owned();
        assert!(path.exists());
        drop(one);
        assert!(!path.exists());
        let mut reader = two.into_reader(1 << 20).expect("reader");
        assert_eq!(
            reader.next_block().expect("read").expect("a block").1,
            block(2)
        );
    }
}
