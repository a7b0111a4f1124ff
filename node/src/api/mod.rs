//! The gRPC API: the `kubeledger.v1.Ledger` service, the standard health
//! service and server reflection, each request in its own tracing span.

pub mod events;
pub mod ledger_service;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::proto::ledger_server::LedgerServer;
use crate::runtime::NodeState;

/// Largest request the server decodes: room for a `SubmitBatch` of many
/// transactions. Single transactions are held to `max_tx_bytes` by admission,
/// which answers with a precise reason instead of a transport error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

pub async fn serve(
    state: Arc<NodeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::runtime::NodeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LedgerServer<ledger_service::LedgerService>>()
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| crate::runtime::NodeError::Task(format!("reflection: {e}")))?;
    let service = LedgerServer::new(ledger_service::LedgerService::new(state.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);

    // Report NOT_SERVING as soon as shutdown starts, so load balancers and
    // kubelet probes move traffic away while the last block commits.
    let reporter = health_reporter.clone();
    let shutdown = async move {
        shutdown.await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<LedgerServer<ledger_service::LedgerService>>()
            .await;
    };

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
