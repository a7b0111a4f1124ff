//! Chain parameters in configuration state, and when a change applies.

use crate::genesis::ChainParams;
use crate::proto::{ChainParameters, ConsortiumConfig, UpdateParams};

/// The PBFT window (sequence numbers a primary may run ahead of the stable
/// checkpoint) for a checkpoint interval: shared with the replica's
/// configuration so parameter activation can rely on it.
pub fn pbft_window(checkpoint_interval: u32) -> u64 {
    (2 * u64::from(checkpoint_interval.max(1))).max(16)
}

/// Blocks between the block that decides a parameter change and the first
/// block under the new parameters. A primary proposes at most one window
/// ahead of its stable checkpoint, so by the time anyone proposes the
/// activation height, every replica that took part has executed the
/// deciding block.
pub fn activation_delay(checkpoint_interval: u32) -> u64 {
    pbft_window(checkpoint_interval) + 1
}

pub fn to_proto(p: &ChainParams) -> ChainParameters {
    ChainParameters {
        block_interval_ms: p.block_interval_ms,
        max_block_txs: p.max_block_txs,
        max_block_bytes: p.max_block_bytes,
        max_tx_bytes: p.max_tx_bytes,
        max_key_bytes: p.max_key_bytes,
        max_value_bytes: p.max_value_bytes,
        checkpoint_interval: p.checkpoint_interval,
        view_change_timeout_ms: p.view_change_timeout_ms,
    }
}

pub fn from_proto(p: &ChainParameters) -> ChainParams {
    ChainParams {
        block_interval_ms: p.block_interval_ms,
        max_block_txs: p.max_block_txs,
        max_block_bytes: p.max_block_bytes,
        max_tx_bytes: p.max_tx_bytes,
        max_key_bytes: p.max_key_bytes,
        max_value_bytes: p.max_value_bytes,
        checkpoint_interval: p.checkpoint_interval,
        view_change_timeout_ms: p.view_change_timeout_ms,
    }
}

/// Parameters in force for the block at `height`.
pub fn params_at(config: &ConsortiumConfig, height: u64) -> ChainParameters {
    match &config.scheduled {
        Some(s) if height >= s.from_height => s.params.unwrap_or_default(),
        _ => config.params.unwrap_or_default(),
    }
}

/// Folds a schedule whose height has come into the parameters in force.
pub fn settle(config: &mut ConsortiumConfig, height: u64) {
    if let Some(s) = &config.scheduled {
        if height >= s.from_height {
            config.params = s.params;
            config.scheduled = None;
        }
    }
}

/// `base` with the fields `update` sets; checked like a genesis file's.
pub fn updated(base: &ChainParameters, update: &UpdateParams) -> Result<ChainParameters, String> {
    if update.block_interval_ms.is_none()
        && update.max_block_txs.is_none()
        && update.max_block_bytes.is_none()
        && update.view_change_timeout_ms.is_none()
    {
        return Err("a parameter update must change at least one parameter".into());
    }
    let mut next = *base;
    if let Some(v) = update.block_interval_ms {
        next.block_interval_ms = v;
    }
    if let Some(v) = update.max_block_txs {
        next.max_block_txs = v;
    }
    if let Some(v) = update.max_block_bytes {
        next.max_block_bytes = v;
    }
    if let Some(v) = update.view_change_timeout_ms {
        if !(100..=600_000).contains(&v) {
            return Err(format!(
                "view_change_timeout_ms {v} must be between 100 and 600000"
            ));
        }
        next.view_change_timeout_ms = v;
    }
    from_proto(&next).validate().map_err(|e| e.to_string())?;
    // Backups start a view change when no block arrives for a timeout
    // while requests wait; a block interval near it would depose healthy
    // primaries.
    if u64::from(next.block_interval_ms) * 2 > u64::from(next.view_change_timeout_ms) {
        return Err(format!(
            "block_interval_ms {} must be at most half the view change timeout of {} ms",
            next.block_interval_ms, next.view_change_timeout_ms
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ScheduledParams;

    #[test]
    fn schedule_applies_from_its_height_and_settles() {
        let base = to_proto(&ChainParams::default());
        let mut config = ConsortiumConfig {
            params: Some(base),
            ..Default::default()
        };
        let next = updated(
            &base,
            &UpdateParams {
                block_interval_ms: Some(1000),
                ..Default::default()
            },
        )
        .expect("valid");
        config.scheduled = Some(ScheduledParams {
            from_height: 50,
            params: Some(next),
            proposal_id: 1,
        });
        assert_eq!(params_at(&config, 49), base);
        assert_eq!(params_at(&config, 50), next);
        settle(&mut config, 49);
        assert!(config.scheduled.is_some());
        settle(&mut config, 50);
        assert!(config.scheduled.is_none());
        assert_eq!(params_at(&config, 1), next);
        assert_eq!(activation_delay(10), 21);
        assert_eq!(activation_delay(1), 17);
    }

    #[test]
    fn invalid_updates_are_refused_with_the_rule() {
        let base = to_proto(&ChainParams::default());
        let update = |interval, bytes, timeout| UpdateParams {
            block_interval_ms: interval,
            max_block_txs: None,
            max_block_bytes: bytes,
            view_change_timeout_ms: timeout,
        };
        let refused = [
            (update(None, None, None), "at least one"),
            (update(Some(1), None, None), "block_interval_ms"),
            (
                update(Some(5_000), None, None),
                "half the view change timeout",
            ),
            (update(None, None, Some(50)), "view_change_timeout_ms"),
            (
                update(None, None, Some(300)),
                "half the view change timeout",
            ),
            (update(None, Some(10), None), "max_block_bytes"),
        ];
        for (u, rule) in refused {
            let err = updated(&base, &u).expect_err("refused");
            assert!(err.contains(rule), "{u:?}: {err}");
        }
        let patient = updated(&base, &update(None, None, Some(4_000))).expect("valid");
        assert_eq!(patient.view_change_timeout_ms, 4_000);
    }
}
