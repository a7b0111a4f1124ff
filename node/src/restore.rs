//! Seeding a node's data directory from a snapshot (see
//! [`crate::ledger::snapshot`]), and proving what it holds before the node
//! ever starts on it: the snapshot belongs to the configured genesis; the
//! whole chain verifies from genesis to its tip (links, merkle roots, the
//! state against its commitment); the tip is the one the manifest names;
//! and a quorum of the validators of its epoch certified the checkpoint
//! the manifest carries, whose block is in the chain. Blocks after that
//! checkpoint are the snapshot node's word until the restored node meets
//! its peers, which it does like any replica coming back.

use std::path::{Path, PathBuf};

use crate::config::NodeConfig;
use crate::consensus::epoch;
use crate::genesis::{Genesis, GenesisError};
use crate::governance::validators::epoch_at;
use crate::ledger::snapshot::{dir_bytes, Manifest, SnapshotError, LEDGER_DIR};
use crate::ledger::verify::{VerifyError, VerifyReport};
use crate::ledger::{Ledger, LedgerError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the snapshot's chain does not verify: {0}")]
    Verify(#[from] VerifyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; restore only into a node without a ledger")]
    Occupied(PathBuf),
    #[error(
        "the snapshot is of the chain with genesis {snapshot}, this node's genesis is {configured}"
    )]
    OtherChain {
        snapshot: String,
        configured: String,
    },
    #[error("the snapshot holds height {found_height} ({found_hash}), its manifest says {height} ({hash})")]
    NotAsDescribed {
        height: u64,
        hash: String,
        found_height: u64,
        found_hash: String,
    },
    #[error("the snapshot carries no checkpoint certificate; take it once the chain has a stable checkpoint")]
    Unproven,
    #[error("the snapshot's checkpoint certificate is invalid: {0}")]
    BadCertificate(String),
    #[error("no snapshot under {root} restores{}", if tried.is_empty() { String::from(" (there is none)") } else { format!(": {}", tried.join("; ")) })]
    NoneRestores { root: PathBuf, tried: Vec<String> },
}

/// The ledger directory a node configured by `config` opens.
pub fn ledger_dir(config: &NodeConfig) -> PathBuf {
    config.data_dir.join("ledger")
}

/// Restores from `from`: a snapshot directory, or a directory of them (a
/// backup volume), where the newest that proves is restored and each newer
/// one that does not is named in the error if none does.
pub fn restore_from(from: &Path, config: &NodeConfig) -> Result<Restored, RestoreError> {
    if from.join(crate::ledger::snapshot::MANIFEST_FILE).exists() {
        return restore(from, config);
    }
    let io = |source| RestoreError::Io {
        path: from.to_owned(),
        source,
    };
    let candidates = crate::ledger::snapshot::list(from).map_err(io)?;
    let mut tried = Vec::new();
    for candidate in candidates {
        match restore(&candidate, config) {
            Ok(restored) => {
                if !tried.is_empty() {
                    tracing::warn!(skipped = ?tried, restored = %candidate.display(), "newer snapshots did not restore");
                }
                return Ok(restored);
            }
            // The node's own state, not the snapshot's: no other one helps.
            Err(e @ (RestoreError::Occupied(_) | RestoreError::Genesis(_))) => return Err(e),
            Err(e) => tried.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(RestoreError::NoneRestores {
        root: from.to_owned(),
        tried,
    })
}

/// What a restore proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub height: u64,
    pub checkpoint_seq: u64,
    pub verified: VerifyReport,
    pub bytes: u64,
    pub ledger_dir: PathBuf,
}

/// Restores the snapshot in `snapshot` into the data directory of the node
/// configured by `config`, which must not have a ledger yet. Nothing is
/// left in the data directory unless every check passed.
pub fn restore(snapshot: &Path, config: &NodeConfig) -> Result<Restored, RestoreError> {
    let manifest = Manifest::load(snapshot)?;
    let genesis = Genesis::load(&config.genesis_file)?;
    let configured = hex::encode(genesis.hash());
    if manifest.genesis_hash != configured {
        return Err(RestoreError::OtherChain {
            snapshot: manifest.genesis_hash,
            configured,
        });
    }
    let target = ledger_dir(config);
    if target.exists() {
        return Err(RestoreError::Occupied(target));
    }
    let staging = config.data_dir.join("ledger.restoring");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { path, source }
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let result = prove(snapshot, &manifest, genesis, config, &staging);
    match result {
        Ok(restored) => {
            std::fs::rename(&staging, &target).map_err(io(&target))?;
            Ok(Restored {
                ledger_dir: target,
                ..restored
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn prove(
    snapshot: &Path,
    manifest: &Manifest,
    genesis: Genesis,
    config: &NodeConfig,
    staging: &Path,
) -> Result<Restored, RestoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { path, source }
    };
    let source = snapshot.join(LEDGER_DIR);
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    for entry in std::fs::read_dir(&source).map_err(io(&source))? {
        let entry = entry.map_err(io(&source))?;
        if entry.file_type().map_err(io(&entry.path()))?.is_file() {
            let to = staging.join(entry.file_name());
            std::fs::copy(entry.path(), &to).map_err(io(&to))?;
        }
    }
    let bytes = dir_bytes(staging).map_err(io(staging))?;
    let ledger = Ledger::open(staging, genesis, &config.storage)?;
    let verified = ledger.verify()?;
    let tip = ledger.tip();
    if tip.height != manifest.height || hex::encode(tip.hash) != manifest.block_hash {
        return Err(RestoreError::NotAsDescribed {
            height: manifest.height,
            hash: manifest.block_hash.clone(),
            found_height: tip.height,
            found_hash: hex::encode(tip.hash),
        });
    }
    let proof = manifest
        .checkpoint_proof()
        .map_err(RestoreError::BadCertificate)?
        .ok_or(RestoreError::Unproven)?;
    if proof.seq == 0 || proof.seq > tip.height {
        return Err(RestoreError::BadCertificate(format!(
            "checkpoint {} is not a block of the snapshot (tip {})",
            proof.seq, tip.height
        )));
    }
    let config_then = ledger.config_at(proof.seq)?;
    let e = epoch_at(&config_then, proof.seq);
    let vset = epoch::validator_set(e.validators, e.base)
        .map_err(|err| RestoreError::BadCertificate(err.to_string()))?;
    let cp = epoch::verify(&vset, &proof).ok_or_else(|| {
        RestoreError::BadCertificate(format!(
            "checkpoint {} is not signed by a quorum of its epoch's validators",
            proof.seq
        ))
    })?;
    let header = ledger
        .header(cp.seq)?
        .ok_or_else(|| RestoreError::BadCertificate(format!("block {} is missing", cp.seq)))?;
    if crate::block::header_hash(&header) != cp.block_hash {
        return Err(RestoreError::BadCertificate(format!(
            "the certified block {} is not the snapshot's block {}",
            hex::encode(cp.block_hash),
            cp.seq
        )));
    }
    Ok(Restored {
        height: tip.height,
        checkpoint_seq: cp.seq,
        verified,
        bytes,
        ledger_dir: staging.to_owned(),
    })
}
