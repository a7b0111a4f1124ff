//! Names of the objects the operator makes; one place so builders, controllers
//! and genesis agree.

/// Node (pod) names of a member: `<member>-<ordinal>`.
pub fn node_names(member: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(0))
        .map(|i| format!("{member}-{i}"))
        .collect()
}

pub fn statefulset(member: &str) -> String {
    member.to_string()
}
pub fn headless_service(member: &str) -> String {
    format!("{member}-nodes")
}
pub fn client_service(member: &str) -> String {
    format!("{member}-client")
}
pub fn config_map(member: &str) -> String {
    format!("{member}-config")
}
pub fn genesis_config_map(consortium: &str) -> String {
    format!("{consortium}-genesis")
}
pub fn secret(member: &str) -> String {
    format!("{member}-keys")
}
pub fn pdb(member: &str) -> String {
    member.to_string()
}
pub fn service_account(member: &str) -> String {
    format!("{member}-node")
}

/// The PersistentVolumeClaim of a node (volume claim template `data`).
pub fn data_pvc(node: &str) -> String {
    format!("data-{node}")
}

/// Namespace in a node host or peer address made by [`node_host`].
pub fn namespace_of_host(host: &str) -> Option<&str> {
    host.split('.').nth(2).filter(|ns| !ns.is_empty())
}

/// Stable DNS name of a node through its member's headless Service.
pub fn node_host(node: &str, member: &str, namespace: &str, domain: &str) -> String {
    format!(
        "{node}.{}.{namespace}.svc.{domain}",
        headless_service(member)
    )
}

/// Peer (consensus) address of a node, as written into genesis.
pub fn peer_address(node: &str, member: &str, namespace: &str, domain: &str) -> String {
    format!(
        "{}:{}",
        node_host(node, member, namespace, domain),
        PEER_PORT
    )
}

pub const GRPC_PORT: i32 = 7050;
pub const PEER_PORT: i32 = 7051;
pub const METRICS_PORT: i32 = 9100;

#[cfg(test)]
mod tests {
    #[test]
    fn namespace_from_peer_address() {
        let a = super::peer_address("org1-0", "org1", "bank", "cluster.local");
        assert_eq!(super::namespace_of_host(&a), Some("bank"));
        assert_eq!(super::namespace_of_host("localhost"), None);
    }
}
