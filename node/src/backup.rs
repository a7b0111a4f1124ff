//! Backups: snapshots taken on request (`kubeledger snapshot create`, into
//! `snapshots/` beside the database) or on a schedule (`[backup]`, into a
//! directory best on a volume of its own). Each is a consistent copy that
//! carries the certificate of the latest stable checkpoint, so whoever
//! restores it proves its state before serving or voting
//! (`kubeledger snapshot restore`, [`crate::restore`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::BackupConfig;
use crate::ledger::snapshot::{self, Created, Manifest, SnapshotError};
use crate::metrics::OutcomeLabel;
use crate::node_state::NodeState;

/// The newest snapshot a node took or keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastBackup {
    pub height: u64,
    pub created_at_ms: u64,
}

/// What the node knows of its backups, for `Status` and the metrics.
#[derive(Debug, Default)]
pub struct Backups {
    last: Mutex<Option<LastBackup>>,
}

impl Backups {
    pub fn last(&self) -> Option<LastBackup> {
        match self.last.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn record(&self, state: &NodeState, taken: LastBackup) {
        let mut g = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if g.is_none_or(|old| old.created_at_ms <= taken.created_at_ms) {
            *g = Some(taken);
            state.metrics.last_backup_height.set(taken.height as i64);
            state
                .metrics
                .last_backup_timestamp_seconds
                .set((taken.created_at_ms / 1000) as i64);
        }
    }
}

/// Takes a snapshot of the running node into `root`, keeping the newest
/// `keep`, with the certificate of the latest stable checkpoint.
#[tracing::instrument(skip(state), fields(root = %root.display()))]
pub async fn take(
    state: &Arc<NodeState>,
    root: PathBuf,
    keep: usize,
) -> Result<Created, SnapshotError> {
    let ledger = state.ledger.clone();
    let proof = state
        .consensus
        .stable()
        .map(|cp| kubeledger_protocol::wire::checkpoint_proof::to_proto(&cp));
    let result = tokio::task::spawn_blocking(move || {
        ledger.create_snapshot(&root, proof, crate::clock::now_ms(), keep)
    })
    .await
    .unwrap_or_else(|e| {
        Err(SnapshotError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("the snapshot task ended: {e}")),
        })
    });
    match &result {
        Ok(created) => {
            state
                .metrics
                .backups
                .get_or_create(&OutcomeLabel { outcome: "ok" })
                .inc();
            state.backups.record(
                state,
                LastBackup {
                    height: created.manifest.height,
                    created_at_ms: created.manifest.created_at_ms,
                },
            );
            state
                .metrics
                .backup_commit_pause_seconds
                .observe(created.commits_paused.as_secs_f64());
            state
                .metrics
                .backup_seconds
                .observe(created.took.as_secs_f64());
            tracing::info!(
                path = %created.dir.display(),
                height = created.manifest.height,
                bytes = created.bytes,
                commits_paused_us = created.commits_paused.as_micros() as u64,
                took_ms = created.took.as_millis() as u64,
                "snapshot created"
            );
        }
        Err(SnapshotError::Busy) => {}
        Err(e) => {
            state
                .metrics
                .backups
                .get_or_create(&OutcomeLabel { outcome: "failed" })
                .inc();
            tracing::warn!(error = %e, "snapshot failed");
        }
    }
    result
}

/// The newest snapshot under `root` whose manifest reads, if any.
pub fn newest_in(root: &Path) -> Option<Manifest> {
    snapshot::list(root)
        .ok()?
        .iter()
        .find_map(|dir| Manifest::load(dir).ok())
}

/// Starts the scheduled backups `config` asks for (none without a `dir`).
/// The first is taken one interval after start; one that fails is logged,
/// counted, and tried again at the next interval. A snapshot is only
/// taken once the chain has a stable checkpoint to prove it.
pub fn spawn_schedule(state: Arc<NodeState>, config: &BackupConfig) {
    let Some(dir) = config.dir.clone() else {
        return;
    };
    if let Some(found) = newest_in(&dir) {
        state.backups.record(
            &state,
            LastBackup {
                height: found.height,
                created_at_ms: found.created_at_ms,
            },
        );
    }
    let every = Duration::from_secs(config.interval_s.max(1));
    let keep = config.keep;
    let mut stopping = state.stopping();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if state.consensus.stable().is_none() {
                tracing::info!("no stable checkpoint yet; the backup waits for one");
                continue;
            }
            // Nothing committed since the newest backup: it is still current.
            if state
                .backups
                .last()
                .is_some_and(|b| b.height == state.ledger.tip().height)
            {
                continue;
            }
            // A failure is counted and logged by `take`; the next tick tries again.
            let _ = take(&state, dir.clone(), keep).await;
        }
    });
}
