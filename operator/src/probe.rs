//! Polls a node's `kubeledger.v1.Ledger/Status` RPC. An unreachable node is a
//! state (`None`), not an error.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::proto::ledger_client::LedgerClient;
use crate::proto::StatusRequest;

/// What a node reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub chain_id: String,
    pub node_name: String,
    /// Hex public key of the node.
    pub node_id: String,
    pub height: u64,
    pub last_block_time_ms: u64,
    pub view: u64,
    /// Hex public key of the current primary.
    pub primary: String,
    pub txs_committed: u64,
    pub version: String,
    /// Corruption the node reports (storage, or state disagreeing with a stable
    /// checkpoint): `Status.corruption`, `None` when empty.
    pub corrupt: Option<String>,
    /// The newest snapshot the node took or keeps: its height and when (ms
    /// since the epoch), 0 when none.
    pub last_backup_height: u64,
    pub last_backup_at_ms: u64,
}

/// Something that can ask a node for its status.
pub trait NodeProber: Send + Sync {
    /// `host` is a DNS name or address; the gRPC port is appended.
    fn status<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<NodeReport>>;
}

/// The real prober: a short-lived gRPC connection per poll.
#[derive(Clone, Debug)]
pub struct GrpcProber {
    pub port: i32,
    pub timeout: Duration,
}

impl Default for GrpcProber {
    fn default() -> Self {
        Self {
            port: crate::build::names::GRPC_PORT,
            timeout: Duration::from_secs(2),
        }
    }
}

impl NodeProber for GrpcProber {
    fn status<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<NodeReport>> {
        Box::pin(async move {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{host}:{}", self.port))
                    .ok()?
                    .connect_timeout(self.timeout)
                    .timeout(self.timeout);
            let poll = async {
                let channel = endpoint.connect().await.ok()?;
                let resp = LedgerClient::new(channel)
                    .status(StatusRequest {})
                    .await
                    .ok()?;
                let s = resp.into_inner();
                Some(NodeReport {
                    chain_id: s.chain_id,
                    node_name: s.node_name,
                    node_id: hex::encode(&s.node_id),
                    height: s.height,
                    last_block_time_ms: s.last_block_time_ms,
                    view: s.view,
                    primary: hex::encode(&s.primary),
                    txs_committed: s.txs_committed,
                    version: s.version,
                    corrupt: (!s.corruption.is_empty()).then_some(s.corruption),
                    last_backup_height: s.last_backup_height,
                    last_backup_at_ms: s.last_backup_at_ms,
                })
            };
            tokio::time::timeout(self.timeout * 2, poll)
                .await
                .ok()
                .flatten()
        })
    }
}

/// A prober answering from a fixed table (tests, `render`).
#[derive(Clone, Debug, Default)]
pub struct StaticProber(pub HashMap<String, NodeReport>);

impl NodeProber for StaticProber {
    fn status<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<NodeReport>> {
        Box::pin(async move { self.0.get(host).cloned() })
    }
}

/// Milliseconds since the Unix epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_node_is_none() {
        let p = GrpcProber {
            port: 1,
            timeout: Duration::from_millis(200),
        };
        assert_eq!(p.status("127.0.0.1").await, None);
    }

    #[test]
    fn formats_block_time() {
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
