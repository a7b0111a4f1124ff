//! Snapshots of a running node: a consistent copy of the database, taken
//! between two commits, with a manifest that says what it holds and carries
//! the certificate of the latest stable checkpoint, so whoever restores it
//! can prove its blocks were agreed before the node serves or votes.
//!
//! A snapshot is a directory `snapshot-<height>-<ms>` holding `ledger/` (a
//! RocksDB checkpoint: hard links to the live files where the filesystem
//! allows) and `manifest.json`.

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::store::{self, StoreError};
use super::{Ledger, LedgerError};
use crate::proto::CheckpointProof;

/// The manifest's file name in a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The database's directory in a snapshot directory.
pub const LEDGER_DIR: &str = "ledger";
/// Snapshots a node keeps under its data directory when asked for one;
/// creating one deletes the oldest beyond these. Scheduled backups keep
/// what `[backup] keep` says.
pub const SNAPSHOTS_KEPT: usize = 3;
/// A snapshot directory's name starts with this; one being written starts
/// with [`PARTIAL_PREFIX`] and is renamed when complete, so a crash part-way
/// never leaves something that looks like a snapshot.
pub const SNAPSHOT_PREFIX: &str = "snapshot-";
pub const PARTIAL_PREFIX: &str = ".partial-snapshot-";
/// Beside the database: a checkpoint on its way to a snapshot directory.
const STAGING_PREFIX: &str = ".snapshot-staging-";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot manifest {path} is not valid: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("a snapshot is already being taken; try again when it is done")]
    Busy,
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub chain_id: String,
    /// Hex SHA-256 of the genesis the chain started from.
    pub genesis_hash: String,
    pub height: u64,
    /// Hex hash of the block at `height`.
    pub block_hash: String,
    pub created_at_ms: u64,
    /// Hex of the protobuf `CheckpointProof` of the latest stable
    /// checkpoint at or below `height`, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self, SnapshotError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SnapshotError::Manifest {
            path,
            reason: e.to_string(),
        })
    }

    /// The certificate the manifest carries, decoded.
    pub fn checkpoint_proof(&self) -> Result<Option<CheckpointProof>, String> {
        let Some(hex_proof) = &self.checkpoint else {
            return Ok(None);
        };
        let bytes = hex::decode(hex_proof).map_err(|e| format!("checkpoint is not hex: {e}"))?;
        CheckpointProof::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| format!("checkpoint does not decode: {e}"))
    }
}

/// A snapshot just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub bytes: u64,
    /// How long commits waited: the checkpoint beside the database.
    pub commits_paused: std::time::Duration,
    /// The whole snapshot, the copy to its directory included.
    pub took: std::time::Duration,
}

impl Ledger {
    /// Takes a snapshot into a new directory under `root`, with `proof`
    /// (the latest stable checkpoint) when it is at or below the tip it
    /// holds, then deletes the oldest snapshots beyond `keep` (at least one,
    /// the new one, stays).
    pub fn create_snapshot(
        &self,
        root: &Path,
        proof: Option<CheckpointProof>,
        now_ms: u64,
        keep: usize,
    ) -> Result<Created, SnapshotError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { path, source }
        };
        // One at a time: requests do not queue up behind the commit lock.
        use std::sync::atomic::Ordering;
        if self
            .snapshotting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(SnapshotError::Busy);
        }
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.snapshotting);
        let started = std::time::Instant::now();
        std::fs::create_dir_all(root).map_err(io(root))?;
        // Whatever a crash left half-written is no snapshot.
        remove_partials(root).map_err(io(root))?;
        // The checkpoint is first taken beside the database, where it is
        // hard links and takes milliseconds, so commits wait only for that;
        // the copy to another volume happens after, with commits running.
        let beside = self.dir().parent().unwrap_or(self.dir()).to_owned();
        remove_named(&beside, STAGING_PREFIX).map_err(io(&beside))?;
        // The memtables are flushed first, with commits running, so the
        // log the checkpoint copies under the lock is of the few blocks
        // committed since.
        self.flush()?;
        // Commits wait while the checkpoint is taken, so the tip read here
        // is the tip the copy holds.
        let guard = match self.accumulator.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let paused_at = std::time::Instant::now();
        let tip = self.tip();
        let tip_record = self
            .db
            .get_cf(
                store::cf(&self.db, store::CF_META).map_err(LedgerError::Store)?,
                store::META_TIP,
            )
            .map_err(|e| LedgerError::Store(StoreError::Rocks(e)))?;
        let name = format!("{:012}-{now_ms}", tip.height);
        let staged = beside.join(format!("{STAGING_PREFIX}{name}"));
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)
            .map_err(|e| LedgerError::Store(StoreError::Rocks(e)))?;
        // No flush under the lock: every commit is in the write-ahead log
        // (synced writes), which the checkpoint copies, and the copy
        // replays it on open. The log holds only what was committed since
        // the flush above.
        checkpoint
            .create_checkpoint_with_log_size(&staged, u64::MAX)
            .map_err(|e| LedgerError::Store(StoreError::Rocks(e)))?;
        drop(guard);
        let commits_paused = paused_at.elapsed();
        // The copy must hold the tip the manifest will name: read back from
        // the copy (its log replayed) before anything calls it a snapshot.
        let copied_tip = rocksdb::DB::open_cf_for_read_only(
            &rocksdb::Options::default(),
            &staged,
            store::ALL_CFS,
            false,
        )
        .map_err(|e| e.to_string())
        .and_then(|copy| match copy.cf_handle(store::CF_META) {
            Some(meta) => copy
                .get_cf(meta, store::META_TIP)
                .map_err(|e| e.to_string()),
            None => Err("the copy has no meta column family".into()),
        });
        if copied_tip.as_ref().ok() != Some(&tip_record) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(SnapshotError::Manifest {
                path: staged,
                reason: format!(
                    "the database checkpoint does not hold the tip at height {} ({:?})",
                    tip.height,
                    copied_tip.err()
                ),
            });
        }
        let dir = root.join(format!("{PARTIAL_PREFIX}{name}"));
        let done = root.join(format!("{SNAPSHOT_PREFIX}{name}"));
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        move_or_copy(&staged, &dir.join(LEDGER_DIR)).map_err(io(&dir))?;
        let manifest = Manifest {
            chain_id: self.chain_id().to_owned(),
            genesis_hash: hex::encode(self.genesis().hash()),
            height: tip.height,
            block_hash: hex::encode(tip.hash),
            created_at_ms: now_ms,
            checkpoint: proof
                .filter(|p| p.seq > 0 && p.seq <= tip.height)
                .map(|p| hex::encode(p.encode_to_vec())),
        };
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| SnapshotError::Manifest {
                path: dir.join(MANIFEST_FILE),
                reason: e.to_string(),
            })?;
        let manifest_path = dir.join(MANIFEST_FILE);
        std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
        let bytes = dir_bytes(&dir.join(LEDGER_DIR)).map_err(io(&dir))?;
        sync_dir(&dir.join(LEDGER_DIR)).map_err(io(&dir))?;
        std::fs::rename(&dir, &done).map_err(io(&done))?;
        sync_dir(root).map_err(io(root))?;
        prune(root, keep.max(1)).map_err(io(root))?;
        Ok(Created {
            dir: done,
            manifest,
            bytes,
            commits_paused,
            took: started.elapsed(),
        })
    }
}

/// Total size of the files in `dir` (not recursive: a RocksDB directory is flat).
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Makes a directory's entries (new files, a rename) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn named(root: &Path, prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    // Names sort by height, then by time.
    found.sort();
    Ok(found)
}

/// The snapshot directories under `root`, newest first (by height, then
/// by time); none when `root` does not exist.
pub fn list(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    match named(root, SNAPSHOT_PREFIX) {
        Ok(mut found) => {
            found.reverse();
            Ok(found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn remove_partials(root: &Path) -> std::io::Result<()> {
    remove_named(root, PARTIAL_PREFIX)
}

fn remove_named(root: &Path, prefix: &str) -> std::io::Result<()> {
    for partial in named(root, prefix)? {
        std::fs::remove_dir_all(partial)?;
    }
    Ok(())
}

/// Moves the flat directory `from` to `to`: a rename on one filesystem, a
/// copy of each file (then the source removed) across filesystems.
fn move_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::remove_dir_all(from)
}

/// Deletes all but the `keep` newest snapshot directories under `root`.
fn prune(root: &Path, keep: usize) -> std::io::Result<()> {
    let snapshots = named(root, SNAPSHOT_PREFIX)?;
    let excess = snapshots.len().saturating_sub(keep);
    for old in &snapshots[..excess] {
        std::fs::remove_dir_all(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    #[test]
    fn a_snapshot_holds_the_tip_and_only_the_newest_are_kept() {
        let data = tempfile::tempdir().expect("tempdir");
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let genesis = crate::genesis::single_validator_for_tests(&key);
        let ledger = Ledger::open(
            &data.path().join("ledger"),
            genesis.clone(),
            &StorageConfig::default(),
        )
        .expect("open");
        let root = data.path().join("snapshots");
        // While one is being taken, another is refused, not queued.
        ledger
            .snapshotting
            .store(true, std::sync::atomic::Ordering::Release);
        assert!(matches!(
            ledger.create_snapshot(&root, None, 0, SNAPSHOTS_KEPT),
            Err(SnapshotError::Busy)
        ));
        ledger
            .snapshotting
            .store(false, std::sync::atomic::Ordering::Release);
        // A snapshot a crash left half-written is cleared, never listed.
        let partial = root.join(format!("{PARTIAL_PREFIX}000000000000-0"));
        std::fs::create_dir_all(partial.join(LEDGER_DIR)).expect("partial");
        assert!(list(&root).expect("list").is_empty());
        let mut made = Vec::new();
        for ms in 1..=(SNAPSHOTS_KEPT as u64 + 2) {
            made.push(
                ledger
                    .create_snapshot(&root, None, ms, SNAPSHOTS_KEPT)
                    .expect("snapshot"),
            );
        }
        assert!(!partial.exists());
        let left: Vec<_> = std::fs::read_dir(&root).expect("list").collect();
        assert_eq!(left.len(), SNAPSHOTS_KEPT);
        let newest = made.last().expect("made");
        assert!(!made[0].dir.exists());
        assert_eq!(list(&root).expect("list")[0], newest.dir);
        // Keeping one keeps only the newest.
        let only = ledger
            .create_snapshot(&root, None, 99, 1)
            .expect("snapshot");
        assert_eq!(list(&root).expect("list"), vec![only.dir.clone()]);
        let newest = &only;
        let manifest = Manifest::load(&newest.dir).expect("manifest");
        assert_eq!(manifest, newest.manifest);
        assert_eq!(manifest.height, 0);
        assert_eq!(manifest.block_hash, hex::encode(ledger.tip().hash));
        assert_eq!(manifest.checkpoint_proof(), Ok(None));
        // The copy opens as a ledger of the same chain, at the same tip.
        drop(ledger);
        let copy = Ledger::open(
            &newest.dir.join(LEDGER_DIR),
            genesis,
            &StorageConfig::default(),
        )
        .expect("open the copy");
        assert_eq!(hex::encode(copy.tip().hash), manifest.block_hash);
    }
}
