//! The recent polls of every validator, in memory. Losing them (an operator
//! restart) only delays detection by the thresholds; the restart history that
//! the cap and back-off depend on lives in the Consortium's status.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::classify::Sample;

/// Upper bound on samples kept per node, whatever the poll rate.
pub const MAX_SAMPLES: usize = 512;

/// Samples per node key (`<consortium>/<node>`), oldest first.
#[derive(Default)]
pub struct History(Mutex<HashMap<String, VecDeque<Sample>>>);

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Sample>>> {
        match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends `sample`, keeps what lies within `window_ms` of it plus the one
    /// sample just before (so a streak's start is known), and returns the series.
    pub fn record(&self, key: &str, sample: Sample, window_ms: u64) -> Vec<Sample> {
        let mut map = self.lock();
        let series = map.entry(key.to_string()).or_default();
        if series.back().is_some_and(|last| last.at_ms > sample.at_ms) {
            series.clear(); // the clock went back: start over rather than misjudge
        }
        let horizon = sample.at_ms.saturating_sub(window_ms);
        series.push_back(sample);
        while series.len() > MAX_SAMPLES || series.get(1).is_some_and(|s| s.at_ms <= horizon) {
            series.pop_front();
        }
        series.iter().cloned().collect()
    }

    /// Forgets a node's samples (after its pod was deleted: a new process).
    pub fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Forgets every node of a consortium but those in `keep`.
    pub fn retain(&self, prefix: &str, keep: &[String]) {
        self.lock()
            .retain(|k, _| !k.starts_with(prefix) || keep.iter().any(|x| x == k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::classify::PodObservation;

    fn at(ms: u64) -> Sample {
        Sample {
            at_ms: ms,
            pod: PodObservation::READY,
            node: None,
            consortium_height: None,
        }
    }

    #[test]
    fn keeps_the_window_and_one_before() {
        let h = History::default();
        for t in 0..10 {
            h.record("c/n", at(t * 30), 100);
        }
        let s = h.record("c/n", at(300), 100);
        let times: Vec<u64> = s.iter().map(|s| s.at_ms).collect();
        assert_eq!(times, [180, 210, 240, 270, 300]);
        h.reset("c/n");
        assert_eq!(h.record("c/n", at(400), 100).len(), 1);
        // Time going backwards starts a fresh series.
        assert_eq!(h.record("c/n", at(10), 100).len(), 1);
    }

    #[test]
    fn bounded_per_node() {
        let h = History::default();
        for t in 0..2000 {
            h.record("c/n", at(t), u64::MAX);
        }
        assert_eq!(h.record("c/n", at(5000), u64::MAX).len(), MAX_SAMPLES);
    }
}
