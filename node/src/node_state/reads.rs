//! Storage reads for the gRPC servers: on the blocking pool, never on the
//! async workers the consensus task shares, and a bounded number at once.
//!
//! A RocksDB read can wait on disk. Run on an async worker, enough
//! concurrent `GetBlocks`, `Subscribe` or `GetHistory` calls would occupy
//! every worker and starve the consensus task until the watchdog killed
//! the process. Here each read waits for a permit (the wait is a parked
//! future, not a thread), then runs on the blocking pool.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::Status;

use crate::ledger::LedgerError;

/// Reads in progress at once, across both servers.
pub const MAX_CONCURRENT_READS: usize = 32;
/// Requests one client connection may have in progress, on each server.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 64;

#[derive(Debug)]
pub struct Reads {
    permits: Arc<Semaphore>,
}

impl Default for Reads {
    fn default() -> Self {
        Self::new(MAX_CONCURRENT_READS)
    }
}

impl Reads {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// Runs `read` on the blocking pool once a permit is free; `what` names
    /// the read in the error.
    pub async fn run<T, F>(&self, what: &'static str, read: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, LedgerError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read()
        })
        .await
        .map_err(|e| Status::internal(format!("{what}: read task failed: {e}")))?;
        result.map_err(|e| {
            if let LedgerError::NotHeld { .. } = e {
                return Status::failed_precondition(e.to_string());
            }
            tracing::error!(error = %e, what, "ledger read failed");
            Status::internal(format!("{what}: ledger read failed: {e}"))
        })
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn reads_run_off_the_async_thread_and_at_most_n_at_once() {
        let reads = Arc::new(Reads::new(2));
        let async_thread = std::thread::current().id();
        let running = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (reads, running, threads, release_rx) = (
                    reads.clone(),
                    running.clone(),
                    threads.clone(),
                    release_rx.clone(),
                );
                tokio::spawn(async move {
                    reads
                        .run("test read", move || {
                            running.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut t) = threads.lock() {
                                t.push(std::thread::current().id());
                            }
                            // Blocks this thread until released: on the
                            // current-thread runtime's only thread, the test
                            // itself would hang here.
                            let _ = release_rx.lock().map(|rx| rx.recv());
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        while running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // However long the third waits, it does not start beyond the limit.
        assert_eq!(running.load(Ordering::SeqCst), 2);
        assert_eq!(reads.available(), 0);
        for _ in 0..3 {
            release_tx.send(()).expect("release");
        }
        for t in tasks {
            t.await.expect("task").expect("read");
        }
        assert_eq!(running.load(Ordering::SeqCst), 3);
        assert_eq!(reads.available(), 2);
        let threads = threads.lock().expect("lock");
        assert!(
            threads.iter().all(|t| *t != async_thread),
            "a read ran on the async thread"
        );
    }

    #[tokio::test]
    async fn a_failed_read_names_what_failed() {
        let reads = Reads::new(1);
        let err = reads
            .run::<(), _>("block 7", || {
                Err(LedgerError::WrongHeight {
                    proposed: 7,
                    tip: 5,
                })
            })
            .await
            .expect_err("fails");
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().starts_with("block 7: "), "{}", err.message());
        assert_eq!(reads.available(), 1);
    }
}
