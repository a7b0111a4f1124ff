//! Liveness that means something: the node's long-running loops report
//! heartbeats, a loop that stops reporting fails the liveness check
//! (`/healthz`), and a watchdog thread ends the process once liveness has
//! failed for a grace period, so that the supervisor (kubelet, `kubeledger
//! up`) restarts it even when nothing polls `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::{Duration, Instant};

/// The loops that must keep running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// The consensus task: peer messages, timers, proposals.
    Consensus,
    /// The executor: writes committed blocks, runs state transfers.
    Storage,
}

impl Loop {
    pub const ALL: [Loop; 2] = [Loop::Consensus, Loop::Storage];

    pub fn name(self) -> &'static str {
        match self {
            Loop::Consensus => "consensus",
            Loop::Storage => "storage",
        }
    }

    fn index(self) -> usize {
        match self {
            Loop::Consensus => 0,
            Loop::Storage => 1,
        }
    }
}

/// The last heartbeat of every loop.
#[derive(Debug)]
pub struct Heartbeats {
    started: Instant,
    /// Milliseconds since `started`, per loop.
    last_ms: [AtomicU64; 2],
    timeout: Duration,
}

impl Heartbeats {
    /// Every loop counts as having just reported.
    pub fn new(timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_ms: [AtomicU64::new(0), AtomicU64::new(0)],
            timeout,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn beat(&self, which: Loop) {
        self.last_ms[which.index()].store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts `which` as having reported whenever `source` last did: for
    /// a loop that is, for the moment, the same loop as `source`.
    pub fn follow(&self, which: Loop, source: Loop) {
        let last = self.last_ms[source.index()].load(Ordering::Relaxed);
        self.last_ms[which.index()].fetch_max(last, Ordering::Relaxed);
    }

    /// How long ago `which` last reported.
    pub fn silent_for(&self, which: Loop) -> Duration {
        let last = self.last_ms[which.index()].load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// `Err` naming the first loop silent for longer than the timeout.
    pub fn check(&self) -> Result<(), String> {
        for which in Loop::ALL {
            let age = self.silent_for(which);
            if age > self.timeout {
                return Err(format!(
                    "{} loop silent for {:.1} s (limit {} s)",
                    which.name(),
                    age.as_secs_f64(),
                    self.timeout.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// What the watchdog watches: liveness, and whether the node is stopping
/// (a stopping node's loops end on purpose).
pub trait Watched: Send + Sync + 'static {
    fn liveness(&self) -> Result<(), String>;
    fn stopping(&self) -> bool;
}

/// Starts the watchdog thread. It checks every `period`; once liveness
/// has failed continuously for `grace`, it calls `expire` with the reason
/// (the node binary exits the process there). It ends when the node is
/// dropped or stops. A plain thread, so it still runs when the async
/// runtime is wedged.
pub fn spawn_watchdog<W: Watched>(
    watched: Weak<W>,
    period: Duration,
    grace: Duration,
    expire: impl Fn(&str) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut failing_since: Option<Instant> = None;
            loop {
                std::thread::sleep(period);
                let Some(w) = watched.upgrade() else {
                    return;
                };
                if w.stopping() {
                    return;
                }
                match w.liveness() {
                    Ok(()) => failing_since = None,
                    Err(reason) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= grace {
                            tracing::error!(%reason, grace_s = grace.as_secs(), "watchdog: liveness failed for the whole grace period");
                            expire(&reason);
                            return;
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};

    #[test]
    fn a_silent_loop_fails_the_check_and_a_beat_clears_it() {
        let hb = Heartbeats::new(Duration::from_millis(30));
        assert!(hb.check().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        hb.beat(Loop::Consensus);
        let err = hb.check().expect_err("storage loop is silent");
        assert!(err.contains("storage loop silent"), "{err}");
        hb.beat(Loop::Storage);
        assert!(hb.check().is_ok());
    }

    #[test]
    fn a_loop_that_follows_another_is_as_live_as_it() {
        let hb = Heartbeats::new(Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(60));
        // Neither beat: following a silent loop keeps it silent.
        hb.follow(Loop::Consensus, Loop::Storage);
        assert!(hb.check().is_err());
        hb.beat(Loop::Storage);
        hb.follow(Loop::Consensus, Loop::Storage);
        assert!(hb.check().is_ok());
        // A later beat of its own is never taken back.
        std::thread::sleep(Duration::from_millis(5));
        hb.beat(Loop::Consensus);
        let own = hb.silent_for(Loop::Consensus);
        hb.follow(Loop::Consensus, Loop::Storage);
        assert!(hb.silent_for(Loop::Consensus) <= own + Duration::from_millis(1));
    }

    struct Fake {
        live: AtomicBool,
        stopping: AtomicBool,
    }

    impl Watched for Fake {
        fn liveness(&self) -> Result<(), String> {
            if self.live.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("consensus loop silent".into())
            }
        }
        fn stopping(&self) -> bool {
            self.stopping.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn the_watchdog_fires_only_after_the_grace_period_and_not_when_stopping() {
        let fake = Arc::new(Fake {
            live: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        let handle = spawn_watchdog(
            Arc::downgrade(&fake),
            Duration::from_millis(5),
            Duration::from_millis(50),
            move |reason| {
                let _ = tx.send(reason.to_owned());
            },
        )
        .expect("thread");
        let reason = rx.recv_timeout(Duration::from_secs(10)).expect("fires");
        assert_eq!(reason, "consensus loop silent");
        assert!(started.elapsed() >= Duration::from_millis(50));
        handle.join().expect("ends after firing");

        let stopping = Arc::new(Fake {
            live: AtomicBool::new(false),
            stopping: AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::channel::<String>();
        let handle = spawn_watchdog(
            Arc::downgrade(&stopping),
            Duration::from_millis(5),
            Duration::from_millis(10),
            move |reason| {
                let _ = tx.send(reason.to_owned());
            },
        )
        .expect("thread");
        handle.join().expect("ends");
        assert!(rx.try_recv().is_err(), "a stopping node is not killed");
    }
}
