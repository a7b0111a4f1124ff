//! Leader election through a `coordination.k8s.io/v1` Lease, for running several
//! operator replicas: only the holder runs the controllers; a replica that loses
//! the lease exits so Kubernetes restarts it as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::{Error, Result};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.duration.as_secs()).ok(),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// Whether `lease` is free for `identity` to take (absent holder or expired).
pub fn can_acquire(lease: &Lease, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            match &spec.renew_time {
                Some(t) => t.0 + jiff::SignedDuration::from_secs(duration) < now,
                None => true,
            }
        }
    }
}

/// Tries once to acquire or renew the lease; `Ok(true)` when held afterwards.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let object = format!("{}/{}", cfg.namespace, cfg.name);
    let found = api.get_opt(&cfg.name).await;
    match found.map_err(Error::kube("read", "Lease", object.clone()))? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(cfg.spec(0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube("create", "Lease", object)(e)),
            }
        }
        Some(mut lease) => {
            if !can_acquire(&lease, &cfg.identity, jiff::Timestamp::now()) {
                return Ok(false);
            }
            let old = lease.spec.clone().unwrap_or_default();
            let ours = old.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!ours);
            lease.spec = Some(cfg.spec(transitions, if ours { old.acquire_time } else { None }));
            // resourceVersion in `lease` makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube("renew", "Lease", object)(e)),
            }
        }
    }
}

/// Blocks until the lease is held.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) {
    loop {
        match try_acquire(client, cfg).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election failed"),
        }
        tokio::time::sleep(cfg.duration / 3).await;
    }
}

/// Renews the lease until it is lost; returns then.
pub async fn hold(client: Client, cfg: LeaseConfig) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.duration / 3).await;
        match try_acquire(&client, &cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if last_ok.elapsed() >= cfg.duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago),
                )),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expired_or_own_leases_can_be_taken() {
        let now = jiff::Timestamp::now();
        assert!(can_acquire(&lease("me", 1), "me", now));
        assert!(!can_acquire(&lease("other", 1), "me", now));
        assert!(can_acquire(&lease("other", 60), "me", now));
    }
}
