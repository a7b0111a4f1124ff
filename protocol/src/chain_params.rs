//! The chain parameters: one table says what each one is, and everything that
//! carries parameters is made from it.
//!
//! A row names the field, its type and default, and whether a running
//! consortium may change it (`live`, by an ordered `UpdateParams` proposal) or
//! genesis fixes it for good (`fixed`). From the table come:
//!
//! - [`ChainParams`], the genesis file's `params` (fields in table order,
//!   which the genesis hash depends on);
//! - the conversions to and from the protobuf `ChainParameters`, and what an
//!   `UpdateParams` does to them;
//! - [`LiveParams`] and [`FixedParams`], the two halves as status and
//!   dashboards show them (camelCase, with a JSON schema under the `schema`
//!   feature for custom-resource status).
//!
//! Adding a parameter: a row here, its field in `ChainParameters` (and, if
//! live, in `UpdateParams`) in `types.proto`, and its rule in
//! [`ChainParams::validate`]. The compiler finds every other place that must
//! say something about it.

use serde::{Deserialize, Serialize};

use crate::genesis::GenesisError;
use crate::proto::{ChainParameters, UpdateParams};
use crate::tx::envelope::TxLimits;

/// Sorts the rows into live and fixed ones, then emits the types.
macro_rules! chain_params {
    // Every row sorted: emit.
    (@sorted
        all [$({ $(#[$am:meta])* $af:ident : $at:ty = $ad:expr })*]
        live [$({ $(#[$lm:meta])* $lf:ident : $lt:ty, $label:literal, $unit:literal })*]
        fixed [$({ $(#[$fm:meta])* $ff:ident : $ft:ty })*]
    ) => {
        /// Chain parameters, agreed by all replicas: fixed by genesis, the
        /// live ones later changed only by ordered configuration
        /// transactions.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct ChainParams {
            $( $(#[$am])* pub $af: $at, )*
        }

        impl Default for ChainParams {
            fn default() -> Self {
                Self { $( $af: $ad, )* }
            }
        }

        /// The parameters a running consortium may change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[cfg_attr(feature = "schema", schemars(transform = reported_not_defaulted))]
        #[serde(default, rename_all = "camelCase")]
        pub struct LiveParams {
            $( $(#[$lm])* pub $lf: $lt, )*
        }

        /// The parameters genesis fixes for the life of the chain.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[cfg_attr(feature = "schema", schemars(transform = reported_not_defaulted))]
        #[serde(default, rename_all = "camelCase")]
        pub struct FixedParams {
            $( $(#[$fm])* pub $ff: $ft, )*
        }

        impl ChainParams {
            pub fn live(&self) -> LiveParams {
                LiveParams { $( $lf: self.$lf, )* }
            }

            pub fn fixed(&self) -> FixedParams {
                FixedParams { $( $ff: self.$ff, )* }
            }

            /// The parameters made of their two halves.
            pub fn from_parts(live: LiveParams, fixed: FixedParams) -> Self {
                Self {
                    $( $lf: live.$lf, )*
                    $( $ff: fixed.$ff, )*
                }
            }

            pub fn to_proto(&self) -> ChainParameters {
                ChainParameters { $( $af: self.$af, )* }
            }

            pub fn from_proto(p: &ChainParameters) -> Self {
                Self { $( $af: p.$af, )* }
            }
        }

        impl LiveParams {
            /// The live half of parameters as the chain reports them.
            pub fn of(p: &ChainParameters) -> Self {
                Self { $( $lf: p.$lf, )* }
            }

            /// What `update` makes of these (unset fields keep their value).
            pub fn updated(self, update: &UpdateParams) -> Self {
                Self { $( $lf: update.$lf.unwrap_or(self.$lf), )* }
            }

            /// The update that turns `self` into `desired`: the fields that
            /// differ, and only those.
            pub fn update_to(self, desired: Self) -> UpdateParams {
                UpdateParams {
                    $( $lf: (desired.$lf != self.$lf).then_some(desired.$lf), )*
                }
            }
        }

        impl Default for LiveParams {
            fn default() -> Self {
                ChainParams::default().live()
            }
        }

        impl Default for FixedParams {
            fn default() -> Self {
                ChainParams::default().fixed()
            }
        }

        /// The live parameters by the names a Consortium's spec gives them,
        /// e.g. `blockInterval 200ms, maxBlockTxs 10000, …`.
        impl std::fmt::Display for LiveParams {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut sep = "";
                $(
                    write!(f, "{sep}{} {}{}", $label, self.$lf, $unit)?;
                    sep = ", ";
                )*
                let _ = sep;
                Ok(())
            }
        }

        /// Whether `update` changes nothing.
        pub fn is_empty_update(update: &UpdateParams) -> bool {
            true $( && update.$lf.is_none() )*
        }

        /// `base` with the fields `update` sets (not yet checked).
        pub fn with_update(base: &ChainParameters, update: &UpdateParams) -> ChainParameters {
            let mut next = *base;
            $( if let Some(v) = update.$lf { next.$lf = v; } )*
            next
        }
    };

    // A live row.
    (@sorted all [$($all:tt)*] live [$($live:tt)*] fixed [$($fixed:tt)*]
        $(#[$m:meta])* live $f:ident : $t:ty = $d:expr, name $label:literal, unit $unit:literal;
        $($rest:tt)*
    ) => {
        chain_params! { @sorted
            all [$($all)* { $(#[$m])* $f: $t = $d }]
            live [$($live)* { $(#[$m])* $f: $t, $label, $unit }]
            fixed [$($fixed)*]
            $($rest)*
        }
    };

    // A fixed row.
    (@sorted all [$($all:tt)*] live [$($live:tt)*] fixed [$($fixed:tt)*]
        $(#[$m:meta])* fixed $f:ident : $t:ty = $d:expr;
        $($rest:tt)*
    ) => {
        chain_params! { @sorted
            all [$($all)* { $(#[$m])* $f: $t = $d }]
            live [$($live)*]
            fixed [$($fixed)* { $(#[$m])* $f: $t }]
            $($rest)*
        }
    };

    ($($rows:tt)*) => {
        chain_params! { @sorted all [] live [] fixed [] $($rows)* }
    };
}

chain_params! {
    /// A block is cut when this long has passed since the last one and
    /// transactions are pending.
    live block_interval_ms: u32 = 200, name "blockInterval", unit "ms";
    /// A block is cut early once this many transactions are pending.
    live max_block_txs: u32 = 10_000, name "maxBlockTxs", unit "";
    /// ...or once pending transactions add up to this many bytes.
    live max_block_bytes: u64 = 4 * 1024 * 1024, name "maxBlockBytes", unit "";
    /// Largest encoded transaction.
    fixed max_tx_bytes: u64 = 256 * 1024;
    /// Largest state key.
    fixed max_key_bytes: u32 = 1024;
    /// Largest state value.
    fixed max_value_bytes: u64 = 128 * 1024;
    /// Blocks between PBFT checkpoints.
    fixed checkpoint_interval: u32 = 10;
    /// Base request timeout before a backup starts a view change.
    live view_change_timeout_ms: u32 = 2_000, name "viewChangeTimeout", unit "ms";
}

impl ChainParams {
    pub fn tx_limits(&self) -> TxLimits {
        TxLimits {
            max_tx_bytes: usize::try_from(self.max_tx_bytes).unwrap_or(usize::MAX),
            max_key_bytes: self.max_key_bytes as usize,
            max_value_bytes: usize::try_from(self.max_value_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The rules every replica applies to a genesis file's parameters and to
    /// every parameter change. Their texts are recorded on chain when a
    /// proposal is refused, so they change only with the protocol.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let bad = |m: &str| Err(GenesisError::Invalid(m.to_owned()));
        if !(10..=60_000).contains(&self.block_interval_ms) {
            return bad("params.block_interval_ms must be between 10 and 60000");
        }
        if !(1..=100_000).contains(&self.max_block_txs) {
            return bad("params.max_block_txs must be between 1 and 100000");
        }
        if self.max_tx_bytes < 256 || self.max_tx_bytes > 16 * 1024 * 1024 {
            return bad("params.max_tx_bytes must be between 256 bytes and 16 MiB");
        }
        if self.max_block_bytes < self.max_tx_bytes || self.max_block_bytes > 256 * 1024 * 1024 {
            return bad("params.max_block_bytes must be at least max_tx_bytes and at most 256 MiB");
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return bad("params.max_key_bytes and max_value_bytes must be positive");
        }
        if self.checkpoint_interval == 0 || self.view_change_timeout_ms == 0 {
            return bad("params.checkpoint_interval and view_change_timeout_ms must be positive");
        }
        let view_change = view_change_bytes(self.checkpoint_interval, self.max_block_bytes);
        if view_change > MAX_CONSENSUS_MESSAGE_BYTES as u64 {
            return Err(GenesisError::Invalid(format!(
                "params.checkpoint_interval {} with max_block_bytes {}: a VIEW-CHANGE carries every block of the {}-block window, up to {view_change} bytes, over the {MAX_CONSENSUS_MESSAGE_BYTES}-byte limit of a consensus message, so losing the primary would halt the chain; lower either",
                self.checkpoint_interval,
                self.max_block_bytes,
                pbft_window(self.checkpoint_interval),
            )));
        }
        Ok(())
    }
}

/// The halves are what a status reports: missing fields read as defaults
/// (an older status), but the schema carries no defaults, which a reader
/// of the status would take for what the chain holds.
#[cfg(feature = "schema")]
fn reported_not_defaulted(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for property in properties.values_mut() {
            if let Some(p) = property.as_object_mut() {
                p.remove("default");
            }
        }
    }
}

/// Largest consensus message a replica sends or accepts.
pub const MAX_CONSENSUS_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Room for the certificate and encoding of each prepared block in a
/// VIEW-CHANGE, on top of the block itself (a quorum of PREPAREs of up to 64
/// validators, about 110 bytes each, with slack).
pub const VIEW_CHANGE_SLOT_OVERHEAD: u64 = 64 * 1024;

/// The PBFT window (sequence numbers a primary may run ahead of the stable
/// checkpoint) for a checkpoint interval: shared with the replica's
/// configuration so parameter activation can rely on it.
pub fn pbft_window(checkpoint_interval: u32) -> u64 {
    (2 * u64::from(checkpoint_interval.max(1))).max(16)
}

/// The most a VIEW-CHANGE can hold under these parameters: every block of
/// the PBFT window, each with its certificate.
pub fn view_change_bytes(checkpoint_interval: u32, max_block_bytes: u64) -> u64 {
    pbft_window(checkpoint_interval)
        .saturating_mul(max_block_bytes.saturating_add(VIEW_CHANGE_SLOT_OVERHEAD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_json_keeps_the_table_order() {
        let json = serde_json::to_string(&ChainParams::default()).expect("json");
        assert_eq!(
            json,
            r#"{"block_interval_ms":200,"max_block_txs":10000,"max_block_bytes":4194304,"max_tx_bytes":262144,"max_key_bytes":1024,"max_value_bytes":131072,"checkpoint_interval":10,"view_change_timeout_ms":2000}"#
        );
    }

    #[test]
    fn halves_and_proto_round_trip() {
        let p = ChainParams {
            block_interval_ms: 300,
            max_tx_bytes: 512,
            view_change_timeout_ms: 5_000,
            ..Default::default()
        };
        assert_eq!(ChainParams::from_parts(p.live(), p.fixed()), p);
        assert_eq!(ChainParams::from_proto(&p.to_proto()), p);
        assert_eq!(LiveParams::of(&p.to_proto()), p.live());
    }

    #[test]
    fn an_update_carries_only_what_differs() {
        let base = ChainParams::default().live();
        let mut want = base;
        want.max_block_txs = 7;
        want.view_change_timeout_ms = 9_000;
        let update = base.update_to(want);
        assert_eq!(
            update,
            UpdateParams {
                max_block_txs: Some(7),
                view_change_timeout_ms: Some(9_000),
                ..Default::default()
            }
        );
        assert_eq!(base.updated(&update), want);
        assert!(!is_empty_update(&update));
        assert!(is_empty_update(&base.update_to(base)));
        let next = with_update(&ChainParams::default().to_proto(), &update);
        assert_eq!(LiveParams::of(&next), want);
        assert_eq!(next.max_tx_bytes, ChainParams::default().max_tx_bytes);
    }

    #[test]
    fn live_params_read_as_the_spec_names_them() {
        assert_eq!(
            ChainParams::default().live().to_string(),
            "blockInterval 200ms, maxBlockTxs 10000, maxBlockBytes 4194304, viewChangeTimeout 2000ms"
        );
    }

    #[test]
    fn status_halves_are_camel_case_and_tolerate_missing_fields() {
        let live: LiveParams = serde_json::from_str(r#"{"blockIntervalMs":500}"#).expect("json");
        assert_eq!(live.block_interval_ms, 500);
        assert_eq!(live.max_block_txs, ChainParams::default().max_block_txs);
        let json = serde_json::to_value(ChainParams::default().fixed()).expect("json");
        assert_eq!(json["checkpointInterval"], 10);
    }
}
