//! Randomised deterministic simulation of whole PBFT clusters.
//!
//! Each seed derives a fault mix (loss, duplication, delay/reordering,
//! symmetric and asymmetric partitions, crash + restart from a serialized
//! `PersistentState`, one byzantine replica that equivocates, votes for
//! unknown digests and sends garbage), runs until all faults heal, then
//! checks agreement, validity, exactly-once, no fork and liveness.
//!
//! Default CI: 2,000 seeds for n=4 and 1,000 for n=7 (split across test
//! functions so they run in parallel). Long run, e.g. 50,000 seeds per size:
//!
//! ```text
//! PBFT_SEEDS=50000 cargo test --release -p kubeledger-pbft --test simulation
//! ```
//!
//! Reproduce one failing seed exactly (the failure message prints it):
//!
//! ```text
//! PBFT_SEED=123 cargo test -p kubeledger-pbft --test simulation -- --nocapture
//! ```

mod sim;

use sim::{seeds, Sim, SimConfig};

const N4_SALT: u64 = 0;
const N7_SALT: u64 = 1_000_000;

/// Run the `part`-th of `parts` slices of the seed list for cluster size n.
fn run_slice(n: usize, default_count: u64, salt: u64, part: usize, parts: usize) {
    let all = seeds(default_count, salt);
    let single = std::env::var("PBFT_SEED").is_ok();
    let mine: Vec<u64> = if single {
        all
    } else {
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| i % parts == part)
            .map(|(_, s)| s)
            .collect()
    };
    let mut failures = Vec::new();
    let (mut vcs, mut transfers, mut events, mut dups) = (0, 0, 0, 0);
    for seed in &mine {
        match Sim::new(SimConfig::random(n, *seed)).run() {
            Ok(o) => {
                vcs += o.view_changes;
                transfers += o.state_transfers;
                events += o.events;
                dups += o.duplicates_skipped;
            }
            Err(e) => {
                eprintln!("FAILED {e}");
                failures.push(*seed);
                if failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    eprintln!(
        "n={n} part {part}/{parts}: {} seeds, {vcs} view changes, {transfers} state transfers, {events} events, {dups} resurfaced txs skipped",
        mine.len()
    );
    assert!(failures.is_empty(), "failing seeds for n={n}: {failures:?}");
}

#[test]
fn n4_seeds_part0() {
    run_slice(4, 2_000, N4_SALT, 0, 2);
}

#[test]
fn n4_seeds_part1() {
    run_slice(4, 2_000, N4_SALT, 1, 2);
}

#[test]
fn n7_seeds_part0() {
    run_slice(7, 1_000, N7_SALT, 0, 2);
}

#[test]
fn n7_seeds_part1() {
    run_slice(7, 1_000, N7_SALT, 1, 2);
}

#[test]
fn small_clusters_including_n1() {
    for n in 1..=3 {
        for seed in seeds(50, 2_000_000 + 1000 * n as u64) {
            let mut cfg = SimConfig::random(n, seed);
            cfg.faults.byzantine = None;
            if let Err(e) = Sim::new(cfg).run() {
                panic!("FAILED {e}");
            }
        }
    }
}
