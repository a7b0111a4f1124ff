//! Pending transactions, in arrival order, each at most once.
//!
//! A transaction is pending from admission until its block is committed:
//! first queued, then in flight (taken into a proposal). Admission checks
//! both sets and the ledger's transaction index under one lock, and the
//! orderer releases in-flight ids only after the block is durably written,
//! so there is no instant at which a resubmitted transaction is neither
//! pending nor committed: it can never be admitted twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// Ids are SHA-256 outputs; foldhash, seeded per process, hashes them for a
// fraction of SipHash's cost on these hot maps.
use foldhash::HashMap;
use tokio::sync::Notify;

use crate::ledger::Ledger;
use crate::proto::RejectReason;
use crate::tx::{Rejection, TxId, VerifiedTx};

/// One pending transaction.
#[derive(Debug)]
struct Entry {
    /// Encoded size, counted against the pool's byte limit.
    size: usize,
    sender: [u8; 32],
    /// The signature it was verified with.
    signature: ed25519_dalek::Signature,
    /// Taken into a proposal, not yet committed.
    in_flight: bool,
    /// Arrival number on this node (see [`Mempool::oldest_queued`]).
    ticket: u64,
    /// When this node last sent it to the primary because a block with
    /// room left it out (see [`Mempool::take_for_forwarding`]).
    forwarded_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Arrival order. May hold stale entries (committed while queued, found
    /// elsewhere, already in flight); an entry counts only while its id is
    /// pending and not in flight.
    queue: VecDeque<Arc<VerifiedTx>>,
    pending: HashMap<TxId, Entry>,
    /// Pending transactions (queued and in flight) by sender key.
    per_sender: HashMap<[u8; 32], usize>,
    queued: usize,
    queued_bytes: usize,
    /// Queued and in flight.
    pending_bytes: usize,
    /// The next arrival number.
    next_ticket: u64,
    closed: bool,
}

impl Inner {
    fn remove(&mut self, id: &TxId) {
        let Some(entry) = self.pending.remove(id) else {
            return;
        };
        if !entry.in_flight {
            self.queued -= 1;
            self.queued_bytes = self.queued_bytes.saturating_sub(entry.size);
        }
        self.pending_bytes = self.pending_bytes.saturating_sub(entry.size);
        if let Some(n) = self.per_sender.get_mut(&entry.sender) {
            *n -= 1;
            if *n == 0 {
                self.per_sender.remove(&entry.sender);
            }
        }
    }

    fn is_queued(&self, id: &TxId) -> bool {
        self.pending.get(id).is_some_and(|e| !e.in_flight)
    }
}

/// What the pool holds at most (see [`crate::config::MempoolConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    pub max_txs_per_sender: usize,
}

impl From<&crate::config::MempoolConfig> for MempoolLimits {
    fn from(c: &crate::config::MempoolConfig) -> Self {
        Self {
            max_txs: c.max_txs,
            max_bytes: c.max_bytes,
            max_txs_per_sender: c.max_txs_per_sender,
        }
    }
}

#[derive(Debug)]
pub struct Mempool {
    inner: Mutex<Inner>,
    /// Woken when transactions are admitted.
    pub admitted: Notify,
    limits: MempoolLimits,
}

/// Snapshot of the pool's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MempoolStats {
    pub queued: usize,
    pub queued_bytes: usize,
    pub in_flight: usize,
    /// Queued and in flight.
    pub pending_bytes: usize,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            admitted: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Admits signature-checked transactions; one result per input, in order.
    pub fn admit(&self, txs: Vec<VerifiedTx>, ledger: &Ledger) -> Vec<Result<TxId, Rejection>> {
        let mut inner = self.lock();
        if inner.closed {
            return txs
                .iter()
                .map(|t| {
                    Err(Rejection::new(
                        RejectReason::ShuttingDown,
                        format!("transaction {}: node is shutting down", t.id),
                    ))
                })
                .collect();
        }
        let ids: Vec<TxId> = txs.iter().map(|t| t.id).collect();
        let committed = match ledger.contains_txs(&ids) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "transaction index lookup failed");
                return txs
                    .iter()
                    .map(|t| {
                        Err(Rejection::new(
                            RejectReason::ShuttingDown,
                            format!("transaction {}: ledger unavailable: {e}", t.id),
                        ))
                    })
                    .collect();
            }
        };
        let limits = self.limits;
        let mut results = Vec::with_capacity(txs.len());
        let mut added = false;
        for (tx, committed) in txs.into_iter().zip(committed) {
            let id = tx.id;
            let size = tx.encoded_len();
            let sender = tx.sender.to_bytes();
            let from_sender = inner.per_sender.get(&sender).copied().unwrap_or(0);
            let result = if committed {
                Err(Rejection::new(
                    RejectReason::DuplicateCommitted,
                    format!("transaction {id} is already committed"),
                ))
            } else if inner.pending.contains_key(&id) {
                Err(Rejection::new(
                    RejectReason::DuplicatePending,
                    format!("transaction {id} is already pending"),
                ))
            } else if from_sender >= limits.max_txs_per_sender {
                Err(Rejection::new(
                    RejectReason::SenderQuota,
                    format!(
                        "transaction {id}: sender {} has its limit of {} pending transactions; \
                         retry when they commit",
                        hex::encode(sender),
                        limits.max_txs_per_sender
                    ),
                ))
            } else if inner.pending.len() >= limits.max_txs {
                Err(Rejection::new(
                    RejectReason::MempoolFull,
                    format!(
                        "transaction {id}: mempool holds its limit of {} transactions; retry later",
                        limits.max_txs
                    ),
                ))
            } else if inner.pending_bytes + size > limits.max_bytes {
                Err(Rejection::new(
                    RejectReason::MempoolBytesFull,
                    format!(
                        "transaction {id} ({size} bytes): mempool holds {} of its limit of {} \
                         bytes; retry later",
                        inner.pending_bytes, limits.max_bytes
                    ),
                ))
            } else {
                inner.queued += 1;
                inner.queued_bytes += size;
                inner.pending_bytes += size;
                *inner.per_sender.entry(sender).or_insert(0) += 1;
                let ticket = inner.next_ticket;
                inner.next_ticket += 1;
                inner.pending.insert(
                    id,
                    Entry {
                        size,
                        sender,
                        signature: tx.signature,
                        in_flight: false,
                        ticket,
                        forwarded_at: None,
                    },
                );
                inner.queue.push_back(Arc::new(tx));
                added = true;
                Ok(id)
            };
            results.push(result);
        }
        drop(inner);
        if added {
            self.admitted.notify_one();
        }
        results
    }

    /// Takes the oldest transactions for a block, at most `max_txs` of them
    /// and at most `max_bytes` in total (but always at least one, so a
    /// single large transaction still gets a block). They stay pending, in
    /// flight, until [`Mempool::committed`] or [`Mempool::requeue`].
    pub fn take(&self, max_txs: usize, max_bytes: usize) -> Vec<Arc<VerifiedTx>> {
        let mut inner = self.lock();
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        while taken.len() < max_txs {
            let Some(next) = inner.queue.front() else {
                break;
            };
            if !inner.is_queued(&next.id) {
                inner.queue.pop_front(); // stale entry
                continue;
            }
            let size = next.encoded_len();
            if !taken.is_empty() && bytes + size > max_bytes {
                break;
            }
            let Some(tx) = inner.queue.pop_front() else {
                break;
            };
            bytes += size;
            let taken_size = inner.pending.get_mut(&tx.id).map(|entry| {
                entry.in_flight = true;
                entry.size
            });
            if let Some(size) = taken_size {
                inner.queued -= 1;
                inner.queued_bytes = inner.queued_bytes.saturating_sub(size);
            }
            taken.push(tx);
        }
        taken
    }

    /// Releases the ids of a committed block, queued or in flight.
    pub fn committed(&self, ids: &[TxId]) {
        let mut inner = self.lock();
        for id in ids {
            inner.remove(id);
        }
        if inner.queue.len() > 2 * inner.queued + 1024 {
            let Inner { queue, pending, .. } = &mut *inner;
            queue.retain(|t| pending.get(&t.id).is_some_and(|e| !e.in_flight));
        }
    }

    /// For each id, whether it is queued or in flight here (its signature
    /// was verified at admission).
    pub fn contains_all(&self, ids: &[TxId]) -> Vec<bool> {
        let inner = self.lock();
        ids.iter()
            .map(|id| inner.pending.contains_key(id))
            .collect()
    }

    /// For each transaction, whether exactly it (same body, same signature)
    /// is pending here, so its signature was verified at admission.
    pub fn verified(&self, txs: &[VerifiedTx]) -> Vec<bool> {
        let inner = self.lock();
        txs.iter()
            .map(|t| inner.pending.get(&t.id).map(|e| &e.signature) == Some(&t.signature))
            .collect()
    }

    /// The queued (not in flight) transactions, oldest first.
    pub fn queued(&self) -> Vec<Arc<VerifiedTx>> {
        let inner = self.lock();
        inner
            .queue
            .iter()
            .filter(|t| inner.is_queued(&t.id))
            .cloned()
            .collect()
    }

    /// The oldest queued (not in flight) transaction, with its arrival
    /// number on this node: what a backup watches to catch a primary that
    /// leaves it out of blocks with room for it (see
    /// `kubeledger_pbft::Input::Overlooked`). Drops stale entries at the
    /// front of the queue on the way, as [`Mempool::take`] does.
    pub fn oldest_queued(&self) -> Option<(u64, Arc<VerifiedTx>)> {
        let mut inner = self.lock();
        while let Some(front) = inner.queue.front() {
            match inner.pending.get(&front.id) {
                Some(e) if !e.in_flight => return Some((e.ticket, front.clone())),
                // Committed, or in flight (taken, so not also queued here).
                _ => {
                    inner.queue.pop_front();
                }
            }
        }
        None
    }

    /// The oldest queued transactions not sent to the primary in the last
    /// `again_after`, at most `max_txs` and `max_bytes` of them (at least
    /// one, if any qualifies), marked as sent at `now`. A backup sends
    /// them when a block with room left out its oldest transaction: the
    /// primary may never have received what this node holds (its gossip
    /// was dropped, or refused while the primary's pool was full), and
    /// sending only the one transaction watched would order one per block.
    /// At most `2 * max_txs` queue entries are looked at.
    pub fn take_for_forwarding(
        &self,
        max_txs: usize,
        max_bytes: usize,
        now: Instant,
        again_after: Duration,
    ) -> Vec<Arc<VerifiedTx>> {
        let mut inner = self.lock();
        let Inner { queue, pending, .. } = &mut *inner;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for tx in queue.iter().take(max_txs.saturating_mul(2)) {
            if batch.len() >= max_txs {
                break;
            }
            let Some(entry) = pending.get_mut(&tx.id).filter(|e| !e.in_flight) else {
                continue; // stale
            };
            if entry
                .forwarded_at
                .is_some_and(|at| now.saturating_duration_since(at) < again_after)
            {
                continue;
            }
            if !batch.is_empty() && bytes + entry.size > max_bytes {
                break;
            }
            bytes += entry.size;
            entry.forwarded_at = Some(now);
            batch.push(tx.clone());
        }
        batch
    }

    /// Puts in-flight transactions back at the front, in their order, after
    /// a proposal failed.
    pub fn requeue(&self, txs: Vec<Arc<VerifiedTx>>) {
        let mut inner = self.lock();
        for tx in txs.into_iter().rev() {
            let Some(entry) = inner.pending.get_mut(&tx.id).filter(|e| e.in_flight) else {
                continue; // committed meanwhile, or already queued
            };
            entry.in_flight = false;
            let size = entry.size;
            inner.queued += 1;
            inner.queued_bytes += size;
            inner.queue.push_front(tx);
        }
        drop(inner);
        self.admitted.notify_one();
    }

    /// Drops in-flight transactions that turned out invalid for the chain.
    pub fn discard(&self, ids: &[TxId]) {
        self.committed(ids);
    }

    pub fn is_pending(&self, id: &TxId) -> bool {
        self.lock().pending.contains_key(id)
    }

    pub fn stats(&self) -> MempoolStats {
        let inner = self.lock();
        MempoolStats {
            queued: inner.queued,
            queued_bytes: inner.queued_bytes,
            in_flight: inner.pending.len() - inner.queued,
            pending_bytes: inner.pending_bytes,
        }
    }

    /// Refuses further admissions (graceful shutdown).
    pub fn close(&self) {
        self.lock().closed = true;
        self.admitted.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::genesis::{ChainParams, Genesis, Validator};
    use crate::tx::envelope::{decode, put, sign};
    use ed25519_dalek::SigningKey;

    fn ledger(dir: &std::path::Path) -> Ledger {
        let node = SigningKey::from_bytes(&[1; 32]);
        let genesis = Genesis {
            chain_id: "test".into(),
            created_at_ms: 1,
            params: ChainParams::default(),
            validators: vec![Validator {
                name: "n0".into(),
                public_key: hex::encode(node.verifying_key().to_bytes()),
                peer_address: "127.0.0.1:1".into(),
                member: String::new(),
            }],
            members: Vec::new(),
            admission: None,
        };
        Ledger::open(dir, genesis, &StorageConfig::default()).expect("open")
    }

    fn tx(nonce: u64) -> VerifiedTx {
        let key = SigningKey::from_bytes(&[2; 32]);
        decode(
            sign(&key, "test", nonce, 1, put(format!("k{nonce}"), "v")),
            "test",
            &ChainParams::default().tx_limits(),
        )
        .expect("valid")
    }

    fn limits(max_txs: usize) -> MempoolLimits {
        MempoolLimits {
            max_txs,
            max_bytes: usize::MAX,
            max_txs_per_sender: usize::MAX,
        }
    }

    fn signed_by(key: u8, nonce: u64, value_len: usize) -> VerifiedTx {
        decode(
            sign(
                &SigningKey::from_bytes(&[key; 32]),
                "test",
                nonce,
                1,
                put(format!("k{nonce}"), vec![b'v'; value_len]),
            ),
            "test",
            &ChainParams::default().tx_limits(),
        )
        .expect("valid")
    }

    fn reasons(results: &[Result<TxId, Rejection>]) -> Vec<Option<RejectReason>> {
        results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.reason))
            .collect()
    }

    #[test]
    fn refuses_duplicates_while_queued_in_flight_and_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(10));
        assert_eq!(
            reasons(&pool.admit(vec![tx(1), tx(1)], &ledger)),
            vec![None, Some(RejectReason::DuplicatePending)]
        );
        let taken = pool.take(10, 1 << 20);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            reasons(&pool.admit(vec![tx(1)], &ledger)),
            vec![Some(RejectReason::DuplicatePending)]
        );
        let proposal = crate::block::Proposal {
            height: 1,
            timestamp_ms: 2,
            proposer: [0; 32],
            txs: taken,
        };
        let block = ledger.commit(&proposal).expect("commit");
        pool.committed(&block.tx_ids);
        assert_eq!(
            reasons(&pool.admit(vec![tx(1)], &ledger)),
            vec![Some(RejectReason::DuplicateCommitted)]
        );
        assert_eq!(pool.stats(), MempoolStats::default());
    }

    #[test]
    fn full_pool_refuses_with_its_own_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(2));
        let r = pool.admit(vec![tx(1), tx(2), tx(3)], &ledger);
        assert_eq!(
            reasons(&r),
            vec![None, None, Some(RejectReason::MempoolFull)]
        );
    }

    #[test]
    fn the_oldest_queued_transaction_keeps_its_arrival_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(100));
        assert!(pool.oldest_queued().is_none());
        pool.admit((0..4).map(tx).collect(), &ledger);
        let (first, oldest) = pool.oldest_queued().expect("queued");
        assert_eq!(oldest.id, tx(0).id);
        // Committed elsewhere: the next one is the oldest, numbered after it.
        pool.committed(&[tx(0).id]);
        let (second, oldest) = pool.oldest_queued().expect("queued");
        assert_eq!(oldest.id, tx(1).id);
        assert!(second > first);
        // Taken into a proposal: no longer queued; back after a failed
        // proposal with the same number.
        let taken = pool.take(1, usize::MAX);
        assert_eq!(pool.oldest_queued().map(|(_, t)| t.id), Some(tx(2).id));
        pool.requeue(taken);
        assert_eq!(pool.oldest_queued().map(|(t, _)| t), Some(second));
        pool.committed(&[tx(1).id, tx(2).id, tx(3).id]);
        assert!(pool.oldest_queued().is_none());
    }

    #[test]
    fn take_respects_count_and_bytes_and_requeue_restores_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(100));
        pool.admit((0..10).map(tx).collect(), &ledger);
        let size = tx(3).encoded_len(); // nonce 0 would be omitted from the encoding
        assert_eq!(pool.take(3, usize::MAX).len(), 3);
        let by_bytes = pool.take(100, size * 2 + 1);
        assert_eq!(by_bytes.len(), 2);
        let ids: Vec<TxId> = by_bytes.iter().map(|t| t.id).collect();
        pool.requeue(by_bytes);
        let again: Vec<TxId> = pool.take(2, usize::MAX).iter().map(|t| t.id).collect();
        assert_eq!(again, ids);
        // A single oversized transaction still gets taken alone.
        assert_eq!(pool.take(100, 1).len(), 1);
    }

    #[test]
    fn forwarding_sends_the_oldest_queued_once_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(100));
        pool.admit((1..=10).map(tx).collect(), &ledger);
        let ids = |b: &[Arc<VerifiedTx>]| b.iter().map(|t| t.id).collect::<Vec<_>>();
        let t0 = Instant::now();
        let again = Duration::from_secs(2);
        // One in flight and one committed are never sent.
        let taken = pool.take(1, usize::MAX);
        pool.committed(&[tx(2).id]);
        let first = pool.take_for_forwarding(3, usize::MAX, t0, again);
        assert_eq!(ids(&first), vec![tx(3).id, tx(4).id, tx(5).id]);
        // Within the interval the next ones go, not the same again.
        let second = pool.take_for_forwarding(100, usize::MAX, t0 + Duration::from_secs(1), again);
        assert_eq!(ids(&second), (6..=10).map(|n| tx(n).id).collect::<Vec<_>>());
        assert!(pool
            .take_for_forwarding(100, usize::MAX, t0 + Duration::from_secs(1), again)
            .is_empty());
        // After it, the oldest go again; bytes bound the batch (at least one).
        let size = tx(3).encoded_len();
        let third = pool.take_for_forwarding(100, size * 2 + 1, t0 + again, again);
        assert_eq!(ids(&third), vec![tx(3).id, tx(4).id]);
        assert_eq!(pool.take_for_forwarding(100, 1, t0 + again, again).len(), 1);
        // A failed proposal puts its transaction back: it can be sent.
        pool.requeue(taken);
        let back = pool.take_for_forwarding(1, usize::MAX, t0 + again, again);
        assert_eq!(ids(&back), vec![tx(1).id]);
    }

    #[test]
    fn a_commit_removes_queued_transactions_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(100));
        pool.admit((1..=4).map(tx).collect(), &ledger);
        let ids: Vec<TxId> = (1..=4).map(|n| tx(n).id).collect();
        assert_eq!(pool.contains_all(&ids), vec![true; 4]);
        // A backup's queued transactions commit in the primary's block.
        pool.committed(&ids[1..3]);
        assert_eq!(pool.contains_all(&ids), vec![true, false, false, true]);
        assert_eq!(pool.stats().queued, 2);
        assert_eq!(pool.stats().queued_bytes, 2 * tx(1).encoded_len());
        let rest: Vec<TxId> = pool.queued().iter().map(|t| t.id).collect();
        assert_eq!(rest, vec![ids[0], ids[3]]);
        let taken: Vec<TxId> = pool.take(10, usize::MAX).iter().map(|t| t.id).collect();
        assert_eq!(taken, vec![ids[0], ids[3]]);
        assert_eq!(pool.stats().queued_bytes, 0);
    }

    #[test]
    fn closed_pool_refuses_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(limits(100));
        pool.close();
        assert_eq!(
            reasons(&pool.admit(vec![tx(1)], &ledger)),
            vec![Some(RejectReason::ShuttingDown)]
        );
    }

    #[test]
    fn a_sender_over_its_quota_is_refused_and_others_still_get_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let pool = Mempool::new(MempoolLimits {
            max_txs_per_sender: 2,
            ..limits(100)
        });
        let flood: Vec<VerifiedTx> = (1..=4).map(|n| signed_by(3, n, 1)).collect();
        assert_eq!(
            reasons(&pool.admit(flood, &ledger)),
            vec![
                None,
                None,
                Some(RejectReason::SenderQuota),
                Some(RejectReason::SenderQuota)
            ]
        );
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(4, 1, 1)], &ledger)),
            vec![None]
        );
        // In flight still counts; a commit frees the sender's quota.
        let taken = pool.take(1, usize::MAX);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(3, 5, 1)], &ledger)),
            vec![Some(RejectReason::SenderQuota)]
        );
        pool.committed(&[taken[0].id]);
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(3, 5, 1)], &ledger)),
            vec![None]
        );
    }

    #[test]
    fn the_byte_limit_counts_queued_and_in_flight_transactions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(dir.path());
        let size = signed_by(5, 1, 1000).encoded_len();
        let pool = Mempool::new(MempoolLimits {
            max_bytes: 2 * size + size / 2,
            ..limits(100)
        });
        assert_eq!(
            reasons(&pool.admit((1..=3).map(|n| signed_by(5, n, 1000)).collect(), &ledger)),
            vec![None, None, Some(RejectReason::MempoolBytesFull)]
        );
        // Taking into a proposal frees no bytes: the transactions are still held.
        let taken = pool.take(2, usize::MAX);
        assert_eq!(pool.stats().pending_bytes, 2 * size);
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(5, 4, 1000)], &ledger)),
            vec![Some(RejectReason::MempoolBytesFull)]
        );
        // A small transaction still fits.
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(5, 5, 1)], &ledger)),
            vec![None]
        );
        pool.requeue(taken.clone());
        pool.committed(&taken.iter().map(|t| t.id).collect::<Vec<_>>());
        assert_eq!(pool.stats().pending_bytes, signed_by(5, 5, 1).encoded_len());
        assert_eq!(pool.stats().queued, 1);
        assert_eq!(
            reasons(&pool.admit(vec![signed_by(5, 4, 1000)], &ledger)),
            vec![None]
        );
    }
}
