//! A thin client over the gRPC API, used by the CLI, the benchmark and
//! tests: connects, learns the chain id, signs and submits.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::block::header_hash;
use crate::block::verify::{verify_body, verify_successor, ChainError};
use crate::crypto::Hash32;
use crate::proto::{
    self, get_block_request::Selector, ledger_client::LedgerClient, tx_body::Payload,
};
use crate::tx::envelope;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("chain verification failed: {0}")]
    Chain(#[from] ChainError),
    #[error("chain verification failed: {0}")]
    Inconsistent(String),
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
}

/// What a client-side chain verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub height: u64,
    pub transactions: u64,
    pub tip_hash: Hash32,
}

/// A connected client bound to one node.
#[derive(Debug, Clone)]
pub struct Client {
    pub inner: LedgerClient<Channel>,
    pub chain_id: String,
}

fn normalise(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Opens a channel to `endpoint` ("host:port" or "http://host:port").
pub async fn channel(endpoint: &str) -> Result<Channel, ClientError> {
    let url = normalise(endpoint);
    Endpoint::from_shared(url.clone())
        .map_err(|source| ClientError::Endpoint {
            endpoint: url.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            endpoint: url,
            source,
        })
}

impl Client {
    /// Connects and reads the node's chain id.
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        let mut inner = LedgerClient::new(channel(endpoint).await?)
            .max_decoding_message_size(crate::api::MAX_REQUEST_BYTES)
            .max_encoding_message_size(crate::api::MAX_REQUEST_BYTES);
        let status = inner.status(proto::StatusRequest {}).await?.into_inner();
        Ok(Self {
            inner,
            chain_id: status.chain_id,
        })
    }

    /// Signs a payload for this client's chain with a fresh random nonce.
    pub fn sign(&self, key: &SigningKey, payload: Payload) -> proto::SignedTransaction {
        envelope::sign(key, &self.chain_id, rand::random(), now_ms(), payload)
    }

    pub async fn submit_and_wait(
        &mut self,
        tx: proto::SignedTransaction,
        timeout: Duration,
    ) -> Result<proto::SubmitAndWaitResponse, ClientError> {
        Ok(self
            .inner
            .submit_and_wait(proto::SubmitAndWaitRequest {
                tx: Some(tx),
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            })
            .await?
            .into_inner())
    }

    /// Submits a configuration change signed by a member's admin `key`,
    /// waits for its block and returns what became of it.
    pub async fn submit_config(
        &mut self,
        key: &SigningKey,
        change: proto::config_change::Change,
        timeout: Duration,
    ) -> Result<(proto::SubmitAndWaitResponse, proto::ConfigOutcome), ClientError> {
        self.submit_for_outcome(key, envelope::config(change), timeout, "configuration")
            .await
    }

    /// Submits a contract call signed by `key`, waits for its block and
    /// returns what became of it.
    pub async fn submit_call(
        &mut self,
        key: &SigningKey,
        call: proto::ContractCall,
        timeout: Duration,
    ) -> Result<(proto::SubmitAndWaitResponse, proto::ContractOutcome), ClientError> {
        self.submit_for_outcome(key, envelope::call(call), timeout, "contract")
            .await
    }

    /// Submits `payload`, waits for its block, and reads the outcome the
    /// ledger stored for it (`what`: which kind, for errors).
    async fn submit_for_outcome<M: Message + Default>(
        &mut self,
        key: &SigningKey,
        payload: proto::tx_body::Payload,
        timeout: Duration,
        what: &str,
    ) -> Result<(proto::SubmitAndWaitResponse, M), ClientError> {
        let tx = self.sign(key, payload);
        let id = envelope::tx_id(&tx);
        let committed = self.submit_and_wait(tx, timeout).await?;
        let stored = self
            .inner
            .get(proto::GetRequest {
                key: crate::governance::keys::outcome_key(&id.0),
            })
            .await?
            .into_inner();
        if !stored.found {
            return Err(ClientError::Unexpected(format!(
                "transaction {id} is committed but its {what} outcome is missing"
            )));
        }
        let outcome = M::decode(stored.value.as_slice()).map_err(|e| {
            ClientError::Unexpected(format!("{what} outcome of {id} does not decode: {e}"))
        })?;
        Ok((committed, outcome))
    }

    /// Every version of `key`, following pagination to the end.
    pub async fn full_history(
        &mut self,
        key: &[u8],
    ) -> Result<Vec<proto::HistoryEntry>, ClientError> {
        let mut entries = Vec::new();
        let mut token = Vec::new();
        loop {
            let page = self
                .inner
                .get_history(proto::GetHistoryRequest {
                    key: key.to_vec(),
                    page_size: 1000,
                    page_token: token,
                })
                .await?
                .into_inner();
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return Ok(entries);
            }
            token = page.next_page_token;
        }
    }
}

impl Client {
    async fn block_at(&mut self, height: u64) -> Result<(proto::Block, Vec<u8>), ClientError> {
        let r = self
            .inner
            .get_block(proto::GetBlockRequest {
                selector: Some(Selector::Height(height)),
            })
            .await?
            .into_inner();
        let block = r
            .block
            .ok_or_else(|| ClientError::Inconsistent(format!("block {height} came back empty")))?;
        Ok((block, r.hash))
    }

    /// Fetches every block from genesis to the current tip and checks hash
    /// links, heights, merkle roots and transaction counts, trusting nothing
    /// the node says about itself beyond the blocks.
    pub async fn verify_chain(&mut self) -> Result<ChainSummary, ClientError> {
        let tip = self
            .inner
            .status(proto::StatusRequest {})
            .await?
            .into_inner()
            .height;
        let (genesis, reported) = self.block_at(0).await?;
        let mut prev = genesis
            .header
            .clone()
            .ok_or_else(|| ClientError::Inconsistent("genesis block has no header".into()))?;
        verify_body(&prev, &genesis)?;
        let mut prev_hash = header_hash(&prev);
        if prev_hash.as_slice() != reported.as_slice() {
            return Err(ClientError::Inconsistent(
                "genesis block hash does not match its header".into(),
            ));
        }
        let mut transactions = 0u64;
        for height in 1..=tip {
            let (block, reported) = self.block_at(height).await?;
            let header = verify_successor(&prev, &prev_hash, &block)?;
            transactions += u64::from(header.tx_count);
            prev_hash = header_hash(header);
            if prev_hash.as_slice() != reported.as_slice() {
                return Err(ClientError::Inconsistent(format!(
                    "block {height}: node reports hash {} but the header hashes to {}",
                    hex::encode(&reported),
                    hex::encode(prev_hash)
                )));
            }
            prev = header.clone();
        }
        Ok(ChainSummary {
            height: tip,
            transactions,
            tip_hash: prev_hash,
        })
    }
}

/// The wall clock, re-exported for the CLI and clients.
pub use crate::clock::now_ms;
