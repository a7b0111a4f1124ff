//! The operator's HTTP endpoints: `/metrics` (Prometheus text format) and
//! `/healthz` (liveness and readiness of the process).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}

/// Binds `addr` and serves [`router`] in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(metrics)).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        response
    }

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let metrics = Arc::new(Metrics::default());
        metrics.leader.set(1);
        drop(metrics.count_and_measure("consortium"));
        let addr = spawn(SocketAddr::from(([127, 0, 0, 1], 0)), metrics)
            .await
            .expect("bind loopback");

        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("ok"), "{health}");

        let text = get(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("application/openmetrics-text"), "{text}");
        assert!(text.contains("kubeledger_operator_is_leader 1"), "{text}");
        assert!(
            text.contains(
                r#"kubeledger_operator_reconciliations_total{controller="consortium"} 1"#
            ),
            "{text}"
        );

        let missing = get(addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
