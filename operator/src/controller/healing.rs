//! Health monitor and healer of one consortium's validators: the I/O around the
//! pure [`crate::health`] functions, run by every Consortium reconcile once
//! genesis exists.
//!
//! observe (one pod LIST per member namespace, one `Status` poll per validator)
//! → classify (with the recent polls kept in memory) → plan (quorum guard,
//! back-off, hourly cap, from the restart history kept in status) → act (pod
//! and, for a rebuild, volume DELETE; Events on transitions) → validator status.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::ListParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::{delete_if_exists, Context, POLL_INTERVAL};
use crate::build::names;
use crate::crd::{Consortium, ConsortiumStatus, Member, ValidatorStatus};
use crate::genesis::Genesis;
use crate::health::classify::{NodeObservation, PodObservation};
use crate::health::plan as planner;
use crate::health::plan::HOUR_MS;
use crate::health::{self, classify, plan, Decision, HealthClass, Hold, NodeState, Sample};
use crate::probe::{rfc3339_ms, NodeReport};
use crate::{Error, Result};

/// `validators[].healing` of a node restarted and not yet seen healthy again.
pub const RESTARTING: &str = "Restarting";

/// One validator after this poll: its status entry and what it answered.
pub struct Observation {
    pub status: ValidatorStatus,
    pub report: Option<NodeReport>,
}

/// Readiness and crash back-off of a node's pod.
pub fn pod_observation(pod: Option<&Pod>) -> PodObservation {
    let Some(status) = pod.and_then(|p| p.status.as_ref()) else {
        return PodObservation {
            exists: pod.is_some(),
            ..Default::default()
        };
    };
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let crash_looping = status.container_statuses.as_ref().is_some_and(|cs| {
        cs.iter().any(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
        })
    });
    PodObservation {
        exists: true,
        ready,
        crash_looping,
    }
}

fn parse_ms(rfc3339: &str) -> Option<u64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

/// The host part of a peer address (`host:port`).
fn host_of(peer_address: &str) -> &str {
    peer_address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(peer_address)
}

/// Polls, classifies and heals every validator of `genesis`; returns their
/// status entries in genesis order.
pub async fn monitor_and_heal(
    ctx: &Context,
    c: &Consortium,
    old: &ConsortiumStatus,
    genesis: &Genesis,
    members: &[Member],
) -> Result<Vec<Observation>> {
    let name = c.name_any();
    let now = ctx.clock.now_ms();
    let (thresholds, policy) = health::settings(&c.spec.healing)?;
    let window = thresholds
        .stuck_after_ms
        .max(thresholds.lag_for_ms)
        .saturating_add(2 * u64::try_from(POLL_INTERVAL.as_millis()).unwrap_or(u64::MAX));

    // observe
    let namespaces: BTreeSet<&str> = genesis
        .validators
        .iter()
        .filter_map(|v| names::namespace_of_host(&v.peer_address))
        .collect();
    let selector =
        format!("app.kubernetes.io/name=kubeledger-node,kubeledger.io/consortium={name}");
    let mut pods: HashMap<(String, String), Pod> = HashMap::new();
    for ns in namespaces {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        for pod in api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube("list", "Pod", format!("{ns}/{selector}")))?
            .items
        {
            pods.insert((ns.to_string(), pod.name_any()), pod);
        }
    }
    let mut reports = Vec::with_capacity(genesis.validators.len());
    for v in &genesis.validators {
        reports.push(ctx.prober.status(host_of(&v.peer_address)).await);
    }
    let consortium_height = reports.iter().flatten().map(|r| r.height).max();

    // classify
    let mut states = Vec::with_capacity(reports.len());
    for (v, report) in genesis.validators.iter().zip(&reports) {
        let ns = names::namespace_of_host(&v.peer_address).unwrap_or_default();
        let pod = pods.get(&(ns.to_string(), v.name.clone()));
        let sample = Sample {
            at_ms: now,
            pod: pod_observation(pod),
            node: report.as_ref().map(|r| NodeObservation {
                height: r.height,
                view: r.view,
                corrupt: r.corrupt.clone(),
            }),
            consortium_height,
        };
        let series = ctx
            .health
            .record(&format!("{name}/{}", v.name), sample, window);
        let assessment = classify(&series, &thresholds);
        let previous = old.validators.iter().find(|p| p.name == v.name);
        let restarts_ms: Vec<u64> = previous
            .map(|p| {
                p.recent_restarts
                    .iter()
                    .filter_map(|t| parse_ms(t))
                    .collect()
            })
            .unwrap_or_default();
        let recovering = planner::still_recovering(
            previous.and_then(|p| p.healing.as_deref()) == Some(RESTARTING),
            &assessment,
        );
        states.push(NodeState {
            name: v.name.clone(),
            assessment,
            restarts_ms,
            recovering,
        });
    }
    ctx.health.retain(
        &format!("{name}/"),
        &genesis
            .validators
            .iter()
            .map(|v| format!("{name}/{}", v.name))
            .collect::<Vec<_>>(),
    );

    // plan
    let decisions = plan(&states, &policy, now);
    let n = genesis.validators.len();

    // act, and build the status entries
    let mut out = Vec::with_capacity(n);
    for ((v, report), state) in genesis.validators.iter().zip(reports).zip(&states) {
        let ns = names::namespace_of_host(&v.peer_address).unwrap_or_default();
        let previous = old.validators.iter().find(|p| p.name == v.name);
        let member = members
            .iter()
            .find(|m| m.name_any() == v.member && m.namespace().as_deref() == Some(ns));
        let a = &state.assessment;
        let mut entry = ValidatorStatus {
            name: v.name.clone(),
            member: v.member.clone(),
            public_key: v.public_key.clone(),
            peer_address: v.peer_address.clone(),
            reachable: report.is_some(),
            height: report.as_ref().map(|r| r.height),
            view: report.as_ref().map(|r| r.view),
            health: Some(a.class.as_str().into()),
            health_reason: (!a.reason.is_empty()).then(|| a.reason.clone()),
            unhealthy_since: unhealthy_since(previous, a),
            healing: state.recovering.then(|| RESTARTING.to_string()),
            recent_restarts: state
                .restarts_ms
                .iter()
                .filter(|&&t| t <= now && now - t < HOUR_MS)
                .filter_map(|&t| rfc3339_ms(t))
                .collect(),
            last_restart_time: previous.and_then(|p| p.last_restart_time.clone()),
            last_restart_reason: previous.and_then(|p| p.last_restart_reason.clone()),
        };
        let previous_healing = previous.and_then(|p| p.healing.as_deref());
        match decisions.iter().find(|d| d.node() == v.name) {
            Some(Decision::Restart { rebuild, .. }) => {
                if *rebuild {
                    delete_if_exists::<PersistentVolumeClaim>(
                        &ctx.client,
                        ns,
                        &names::data_pvc(&v.name),
                    )
                    .await?;
                }
                delete_if_exists::<Pod>(&ctx.client, ns, &v.name).await?;
                ctx.health.reset(&format!("{name}/{}", v.name));
                ctx.metrics.node_restart(&name, a.class.as_str());
                let reason = format!("{}: {}", a.class, a.detail);
                let time = rfc3339_ms(now);
                entry.healing = Some(RESTARTING.into());
                entry.recent_restarts.extend(time.clone());
                entry.last_restart_time = time;
                entry.last_restart_reason = Some(reason.clone());
                info!(node = %v.name, %reason, rebuild, "restarting validator");
                let note = format!(
                    "Deleted pod {}{} ({reason}); restart {} of at most {} per hour",
                    v.name,
                    if *rebuild { " and its volume" } else { "" },
                    entry.recent_restarts.len(),
                    policy.max_restarts_per_hour
                );
                let reason_code = if *rebuild {
                    "NodeRebuilt"
                } else {
                    "NodeRestarted"
                };
                match member {
                    Some(m) => {
                        ctx.event(m, EventType::Normal, reason_code, "Heal", note)
                            .await
                    }
                    None => {
                        ctx.event(c, EventType::Normal, reason_code, "Heal", note)
                            .await
                    }
                }
            }
            Some(Decision::Hold { hold, .. }) => {
                entry.healing = Some(hold.as_str().into());
                if previous_healing != Some(hold.as_str()) {
                    ctx.metrics.healing_hold(&name, hold.as_str());
                    hold_event(ctx, c, member, &v.name, a, *hold, n, &policy).await;
                }
            }
            None => {}
        }
        out.push(Observation {
            status: entry,
            report,
        });
    }
    let counts: Vec<(&str, i64)> = HealthClass::ALL
        .iter()
        .map(|class| {
            let k = states
                .iter()
                .filter(|s| s.assessment.class == *class)
                .count();
            (class.as_str(), i64::try_from(k).unwrap_or(i64::MAX))
        })
        .collect();
    ctx.metrics.set_nodes_by_health(&name, &counts);
    Ok(out)
}

/// The Warning an operator of the platform must see when healing holds back;
/// raised once, when the node enters the hold.
#[allow(clippy::too_many_arguments)]
async fn hold_event(
    ctx: &Context,
    c: &Consortium,
    member: Option<&Member>,
    node: &str,
    a: &health::Assessment,
    hold: Hold,
    n: usize,
    policy: &health::Policy,
) {
    let what = format!("{node} is {} ({})", a.class, a.detail);
    match hold {
        Hold::CapReached => {
            let note = format!(
                "{what} but was restarted {} time(s) in the last hour (maxRestartsPerHour); \
                 not restarting it again, the member is Degraded",
                policy.max_restarts_per_hour
            );
            match member {
                Some(m) => {
                    ctx.event(m, EventType::Warning, "RestartCapReached", "Heal", note)
                        .await
                }
                None => {
                    ctx.event(c, EventType::Warning, "RestartCapReached", "Heal", note)
                        .await
                }
            }
        }
        Hold::QuorumGuard { out, max_out } => {
            let note = format!(
                "Not restarting {what}: {out} of {n} validators out already, \
                 at most {max_out} may be out at once (n minus the quorum)"
            );
            ctx.event(c, EventType::Warning, "QuorumGuard", "Heal", note)
                .await;
        }
        Hold::ObserverBlind => {
            let note = format!(
                "Not restarting {node}: no validator answers Status, the operator may be cut off from them"
            );
            ctx.event(c, EventType::Warning, "NoValidatorAnswers", "Heal", note)
                .await;
        }
        Hold::RebuildDisabled => {
            let note = format!("{what}; rebuilding it needs healing.rebuildCorruptReplicas");
            ctx.event(c, EventType::Warning, "CorruptReplica", "Heal", note)
                .await;
        }
        // Expected pauses, visible in status.
        Hold::BackOff { .. } | Hold::Disabled => {}
    }
}

/// When the validator's unhealthy streak began, as the status shows it. The
/// poll history is in memory, so a new operator process (a restart, a leader
/// failover) sees a streak start at its own first poll; the status keeps the
/// earlier start it already recorded for the same health class, so a failover
/// neither rewrites every unhealthy validator's status nor hides how long the
/// problem has lasted.
fn unhealthy_since(previous: Option<&ValidatorStatus>, a: &health::Assessment) -> Option<String> {
    if a.class == HealthClass::Healthy {
        return None;
    }
    let recorded = previous
        .filter(|p| p.health.as_deref() == Some(a.class.as_str()))
        .and_then(|p| p.unhealthy_since.as_deref())
        .filter(|t| parse_ms(t).is_some_and(|ms| ms <= a.since_ms));
    match recorded {
        Some(t) => Some(t.to_string()),
        None => rfc3339_ms(a.since_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assessment(class: HealthClass, since_ms: u64) -> health::Assessment {
        health::Assessment {
            class,
            reason: String::new(),
            detail: String::new(),
            since_ms,
            remedy: health::classify::Remedy::None,
            answered: false,
        }
    }

    #[test]
    fn a_new_operator_process_keeps_the_recorded_streak_start() {
        let earlier = rfc3339_ms(60_000).expect("time");
        let previous = ValidatorStatus {
            health: Some("Unreachable".into()),
            unhealthy_since: Some(earlier.clone()),
            ..ValidatorStatus::default()
        };
        // The new process's own streak starts later: the status keeps the earlier start.
        let later = assessment(HealthClass::Unreachable, 120_000);
        assert_eq!(unhealthy_since(Some(&previous), &later), Some(earlier));
        // Another class is another streak.
        let stuck = assessment(HealthClass::Stuck, 120_000);
        assert_eq!(
            unhealthy_since(Some(&previous), &stuck),
            rfc3339_ms(120_000)
        );
        // A recorded start after what is observed now is not believed.
        let sooner = assessment(HealthClass::Unreachable, 30_000);
        assert_eq!(
            unhealthy_since(Some(&previous), &sooner),
            rfc3339_ms(30_000)
        );
        // Healthy has no streak; no previous status, the observation's own start.
        assert_eq!(
            unhealthy_since(Some(&previous), &assessment(HealthClass::Healthy, 0)),
            None
        );
        assert_eq!(unhealthy_since(None, &later), rfc3339_ms(120_000));
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn reads_readiness_and_crash_loops() {
        assert_eq!(pod_observation(None), PodObservation::default());
        let ready = pod(serde_json::json!({
            "metadata": {"name": "a"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }));
        assert_eq!(pod_observation(Some(&ready)), PodObservation::READY);
        let looping = pod(serde_json::json!({
            "metadata": {"name": "a"},
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "node", "ready": false, "restartCount": 7, "image": "x", "imageID": "x",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
            }
        }));
        assert_eq!(
            pod_observation(Some(&looping)),
            PodObservation {
                exists: true,
                ready: false,
                crash_looping: true
            }
        );
    }

    #[test]
    fn restart_times_round_trip() {
        let t = 1_764_000_000_123;
        assert_eq!(parse_ms(&rfc3339_ms(t).expect("time")), Some(t));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
