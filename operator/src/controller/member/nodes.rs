//! What a Member's nodes report: their pods, their Status RPC, and what the
//! Consortium's health monitor recorded about them.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::build::names;
use crate::controller::Context;
use crate::crd::{Consortium, Member, NodeStatus, ValidatorStatus};
use crate::{Error, Result};

/// The Consortium's status entry of validator `node`.
pub(super) fn validator_of<'a>(
    consortium: &'a Consortium,
    node: &str,
) -> Option<&'a ValidatorStatus> {
    consortium
        .status
        .as_ref()
        .and_then(|s| s.validators.iter().find(|v| v.name == node))
}

/// Pod readiness and restarts from the API, chain state from each node, health
/// and healing restarts from the Consortium's monitor.
pub(super) async fn observe_nodes(
    ctx: &Context,
    member: &Member,
    ns: &str,
    node_names: &[String],
    consortium: &Consortium,
) -> Result<Vec<NodeStatus>> {
    let name = member.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector =
        format!("app.kubernetes.io/name=kubeledger-node,app.kubernetes.io/instance={name}");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", format!("{ns}/{selector}")))?;
    let mut out = Vec::new();
    for node in node_names {
        let pod = pods
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(node.as_str()));
        let pod_status = pod.and_then(|p| p.status.as_ref());
        let ready = pod_status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let restarts = pod_status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        let report = if pod.is_some() {
            let host = names::node_host(node, &name, ns, &ctx.settings.cluster_domain);
            ctx.prober.status(&host).await
        } else {
            None
        };
        out.push(NodeStatus {
            name: node.clone(),
            ready,
            reachable: report.is_some(),
            height: report.as_ref().map(|r| r.height),
            view: report.as_ref().map(|r| r.view),
            last_block_time: report
                .as_ref()
                .and_then(|r| crate::probe::rfc3339_ms(r.last_block_time_ms)),
            restarts,
            health: validator_of(consortium, node).and_then(|v| v.health.clone()),
            healing_restarts: validator_of(consortium, node)
                .map(|v| u32::try_from(v.recent_restarts.len()).unwrap_or(u32::MAX))
                .unwrap_or_default(),
            last_restart_time: validator_of(consortium, node)
                .and_then(|v| v.last_restart_time.clone()),
            last_restart_reason: validator_of(consortium, node)
                .and_then(|v| v.last_restart_reason.clone()),
            last_backup_height: report
                .as_ref()
                .and_then(|r| (r.last_backup_at_ms > 0).then_some(r.last_backup_height)),
            last_backup_time: report
                .as_ref()
                .filter(|r| r.last_backup_at_ms > 0)
                .and_then(|r| crate::probe::rfc3339_ms(r.last_backup_at_ms)),
        });
    }
    Ok(out)
}
