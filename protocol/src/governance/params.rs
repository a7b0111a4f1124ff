//! Chain parameters in configuration state, and when a change applies.

use crate::chain_params::{is_empty_update, with_update, ChainParams};
use crate::proto::{ChainParameters, ConsortiumConfig, UpdateParams};

pub use crate::chain_params::pbft_window;

/// Blocks between the block that decides a parameter change and the first
/// block under the new parameters. A primary proposes at most one window
/// ahead of its stable checkpoint, so by the time anyone proposes the
/// activation height, every replica that took part has executed the
/// deciding block.
pub fn activation_delay(checkpoint_interval: u32) -> u64 {
    pbft_window(checkpoint_interval) + 1
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
    if is_empty_update(update) {
        return Err("a parameter update must change at least one parameter".into());
    }
    if let Some(v) = update.view_change_timeout_ms {
        if !(100..=600_000).contains(&v) {
            return Err(format!(
                "view_change_timeout_ms {v} must be between 100 and 600000"
            ));
        }
    }
    let next = with_update(base, update);
    ChainParams::from_proto(&next)
        .validate()
        .map_err(|e| e.to_string())?;
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
        let base = ChainParams::default().to_proto();
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
        let base = ChainParams::default().to_proto();
        let update = |interval, bytes, timeout| UpdateParams {
            block_interval_ms: interval,
            max_block_bytes: bytes,
            view_change_timeout_ms: timeout,
            ..Default::default()
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
