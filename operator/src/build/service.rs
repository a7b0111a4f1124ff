//! Services of a member: `<member>-nodes` (headless, stable per-node DNS names for
//! peers, published before readiness so a starting node can be reached) and
//! `<member>-client` (gRPC client API and metrics).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, MemberInputs};
use crate::Result;

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: (name == "grpc" || name == "peer").then(|| "kubernetes.io/h2c".to_string()),
        ..Default::default()
    }
}

pub fn build_headless(inputs: &MemberInputs<'_>) -> Result<Service> {
    Ok(Service {
        metadata: inputs.metadata(names::headless_service(&inputs.name()?))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(inputs.selector_labels()?),
            ports: Some(vec![
                port("grpc", names::GRPC_PORT),
                port("peer", names::PEER_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn build_client(inputs: &MemberInputs<'_>) -> Result<Service> {
    Ok(Service {
        metadata: inputs.metadata(names::client_service(&inputs.name()?))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(inputs.selector_labels()?),
            ports: Some(vec![
                port("grpc", names::GRPC_PORT),
                port("metrics", names::METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn headless_and_client_services() {
        let (c, m, s) = fixtures::inputs();
        let inputs = MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        };
        let h = build_headless(&inputs).expect("build").spec.expect("spec");
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = h.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![7050, 7051]);
        let cl = build_client(&inputs).expect("build").spec.expect("spec");
        let ports: Vec<i32> = cl.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![7050, 9100]);
    }
}
