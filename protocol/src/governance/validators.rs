//! The validator set in configuration state, and when a change of it takes
//! effect.
//!
//! A set orders the blocks of its epoch. An approved admission or removal
//! schedules the next set from the block after a checkpoint `c`: the first
//! multiple of the checkpoint interval K at least one PBFT window L past
//! the deciding block d. Every replica executes d before its window can
//! reach past `c` (a replica never accepts a sequence number more than L
//! past what it executed), so every replica stops the old set at the same
//! `c`. The old set's certificate of checkpoint `c` then proves the state
//! the new set starts from. One change per epoch.

use sha2::{Digest as _, Sha256};

use super::params::pbft_window;
use crate::proto::{ConsortiumConfig, NodeInfo, ScheduledValidators};

/// Validators a change may grow the set to.
pub const MAX_VALIDATORS: usize = 64;

/// The epoch that orders a given height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch<'a> {
    /// The checkpoint the epoch starts after (0: genesis).
    pub base: u64,
    /// Replica index order.
    pub validators: &'a [NodeInfo],
    /// The epoch's last block, once the next set is scheduled.
    pub end: Option<u64>,
}

/// The last block of the epoch a change decided at `decided` ends: the
/// first checkpoint at least a window past it.
pub fn epoch_end_after(decided: u64, checkpoint_interval: u32) -> u64 {
    let k = u64::from(checkpoint_interval.max(1));
    let earliest = decided.saturating_add(pbft_window(checkpoint_interval));
    earliest.div_ceil(k).saturating_mul(k)
}

/// The epoch ordering the block at `height`.
pub fn epoch_at(config: &ConsortiumConfig, height: u64) -> Epoch<'_> {
    match &config.scheduled_validators {
        Some(s) if height >= s.from_height => Epoch {
            base: s.from_height.saturating_sub(1),
            validators: &s.validators,
            end: None,
        },
        scheduled => Epoch {
            base: config.validators_from.saturating_sub(1),
            validators: &config.validators,
            end: scheduled.as_ref().map(|s| s.from_height.saturating_sub(1)),
        },
    }
}

/// Folds a scheduled set whose height has come into the set in force.
pub fn settle(config: &mut ConsortiumConfig, height: u64) {
    if let Some(s) = config.scheduled_validators.take() {
        if height >= s.from_height {
            config.validators = s.validators;
            config.validators_from = s.from_height;
        } else {
            config.scheduled_validators = Some(s);
        }
    }
}

/// A validator change decided by proposal `proposal_id` at height `decided`
/// is pending until this height.
pub fn pending(config: &ConsortiumConfig, height: u64) -> Option<&ScheduledValidators> {
    config
        .scheduled_validators
        .as_ref()
        .filter(|s| s.from_height > height)
}

/// Schedules `validators` to take over after the epoch a decision at
/// `decided` ends; returns the first height they order.
pub fn schedule(
    config: &mut ConsortiumConfig,
    validators: Vec<NodeInfo>,
    proposal_id: u64,
    decided: u64,
    checkpoint_interval: u32,
) -> u64 {
    let from = epoch_end_after(decided, checkpoint_interval) + 1;
    config.scheduled_validators = Some(ScheduledValidators {
        from_height: from,
        validators,
        proposal_id,
    });
    from
}

/// Hash of a validator set as block headers record it: SHA-256 over the
/// hex public keys in order (the genesis file's formula).
pub fn validators_hash(validators: &[NodeInfo]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kubeledger-validators-v1");
    for v in validators {
        h.update(hex::encode(&v.public_key).as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeInfo {
        NodeInfo {
            name: format!("n{i}"),
            public_key: vec![i; 32],
            peer_address: format!("127.0.0.1:{}", 7000 + u16::from(i)),
        }
    }

    #[test]
    fn the_epoch_ends_at_the_first_checkpoint_a_window_past_the_decision() {
        // K = 10: window 20.
        assert_eq!(epoch_end_after(1, 10), 30);
        assert_eq!(epoch_end_after(10, 10), 30);
        assert_eq!(epoch_end_after(11, 10), 40);
        // K = 4: window 16.
        assert_eq!(epoch_end_after(4, 4), 20);
        assert_eq!(epoch_end_after(5, 4), 24);
    }

    #[test]
    fn the_scheduled_set_orders_from_its_height_and_settles() {
        let mut config = ConsortiumConfig {
            validators: vec![node(1), node(2)],
            validators_from: 1,
            ..Default::default()
        };
        let from = schedule(&mut config, vec![node(1), node(2), node(3)], 7, 12, 10);
        assert_eq!(from, 41);
        let before = epoch_at(&config, 40);
        assert_eq!((before.base, before.end), (0, Some(40)));
        assert_eq!(before.validators.len(), 2);
        let after = epoch_at(&config, 41);
        assert_eq!((after.base, after.end), (40, None));
        assert_eq!(after.validators.len(), 3);
        assert!(pending(&config, 40).is_some());
        assert!(pending(&config, 41).is_none());
        settle(&mut config, 40);
        assert!(config.scheduled_validators.is_some());
        settle(&mut config, 41);
        assert!(config.scheduled_validators.is_none());
        assert_eq!(epoch_at(&config, 100).base, 40);
        assert_eq!(epoch_at(&config, 100).validators.len(), 3);
    }

    #[test]
    fn the_hash_follows_keys_and_order() {
        let a = validators_hash(&[node(1), node(2)]);
        assert_ne!(a, validators_hash(&[node(2), node(1)]));
        assert_ne!(a, validators_hash(&[node(1)]));
        let mut renamed = node(1);
        renamed.name = "other".into();
        assert_eq!(a, validators_hash(&[renamed, node(2)]));
    }
}
