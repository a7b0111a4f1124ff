//! The gRPC API: the `kubeledger.v1.Ledger` service, the standard health
//! service and server reflection, each request in its own tracing span.

pub mod events;
pub mod ledger_service;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::metrics::HealthSource;
use crate::node_state::NodeState;
use crate::proto::ledger_server::LedgerServer;

/// Largest request the server decodes: room for a `SubmitBatch` of many
/// transactions. Single transactions are held to `max_tx_bytes` by admission,
/// which answers with a precise reason instead of a transport error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// How often the gRPC health statuses are refreshed from liveness and
/// readiness.
const HEALTH_REFRESH: Duration = Duration::from_secs(1);
/// The service name the readiness probe asks about.
const LEDGER_SERVICE: &str = "kubeledger.v1.Ledger";

/// Why the client-facing gRPC server could not start or stopped failing.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("node task failed: reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the Ledger, health and reflection services on `listener` until
/// `shutdown` resolves, reporting NOT_SERVING as soon as it does.
pub async fn serve(
    state: Arc<NodeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LedgerServer<ledger_service::LedgerService>>()
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // Reflection in both protocol versions: grpcurl 1.8 and other clients of
    // its generation speak only v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let service = LedgerServer::new(ledger_service::LedgerService::new(state.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);

    // The gRPC health service is what the kubelet probes: the overall
    // status ("") follows liveness (the consensus and storage loops report),
    // the Ledger service's follows readiness (quorum connected, not lagging,
    // no storage error or corruption).
    let (probes_stop, mut probes_stopped) = tokio::sync::watch::channel(false);
    let probe_reporter = health_reporter.clone();
    let probe_state = state.clone();
    let probes = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEALTH_REFRESH);
        let mut last: Option<(bool, bool)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = probes_stopped.changed() => return,
            }
            let live = probe_state.live();
            let ready = probe_state.ready();
            let now = (live.is_ok(), ready.is_ok());
            if last != Some(now) {
                if let Err(reason) = &live {
                    tracing::warn!(%reason, "not live");
                }
                if let Err(reason) = &ready {
                    tracing::info!(%reason, "not ready");
                }
                let status = |ok| {
                    if ok {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    }
                };
                probe_reporter.set_service_status("", status(now.0)).await;
                probe_reporter
                    .set_service_status(LEDGER_SERVICE, status(now.1))
                    .await;
                last = Some(now);
            }
        }
    });

    // Report NOT_SERVING as soon as shutdown starts, so load balancers and
    // kubelet probes move traffic away while the last block commits.
    let reporter = health_reporter.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = probes_stop.send(true);
        let _ = probes.await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<LedgerServer<ledger_service::LedgerService>>()
            .await;
    };

    let incoming = crate::connections::accept(listener);
    Server::builder()
        .concurrency_limit_per_connection(crate::node_state::reads::MAX_REQUESTS_PER_CONNECTION)
        .max_concurrent_streams(Some(crate::connections::MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
