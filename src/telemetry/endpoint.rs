//! The operator's HTTP endpoint every service serves: `/healthz` (alive, loops
//! turning), `/readyz` (its dependencies answer) and `/metrics` (Prometheus text).
//! Each service says what those mean through its [`Probe`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::sqs::MessageQueue;
use crate::store::Store;

/// A service's answers to the endpoint.
pub trait Probe: Send + Sync + 'static {
    /// Its loops are turning (`/healthz`); the error says which is stuck.
    fn live(&self) -> Result<(), String>;
    /// Its dependencies answer (`/readyz`); the error names the one that does not.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Copies counters kept elsewhere into the recorder, just before a scrape.
    fn export(&self) {}
}

/// `check` within `limit`, its error as text.
pub async fn ready_within<E: std::fmt::Display>(
    limit: Duration,
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Readiness of a service that needs PostgreSQL and SQS: both answer within 3 s; the
/// error names the one that does not.
pub async fn store_and_queue_ready(store: &Store, queue: &dyn MessageQueue) -> Result<(), String> {
    let limit = Duration::from_secs(3);
    let database = ready_within(limit, store.ping());
    let sqs = ready_within(limit, queue.ping());
    match tokio::join!(database, sqs) {
        (Ok(()), Ok(())) => Ok(()),
        (db, sqs) => Err(format!(
            "database {}, sqs {}",
            db.err().unwrap_or_else(|| "ok".into()),
            sqs.err().unwrap_or_else(|| "ok".into())
        )),
    }
}

/// Installs the process-wide Prometheus recorder (once, in the binary).
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ])?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Binds the endpoint's address; failing here stops startup. `variable` names the
/// setting in the error.
pub async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("{variable}: cannot listen on {addr}"))
}

struct Endpoint {
    metrics: PrometheusHandle,
    probe: Box<dyn Probe>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    probe: impl Probe,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Arc::new(Endpoint { metrics, probe: Box::new(probe) }));
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

/// Serves the endpoint in the background when `addr` is set; errors are logged.
pub async fn spawn(
    addr: Option<SocketAddr>,
    variable: &str,
    probe: impl Probe,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = bind(addr, variable).await?;
    let metrics = install_recorder()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, metrics, probe, shutdown).await {
            tracing::error!("operator endpoint stopped: {e:#}");
        }
    });
    Ok(())
}

async fn healthz(State(endpoint): State<Arc<Endpoint>>) -> (StatusCode, String) {
    match endpoint.probe.live() {
        Ok(()) => (StatusCode::OK, "alive\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn readyz(State(endpoint): State<Arc<Endpoint>>) -> (StatusCode, String) {
    match endpoint.probe.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

async fn render(State(endpoint): State<Arc<Endpoint>>) -> String {
    endpoint.probe.export();
    endpoint.metrics.render()
}
