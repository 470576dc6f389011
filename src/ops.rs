//! The operator's HTTP endpoint: `/healthz` (alive, loops turning), `/readyz`
//! (PostgreSQL and SQS answer) and `/metrics` (Prometheus text format).
//!
//! Counters live in [`Stats`] (cheap atomics on the hot path) and are copied into the
//! `metrics` registry when scraped; histograms and gauges are recorded where they happen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Liveness;
use crate::queue::Queue;
use crate::rejection::Reason;
use crate::stats::Stats;
use crate::store::Store;

/// What the endpoint reports on.
pub struct Ops {
    pub metrics: PrometheusHandle,
    pub stats: Arc<Stats>,
    pub liveness: Arc<Liveness>,
    pub store: Store,
    pub queue: Queue,
}

/// Installs the process-wide Prometheus recorder (once, in the binary).
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Binds the endpoint's address; failing here stops startup.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("PROCESSOR_HTTP_ADDR: cannot listen on {addr}"))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, ops: Ops, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(ops));
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

async fn healthz(State(ops): State<Arc<Ops>>) -> (StatusCode, String) {
    let quiet = ops.liveness.since_last_beat();
    if quiet < Duration::from_secs(30) {
        (StatusCode::OK, "alive\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("processor loops silent for {}s\n", quiet.as_secs()))
    }
}

async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, String) {
    let limit = Duration::from_secs(3);
    let database = match tokio::time::timeout(limit, ops.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let sqs = match tokio::time::timeout(limit, ops.queue.depth()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    match (database, sqs) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready\n".into()),
        (db, sqs) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: database {}, sqs {}\n",
                db.err().unwrap_or("ok".into()),
                sqs.err().unwrap_or("ok".into())
            ),
        ),
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> String {
    let s = ops.stats.snapshot();
    let counters = [
        ("event_processor_received_total", s.received),
        ("event_processor_stored_total", s.stored),
        ("event_processor_duplicates_total", s.duplicates),
        ("event_processor_deleted_total", s.deleted),
        ("event_processor_delete_failures_total", s.delete_failures),
        ("event_processor_expired_receipts_total", s.expired_receipts),
        ("event_processor_commit_retries_total", s.commit_retries),
        ("event_processor_released_total", s.released),
        ("event_processor_visibility_extensions_total", s.extended),
    ];
    for (name, value) in counters {
        metrics::counter!(name).absolute(value);
    }
    for reason in Reason::ALL {
        metrics::counter!("event_processor_rejected_total", "reason" => reason.code()).absolute(s.rejected_for(reason));
    }
    ops.metrics.render()
}
