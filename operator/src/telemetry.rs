//! Logging setup (`tracing`), plain or JSON.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber; `RUST_LOG` overrides the default `info`.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let _ = registry.with(fmt::layer().json()).try_init();
    } else {
        let _ = registry.with(fmt::layer()).try_init();
    }
}
