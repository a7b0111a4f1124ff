//! Reads and changes the consortium configuration the chain holds: the
//! node's `GetConfig` and `ListProposals` RPCs, and signed configuration
//! transactions (`ConfigChange`) submitted with `SubmitAndWait`.
//!
//! A configuration transaction is an ordinary `SignedTransaction`: the
//! prost-encoded `TxBody` with a `Config` payload and the member admin key's
//! ed25519 signature over exactly those bytes. Once committed, what became of
//! it (`ConfigOutcome`) is stored under [`outcome_key`] of its id (SHA-256 of
//! the body bytes).

use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::future::BoxFuture;
use prost::Message;

use kubeledger_protocol::tx::envelope;

use crate::proto::ledger_client::LedgerClient;
use crate::proto::{
    config_change::Change, tx_body::Payload, Ballot, ConfigChange, ConfigOutcome, ConsortiumConfig,
    GetConfigRequest, GetConfigResponse, GetRequest, ListProposalsRequest, Proposal, ProposalState,
    SignedTransaction, SubmitAndWaitRequest, TxBody,
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
    let bytes = hex::decode(seed_hex.trim()).map_err(|e| format!("not hex: {e}"))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("expected 32 bytes, got {}", bytes.len()))?;
    Ok(SigningKey::from_bytes(&seed))
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
    /// Signs `change` with `key`, submits it, waits for its block and returns
    /// its outcome.
    fn submit_config<'a>(
        &'a self,
        host: &'a str,
        key: &'a SigningKey,
        chain_id: &'a str,
        change: Change,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>>;
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

    fn submit_config<'a>(
        &'a self,
        host: &'a str,
        key: &'a SigningKey,
        chain_id: &'a str,
        change: Change,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>> {
        Box::pin(async move {
            let mut client = self.connect(host).await?;
            let tx = sign_config(
                key,
                chain_id,
                rand::random(),
                crate::controller::now_ms(),
                change,
            );
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

/// One configuration transaction a [`RecordingChain`] received.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    pub host: String,
    pub chain_id: String,
    /// Hex public key of the signer (the body's sender, signature verified).
    pub signer: String,
    pub change: Change,
}

/// A chain in memory (tests, dry runs): answers `GetConfig` and
/// `ListProposals` from its state, records every submission after checking
/// its signature, and applies it the way the node's Automatic and Vote
/// policies do in the simple cases (a proposal opens with the proposer's
/// approval; votes are added as ballots; nothing is ever decided).
#[derive(Debug, Default)]
pub struct RecordingChain {
    state: Mutex<RecordingState>,
}

#[derive(Debug, Default)]
struct RecordingState {
    config: GetConfigResponse,
    proposals: Vec<Proposal>,
    submitted: Vec<Submitted>,
    unreachable: bool,
    refusal: Option<String>,
}

impl RecordingChain {
    pub fn new(config: GetConfigResponse, proposals: Vec<Proposal>) -> Self {
        Self {
            state: Mutex::new(RecordingState {
                config,
                proposals,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordingState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Every submission so far, in order.
    pub fn submitted(&self) -> Vec<Submitted> {
        self.lock().submitted.clone()
    }

    /// The proposals as they stand.
    pub fn proposal_list(&self) -> Vec<Proposal> {
        self.lock().proposals.clone()
    }

    /// Changes the configuration `GetConfig` answers.
    pub fn update_config(&self, f: impl FnOnce(&mut GetConfigResponse)) {
        f(&mut self.lock().config);
    }

    /// Replaces the stored proposals.
    pub fn set_proposals(&self, proposals: Vec<Proposal>) {
        self.lock().proposals = proposals;
    }

    /// Makes every later submission come back not applied, with `message`.
    pub fn refuse_with(&self, message: Option<String>) {
        self.lock().refusal = message;
    }

    /// Makes every call fail as if no node answered.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }
}

fn member_of(config: &ConsortiumConfig, key: &[u8]) -> Option<String> {
    config
        .members
        .iter()
        .find(|m| m.admin_key == key)
        .map(|m| m.name.clone())
}

impl ChainAdmin for RecordingChain {
    fn config<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<GetConfigResponse, ChainError>> {
        Box::pin(async move {
            let s = self.lock();
            if s.unreachable {
                return Err(ChainError::Unreachable {
                    host: host.into(),
                    reason: "test".into(),
                });
            }
            Ok(s.config.clone())
        })
    }

    fn proposals<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<Proposal>, ChainError>> {
        Box::pin(async move {
            let s = self.lock();
            if s.unreachable {
                return Err(ChainError::Unreachable {
                    host: host.into(),
                    reason: "test".into(),
                });
            }
            let mut out = s.proposals.clone();
            out.sort_by_key(|p| std::cmp::Reverse(p.id));
            Ok(out)
        })
    }

    fn submit_config<'a>(
        &'a self,
        host: &'a str,
        key: &'a SigningKey,
        chain_id: &'a str,
        change: Change,
    ) -> BoxFuture<'a, Result<ConfigOutcome, ChainError>> {
        Box::pin(async move {
            let unexpected = |reason: String| ChainError::Unexpected {
                host: host.to_string(),
                reason,
            };
            let tx = sign_config(key, chain_id, 1, 1, change);
            // What a node checks first: the body decodes and the signature verifies.
            let body = TxBody::decode(&tx.body[..]).map_err(|e| unexpected(e.to_string()))?;
            let sender: [u8; 32] = body
                .sender
                .as_slice()
                .try_into()
                .map_err(|_| unexpected("short sender".into()))?;
            let signature = ed25519_dalek::Signature::from_slice(&tx.signature)
                .map_err(|e| unexpected(e.to_string()))?;
            ed25519_dalek::VerifyingKey::from_bytes(&sender)
                .and_then(|k| k.verify_strict(&tx.body, &signature))
                .map_err(|e| unexpected(e.to_string()))?;
            let Some(Payload::Config(ConfigChange {
                change: Some(change),
            })) = body.payload
            else {
                return Err(unexpected("not a configuration change".into()));
            };
            let mut s = self.lock();
            if s.unreachable {
                return Err(ChainError::Unreachable {
                    host: host.into(),
                    reason: "test".into(),
                });
            }
            s.submitted.push(Submitted {
                host: host.to_string(),
                chain_id: body.chain_id.clone(),
                signer: hex::encode(sender),
                change: change.clone(),
            });
            if let Some(message) = s.refusal.clone() {
                return Ok(ConfigOutcome {
                    applied: false,
                    proposal_id: 0,
                    message,
                });
            }
            let config = s.config.config.clone().unwrap_or_default();
            let Some(member) = member_of(&config, &sender) else {
                return Ok(ConfigOutcome {
                    applied: false,
                    proposal_id: 0,
                    message: "the signer is not a member".into(),
                });
            };
            let height = s.config.height + 1;
            match change {
                Change::Vote(v) => {
                    let Some(p) = s.proposals.iter_mut().find(|p| p.id == v.proposal_id) else {
                        return Ok(ConfigOutcome {
                            applied: false,
                            proposal_id: v.proposal_id,
                            message: "unknown proposal".into(),
                        });
                    };
                    p.ballots.push(Ballot {
                        member,
                        approve: v.approve,
                        height,
                    });
                    Ok(ConfigOutcome {
                        applied: true,
                        proposal_id: v.proposal_id,
                        message: "vote recorded".into(),
                    })
                }
                change => {
                    let id = s.proposals.iter().map(|p| p.id).max().unwrap_or(0) + 1;
                    s.proposals.push(Proposal {
                        id,
                        change: Some(ConfigChange {
                            change: Some(change),
                        }),
                        proposer: member.clone(),
                        created_height: height,
                        ballots: vec![Ballot {
                            member,
                            approve: true,
                            height,
                        }],
                        state: ProposalState::Open as i32,
                        ..Default::default()
                    });
                    Ok(ConfigOutcome {
                        applied: true,
                        proposal_id: id,
                        message: "proposal opened".into(),
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{UpdateParams, Vote};

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
    async fn recording_chain_opens_proposals_and_counts_votes() {
        let admin = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[7; 32]);
        let member = |name: &str, k: &SigningKey| crate::proto::MemberInfo {
            name: name.into(),
            admin_key: k.verifying_key().to_bytes().to_vec(),
            ..Default::default()
        };
        let chain = RecordingChain::new(
            GetConfigResponse {
                config: Some(ConsortiumConfig {
                    members: vec![member("org1", &admin), member("org2", &other)],
                    ..Default::default()
                }),
                ..Default::default()
            },
            Vec::new(),
        );
        let out = chain
            .submit_config(
                "h",
                &admin,
                "c",
                Change::UpdateParams(UpdateParams {
                    block_interval_ms: Some(500),
                    ..Default::default()
                }),
            )
            .await
            .expect("submit");
        assert_eq!((out.applied, out.proposal_id), (true, 1));
        chain
            .submit_config(
                "h",
                &other,
                "c",
                Change::Vote(Vote {
                    proposal_id: 1,
                    approve: false,
                }),
            )
            .await
            .expect("vote");
        let p = chain.proposals("h").await.expect("list");
        assert_eq!(p[0].proposer, "org1");
        assert_eq!(p[0].ballots.len(), 2);
        assert_eq!(
            chain.submitted()[1].signer,
            hex::encode(other.verifying_key().to_bytes())
        );
        chain.set_unreachable(true);
        assert!(chain.config("h").await.is_err());
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
