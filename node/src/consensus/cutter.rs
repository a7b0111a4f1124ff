//! When to cut a block: the block interval has elapsed with transactions
//! pending, or the pending transactions reached the block's count or byte
//! limit. Pure: the caller passes the time, so it is tested without a clock.

use std::time::{Duration, Instant};

use crate::genesis::ChainParams;

/// How long a block may wait and how much it may hold.
#[derive(Debug, Clone, Copy)]
pub struct CutterLimits {
    pub interval: Duration,
    pub max_txs: usize,
    pub max_bytes: usize,
}

impl CutterLimits {
    /// The block cutter's limits from the chain parameters.
    pub fn from_params(params: &ChainParams) -> Self {
        CutterLimits {
            interval: Duration::from_millis(u64::from(params.block_interval_ms)),
            max_txs: params.max_block_txs as usize,
            max_bytes: usize::try_from(params.max_block_bytes).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug)]
pub struct BlockCutter {
    limits: CutterLimits,
    last_cut: Instant,
}

/// The cutter's verdict for the current pending set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Cut a block now.
    Cut,
    /// Nothing pending: wait for transactions.
    Idle,
    /// Transactions pending: check again at this instant.
    WaitUntil(Instant),
}

impl BlockCutter {
    pub fn new(limits: CutterLimits, now: Instant) -> Self {
        Self {
            limits,
            last_cut: now,
        }
    }

    pub fn limits(&self) -> CutterLimits {
        self.limits
    }

    /// Parameters can change at run time (configuration transactions).
    pub fn set_limits(&mut self, limits: CutterLimits) {
        self.limits = limits;
    }

    pub fn decide(&self, now: Instant, pending_txs: usize, pending_bytes: usize) -> Decision {
        if pending_txs == 0 {
            return Decision::Idle;
        }
        if pending_txs >= self.limits.max_txs || pending_bytes >= self.limits.max_bytes {
            return Decision::Cut;
        }
        let due = self.last_cut + self.limits.interval;
        if now >= due {
            Decision::Cut
        } else {
            Decision::WaitUntil(due)
        }
    }

    /// Records that a block was cut at `now`; the next interval starts here.
    pub fn cut(&mut self, now: Instant) {
        self.last_cut = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cutter(now: Instant) -> BlockCutter {
        BlockCutter::new(
            CutterLimits {
                interval: Duration::from_millis(200),
                max_txs: 100,
                max_bytes: 10_000,
            },
            now,
        )
    }

    #[test]
    fn idle_without_transactions_even_when_interval_elapsed() {
        let t0 = Instant::now();
        assert_eq!(
            cutter(t0).decide(t0 + Duration::from_secs(5), 0, 0),
            Decision::Idle
        );
    }

    #[test]
    fn cuts_by_time_once_the_interval_elapses() {
        let t0 = Instant::now();
        let c = cutter(t0);
        let due = t0 + Duration::from_millis(200);
        assert_eq!(
            c.decide(t0 + Duration::from_millis(50), 3, 300),
            Decision::WaitUntil(due)
        );
        assert_eq!(c.decide(due, 3, 300), Decision::Cut);
    }

    #[test]
    fn cuts_early_by_count_or_bytes() {
        let t0 = Instant::now();
        let c = cutter(t0);
        assert_eq!(c.decide(t0, 100, 100), Decision::Cut);
        assert_eq!(c.decide(t0, 5, 10_000), Decision::Cut);
        assert!(matches!(c.decide(t0, 99, 9_999), Decision::WaitUntil(_)));
    }

    #[test]
    fn interval_restarts_at_each_cut() {
        let t0 = Instant::now();
        let mut c = cutter(t0);
        let t1 = t0 + Duration::from_millis(120);
        c.cut(t1); // a size cut
        assert_eq!(
            c.decide(t0 + Duration::from_millis(250), 1, 10),
            Decision::WaitUntil(t1 + Duration::from_millis(200))
        );
        assert_eq!(
            c.decide(t1 + Duration::from_millis(200), 1, 10),
            Decision::Cut
        );
    }
}
