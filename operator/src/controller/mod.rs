//! The two controllers (Member and Consortium) and what they share.
//!
//! Each reconcile follows the pipeline documented at the crate root:
//! dereference → validate → build → apply → update status.
//!
//! - [`member`]: the Member controller, which runs a member's nodes; its
//!   `mod.rs` is the driver and the controller's wiring, and each step has
//!   its own file (`dereference`, `validate`, `apply`, `nodes`, `status`),
//!   as has the `teardown` of a deleted Member;
//! - [`on_chain`]: a Member's part in the on-chain configuration, called by
//!   the Member controller: the chain as a validator reports it (`view`),
//!   its `votes`, and the `admission` and `removal` proposals of a member
//!   joining or leaving a running consortium;
//! - [`consortium`]: the Consortium controller; the driver and wiring in its
//!   `mod.rs`, then `genesis` (built once, copied to every member
//!   namespace), `status` (aggregated from validators and Members) and
//!   `teardown`;
//! - [`healing`]: the Consortium's health monitor restarting stuck nodes;
//! - [`params`]: the chain parameters the Consortium's spec asks for.
//!
//! What the controllers share is here: the [`Context`] of every reconcile,
//! server-side [`apply`], [`delete_if_exists`] and status [`condition`]s.

pub mod consortium;
pub mod healing;
pub mod member;
pub mod on_chain;
pub mod params;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::Settings;
use crate::chain::{ChainAdmin, GrpcChain};
use crate::health::history::History;
use crate::metrics::Metrics;
use crate::probe::NodeProber;
use crate::{Result, FIELD_MANAGER};

/// Finalizer on Members and Consortia.
pub const FINALIZER: &str = "kubeledger.io/teardown";

/// Watches end before common load-balancer idle timeouts (300–350 s).
pub const WATCH_TIMEOUT_SECS: u32 = 290;

/// How often running resources are re-polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Re-check interval while waiting for something (keys, genesis, pods).
pub const WAIT_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub prober: Arc<dyn NodeProber>,
    /// Reads and changes the on-chain consortium configuration.
    pub chain: Arc<dyn ChainAdmin>,
    pub recorder: Recorder,
    pub backoff: Backoff,
    /// Recent polls of every validator, for the health classifier.
    pub health: Arc<History>,
    pub clock: Clock,
}

/// Wall-clock time for the health monitor, settable in tests.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<std::sync::atomic::AtomicU64>>);

impl Clock {
    /// A clock standing at `ms` until [`Clock::set`].
    pub fn manual(ms: u64) -> Self {
        Self(Some(Arc::new(std::sync::atomic::AtomicU64::new(ms))))
    }

    pub fn set(&self, ms: u64) {
        if let Some(t) = &self.0 {
            t.store(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(t) => t.load(std::sync::atomic::Ordering::SeqCst),
            None => now_ms(),
        }
    }
}

/// Per-object exponential back-off for failed reconciles.
#[derive(Clone, Default)]
pub struct Backoff(Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>);

impl Backoff {
    /// Delay before the next retry of `key`: 5 s, 10 s, 20 s, … up to 5 min.
    pub fn next(&self, key: &str) -> Duration {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = Duration::from_secs(5u64.saturating_mul(1u64 << (*n).min(6)))
            .min(Duration::from_secs(300));
        *n = n.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(key);
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        prober: Arc<dyn NodeProber>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            backoff: Backoff::default(),
            health: Arc::default(),
            clock: Clock::default(),
            chain: Arc::new(GrpcChain::default()),
            client,
            settings,
            metrics,
            prober,
        }
    }

    /// Publishes an Event about `obj`; a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish event");
        }
    }
}

/// Server-side apply of a namespaced object with `force`, under [`FIELD_MANAGER`].
pub async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(crate::Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(crate::Error::kube(
        "apply",
        K::kind(&()),
        format!("{namespace}/{name}"),
    ))
}

/// Deletes a namespaced object; absent is fine.
pub async fn delete_if_exists<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(crate::Error::kube(
            "delete",
            K::kind(&()),
            format!("{namespace}/{name}"),
        )(e)),
    }
}

/// A condition, keeping the previous transition time when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
