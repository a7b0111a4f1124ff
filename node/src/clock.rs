//! The node's wall clock: milliseconds since the Unix epoch, for proposal
//! timestamps, genesis creation and client transactions. Consensus itself
//! never reads it (the replica is pure); the node passes times in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_past_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
