//! Inbound consensus messages, queued per signer and drained fairly.
//!
//! Messages reach this queue only after the network edge checked their
//! signature ([`super::transport`]), so each sits in the queue of the
//! replica that really signed it. Each queue is bounded on its own: a
//! replica (or anyone replaying its messages) that sends faster than the
//! consensus task drains loses its own newest messages, never another's.
//! The consensus task takes one message from each non-empty queue in turn.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use kubeledger_pbft::{ReplicaIndex, SignedMessage};
use tokio::sync::Notify;

/// Messages held per signer before that signer's further ones are dropped.
pub const PER_SIGNER: usize = 4_096;

#[derive(Debug, Default)]
struct Queues {
    /// By signer: (the peer that delivered it, the message).
    by_signer: BTreeMap<ReplicaIndex, VecDeque<(ReplicaIndex, SignedMessage)>>,
    /// The signer whose turn is next.
    turn: ReplicaIndex,
}

#[derive(Debug)]
pub struct Inbound {
    queues: Mutex<Queues>,
    arrived: Notify,
    per_signer: usize,
}

impl Default for Inbound {
    fn default() -> Self {
        Self::new(PER_SIGNER)
    }
}

impl Inbound {
    pub fn new(per_signer: usize) -> Self {
        Self {
            queues: Mutex::new(Queues::default()),
            arrived: Notify::new(),
            per_signer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        match self.queues.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues a verified message signed by `msg.signer`, delivered by
    /// `from`. False if the signer's queue is full (the message is dropped).
    pub fn push(&self, from: ReplicaIndex, msg: SignedMessage) -> bool {
        let mut q = self.lock();
        let queue = q.by_signer.entry(msg.signer).or_default();
        if queue.len() >= self.per_signer {
            return false;
        }
        queue.push_back((from, msg));
        drop(q);
        self.arrived.notify_one();
        true
    }

    /// The next message, taking signers in turn.
    pub fn pop(&self) -> Option<(ReplicaIndex, SignedMessage)> {
        let mut q = self.lock();
        let turn = q.turn;
        let signer = q
            .by_signer
            .range(turn..)
            .chain(q.by_signer.range(..turn))
            .find(|(_, queue)| !queue.is_empty())
            .map(|(signer, _)| *signer)?;
        let queue = q.by_signer.get_mut(&signer)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            q.by_signer.remove(&signer);
        }
        q.turn = signer.saturating_add(1);
        next
    }

    pub fn len(&self) -> usize {
        self.lock().by_signer.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_signer.is_empty()
    }

    /// Waits until a message is queued (returns at once if one is).
    pub async fn ready(&self) {
        loop {
            if !self.is_empty() {
                return;
            }
            self.arrived.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeledger_pbft::{Message, Vote};

    fn vote(signer: ReplicaIndex, seq: u64) -> SignedMessage {
        SignedMessage {
            signer,
            message: Message::Prepare(Vote {
                view: 0,
                seq,
                digest: [0; 32],
            }),
            signature: vec![0; 64],
        }
    }

    fn seq(m: &SignedMessage) -> u64 {
        match &m.message {
            Message::Prepare(v) => v.seq,
            _ => unreachable!("only votes are queued here"),
        }
    }

    #[test]
    fn a_flooding_signer_loses_its_own_messages_not_others() {
        let inbound = Inbound::new(8);
        let accepted = (0..100).filter(|s| inbound.push(1, vote(1, *s))).count();
        assert_eq!(accepted, 8);
        assert!(inbound.push(2, vote(2, 1_000)));
        assert!(inbound.push(3, vote(3, 2_000)));
        // The others' messages come out within the first round.
        let first: Vec<(u32, u64)> = (0..3)
            .map(|_| {
                inbound
                    .pop()
                    .map(|(_, m)| (m.signer, seq(&m)))
                    .expect("queued")
            })
            .collect();
        assert_eq!(first, vec![(1, 0), (2, 1_000), (3, 2_000)]);
        // Then the flooder's, in order, and nothing else.
        let rest: Vec<u64> = std::iter::from_fn(|| inbound.pop().map(|(_, m)| seq(&m))).collect();
        assert_eq!(rest, (1..8).collect::<Vec<_>>());
        assert!(inbound.is_empty());
    }

    #[test]
    fn signers_take_turns_and_each_keeps_its_order() {
        let inbound = Inbound::new(100);
        for s in 0..3 {
            inbound.push(0, vote(0, s));
            inbound.push(2, vote(2, 10 + s));
        }
        inbound.push(3, vote(3, 20));
        assert_eq!(inbound.len(), 7);
        let order: Vec<(u32, u64)> =
            std::iter::from_fn(|| inbound.pop().map(|(_, m)| (m.signer, seq(&m)))).collect();
        assert_eq!(
            order,
            vec![(0, 0), (2, 10), (3, 20), (0, 1), (2, 11), (0, 2), (2, 12)]
        );
    }

    #[test]
    fn the_queue_is_keyed_by_signer_not_by_who_delivered_it() {
        let inbound = Inbound::new(1);
        // Relayed by 3, signed by 1: it fills 1's queue.
        assert!(inbound.push(3, vote(1, 0)));
        assert!(!inbound.push(1, vote(1, 1)));
        assert!(inbound.push(3, vote(3, 0)));
        assert_eq!(
            inbound.pop().map(|(from, m)| (from, m.signer)),
            Some((3, 1))
        );
    }

    #[tokio::test]
    async fn ready_wakes_on_a_push() {
        let inbound = std::sync::Arc::new(Inbound::new(4));
        let waiter = {
            let inbound = inbound.clone();
            tokio::spawn(async move { inbound.ready().await })
        };
        tokio::task::yield_now().await;
        inbound.push(0, vote(0, 1));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("task");
        inbound.ready().await; // still queued: returns at once
    }
}
