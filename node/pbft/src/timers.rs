//! Timer identities and durations. The state machine never reads a clock:
//! it asks the node to arm/cancel timers and reacts to `TimerFired`.

use serde::{Deserialize, Serialize};

/// A `SetTimer` replaces any pending timer with the same id; after a
/// `CancelTimer` or a new `SetTimer` the node must not deliver the old fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerId {
    /// Backups (and the primary) expect progress while work is pending.
    Request,
    /// Waiting for NEW-VIEW (or retransmitting our VIEW-CHANGE).
    ViewChange,
    /// A backup waits this long for the primary to order a request that a
    /// committed block left out ([`crate::Input::Overlooked`]); commits do
    /// not restart it.
    Censorship,
}

/// Exponential back-off for successive view changes, capped.
pub fn backoff(base_ms: u64, attempts: u32, max_exponent: u32) -> u64 {
    base_ms.saturating_mul(1u64 << attempts.min(max_exponent).min(20))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(super::backoff(100, 0, 4), 100);
        assert_eq!(super::backoff(100, 3, 4), 800);
        assert_eq!(super::backoff(100, 9, 4), 1600);
    }
}
