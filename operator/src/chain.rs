//! Reads and changes the consortium configuration the chain holds: the
//! node's `GetConfig` and `ListProposals` RPCs, and signed configuration
//! transactions (`ConfigChange`) submitted with `SubmitAndWait`.
//!
//! A configuration transaction is an ordinary `SignedTransaction`: the
//! prost-encoded `TxBody` with a `Config` payload and the member admin key's
//! ed25519 signature over exactly those bytes. Once committed, what became of
//! it (`ConfigOutcome`) is stored under [`outcome_key`] of its id (SHA-256 of
//! the body bytes).

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::future::BoxFuture;
use prost::Message;

use kubeledger_protocol::tx::envelope;

use crate::proto::ledger_client::LedgerClient;
use crate::proto::{
    config_change::Change, ConfigOutcome, GetConfigRequest, GetConfigResponse, GetRequest,
    ListProposalsRequest, Proposal, ProposalState, SignedTransaction, SubmitAndWaitRequest,
};

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("node {host} is unreachable: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("node {host} refused the call: {status}")]
    Rpc { host: String, status: tonic::Status },
    #[error("node {host} answered unexpectedly: {reason}")]
    Unexpected { host: String, reason: String },
}

pub use kubeledger_protocol::governance::keys::outcome_key;

/// Transaction id: SHA-256 of the encoded body.
pub fn tx_id(tx: &SignedTransaction) -> [u8; 32] {
    envelope::tx_id(tx).0
}

/// Builds and signs a configuration transaction.
pub fn sign_config(
    key: &SigningKey,
    chain_id: &str,
    nonce: u64,
    timestamp_ms: u64,
    change: Change,
) -> SignedTransaction {
    envelope::sign(key, chain_id, nonce, timestamp_ms, envelope::config(change))
}

/// The signing key of a hex seed (as the key Secrets hold them).
pub fn signing_key(seed_hex: &str) -> std::result::Result<SigningKey, String> {
    kubeledger_protocol::crypto::keys::parse_seed(seed_hex).map_err(|e| e.to_string())
}

/// The host part of a peer address (`host:port`).
pub fn host_of(peer_address: &str) -> &str {
    peer_address
        .rsplit_once(':')
        .map_or(peer_address, |(host, _)| host)
}

/// Something that can read and change a chain's configuration through one of
/// its nodes (`host`: a DNS name or address; the gRPC port is appended).
pub trait ChainAdmin: Send + Sync {
    /// The configuration at the tip and the parameters in force for the next block.
    fn config<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<GetConfigResponse, ChainError>>;
    /// Every configuration proposal (up to the node's limit), newest first.
    fn proposals<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<Proposal>, ChainError>>;
    /// Submits a signed configuration transaction, waits for its block and
    /// returns its outcome.
    fn submit_signed<'a>(
        &'a self,
        host: &'a str,
        tx: SignedTransaction,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>>;

    /// Signs `change` with `key` (a fresh nonce, the time now), submits it,
    /// waits for its block and returns its outcome.
    fn submit_config<'a>(
        &'a self,
        host: &'a str,
        key: &'a SigningKey,
        chain_id: &'a str,
        change: Change,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>> {
        let nonce = rand::random();
        let tx = sign_config(key, chain_id, nonce, crate::controller::now_ms(), change);
        self.submit_signed(host, tx)
    }
}

/// The real client: a short-lived gRPC connection per call.
#[derive(Clone, Debug)]
pub struct GrpcChain {
    pub port: i32,
    pub timeout: Duration,
    /// How long `SubmitAndWait` waits for the block.
    pub commit_timeout: Duration,
}

impl Default for GrpcChain {
    fn default() -> Self {
        Self {
            port: crate::build::names::GRPC_PORT,
            timeout: Duration::from_secs(3),
            commit_timeout: Duration::from_secs(10),
        }
    }
}

impl GrpcChain {
    async fn connect(
        &self,
        host: &str,
    ) -> Result<LedgerClient<tonic::transport::Channel>, ChainError> {
        let unreachable = |reason: String| ChainError::Unreachable {
            host: host.to_string(),
            reason,
        };
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{host}:{}", self.port))
                .map_err(|e| unreachable(e.to_string()))?
                .connect_timeout(self.timeout)
                .timeout(self.timeout + self.commit_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(LedgerClient::new(channel))
    }

    fn rpc(host: &str) -> impl Fn(tonic::Status) -> ChainError + '_ {
        move |status| ChainError::Rpc {
            host: host.to_string(),
            status,
        }
    }
}

impl ChainAdmin for GrpcChain {
    fn config<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<GetConfigResponse, ChainError>> {
        Box::pin(async move {
            let mut client = self.connect(host).await?;
            Ok(client
                .get_config(GetConfigRequest { at_height: 0 })
                .await
                .map_err(Self::rpc(host))?
                .into_inner())
        })
    }

    fn proposals<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<Proposal>, ChainError>> {
        Box::pin(async move {
            let mut client = self.connect(host).await?;
            Ok(client
                .list_proposals(ListProposalsRequest {
                    state: ProposalState::Unspecified as i32,
                    limit: 1000,
                })
                .await
                .map_err(Self::rpc(host))?
                .into_inner()
                .proposals)
        })
    }

    fn submit_signed<'a>(
        &'a self,
        host: &'a str,
        tx: SignedTransaction,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>> {
        Box::pin(async move {
            let mut client = self.connect(host).await?;
            let id = tx_id(&tx);
            client
                .submit_and_wait(SubmitAndWaitRequest {
                    tx: Some(tx),
                    timeout_ms: u32::try_from(self.commit_timeout.as_millis()).unwrap_or(u32::MAX),
                })
                .await
                .map_err(Self::rpc(host))?;
            let stored = client
                .get(GetRequest {
                    key: outcome_key(&id),
                })
                .await
                .map_err(Self::rpc(host))?
                .into_inner();
            let unexpected = |reason: String| ChainError::Unexpected {
                host: host.to_string(),
                reason,
            };
            if !stored.found {
                return Err(unexpected(format!(
                    "transaction {} is committed but its configuration outcome is missing",
                    hex::encode(id)
                )));
            }
            ConfigOutcome::decode(stored.value.as_slice()).map_err(|e| {
                unexpected(format!(
                    "outcome of {} does not decode: {e}",
                    hex::encode(id)
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{TxBody, Vote};

    #[test]
    fn signs_exactly_the_encoded_body() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let tx = sign_config(
            &key,
            "escrow-prod",
            7,
            9,
            Change::Vote(Vote {
                proposal_id: 4,
                approve: true,
            }),
        );
        let body = TxBody::decode(&tx.body[..]).expect("body");
        assert_eq!(body.chain_id, "escrow-prod");
        assert_eq!(body.sender, key.verifying_key().to_bytes().to_vec());
        assert_eq!((body.nonce, body.timestamp_ms), (7, 9));
        // Canonical: re-encoding the decoded body gives the same bytes.
        assert_eq!(body.encode_to_vec(), tx.body);
        let signature = ed25519_dalek::Signature::from_slice(&tx.signature).expect("sig");
        key.verifying_key()
            .verify_strict(&tx.body, &signature)
            .expect("signature over the body bytes");
        let id = tx_id(&tx);
        let expected = kubeledger_protocol::crypto::sha256(&tx.body);
        assert_eq!(id, expected);
        let k = outcome_key(&id);
        assert!(k.starts_with(b"\0kubeledger/outcome/"));
        assert_eq!(
            &k[b"\0kubeledger/outcome/".len()..],
            hex::encode(id).as_bytes()
        );
    }

    #[test]
    fn peer_address_host() {
        assert_eq!(
            host_of("a-0.a-nodes.a.svc.cluster.local:7051"),
            "a-0.a-nodes.a.svc.cluster.local"
        );
        assert_eq!(host_of("localhost"), "localhost");
        assert!(signing_key("zz").is_err());
        assert!(signing_key(&"03".repeat(32)).is_ok());
    }

    #[tokio::test]
    async fn unreachable_node_is_an_error() {
        let c = GrpcChain {
            port: 1,
            timeout: Duration::from_millis(200),
            commit_timeout: Duration::from_millis(200),
        };
        assert!(matches!(
            c.config("127.0.0.1").await,
            Err(ChainError::Unreachable { .. })
        ));
    }
}
