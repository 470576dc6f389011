//! The platform API (`cmd/api`): tenants, producers, event types, subscriptions and
//! consumers over HTTP; event ingest onto SQS, validated exactly as the processor
//! validates; event status; pull consumption over the sender's commit-safe log; API
//! keys. It owns the tables `api_key` and `pull_lease` (migration V4) and writes the
//! registry tables, whose triggers tell running processors to reload.
//!
//! One module per resource, sharing an [`ApiContext`]:
//!
//! - [`auth`]: the [`Caller`] extractor (bearer keys, roles, tenant checks).
//! - [`error`]: [`ApiError`], the one error type, with its stable codes.
//! - `keys`, `clients` (with subscriptions), `producers`, `event_types`, `consumers`,
//!   `events` (ingest and status), `pull` (long-poll reads, acknowledgements),
//!   `registry` (the whole registry as a registry file).
//! - [`openapi`]: the OpenAPI document, served at `/openapi.json`.
//!
//! `/healthz`, `/readyz` and `/metrics` are served on the same listener, without a key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::producers::generator::SQS_MAX_BYTES;
use crate::registry::{Registry, SharedRegistry};
use crate::sqs::Queue;
use crate::store::Store;
use crate::telemetry::{store_and_queue_ready, Probe};
use crate::validation::MAX_ID_CHARS;

pub mod auth;
mod clients;
pub mod config;
mod consumers;
pub mod error;
mod event_types;
mod events;
mod keys;
pub mod openapi;
mod producers;
mod pull;
mod registry;

pub use auth::{Caller, Role};
pub use config::{AdminKey, ApiArgs, Settings};
pub use error::{ApiError, ErrorBody, ErrorDetail};

/// What every handler shares.
pub struct ApiContext {
    /// Registry tables, keys, the log, cursors and leases.
    pub store: Store,
    /// Where accepted events go; the processor drains it.
    pub queue: Queue,
    /// The snapshot ingest validates against, reloaded when the registry version
    /// moves, exactly as the processor's.
    pub registry: SharedRegistry,
    pub settings: Settings,
    /// The process-wide Prometheus recorder, when the binary installed one.
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled on shutdown, so long polls answer at once instead of holding it up.
    stopping: CancellationToken,
}

impl ApiContext {
    /// Reads the registry once; fails when the database does not answer.
    pub async fn new(
        store: Store,
        queue: Queue,
        settings: Settings,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Arc<ApiContext>> {
        let registry = {
            let conn = store.pool().get().await.context("cannot connect to DATABASE_URL")?;
            Registry::load(&**conn, None).await.context("cannot read the registry")?
        };
        Ok(Arc::new(ApiContext {
            store,
            queue,
            registry: SharedRegistry::new(registry),
            settings,
            metrics,
            stopping: CancellationToken::new(),
        }))
    }
}

impl Probe for ApiContext {
    /// The API has no loops of its own: it is alive while it answers.
    fn live(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(store_and_queue_ready(&self.store, &self.queue))
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled; requests in flight
/// are finished, long polls answered at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<ApiContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stopping = ctx.stopping.clone();
    let app = router(ctx);
    tracing::info!(addr = %listener.local_addr()?, "serving the API");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            stopping.cancel();
        })
        .await?;
    Ok(())
}

/// Every route. Requests time out after API_REQUEST_TIMEOUT_SECS, long polls after
/// that plus API_MAX_WAIT_SECS; bodies above the SQS limit are refused (the batch
/// route allows more).
pub fn router(ctx: Arc<ApiContext>) -> Router {
    let timeout = ctx.settings.request_timeout;
    let long_poll = timeout + ctx.settings.max_wait;
    let api = Router::new()
        .merge(keys::routes())
        .merge(clients::routes())
        .merge(producers::routes())
        .merge(event_types::routes())
        .merge(consumers::routes())
        .merge(events::routes())
        .merge(registry::routes())
        .route_layer(middleware::from_fn_with_state(timeout, with_timeout));
    let long_polls = pull::routes().route_layer(middleware::from_fn_with_state(long_poll, with_timeout));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(api)
        .merge(long_polls)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(SQS_MAX_BYTES))
        .layer(middleware::from_fn(observe))
        .with_state(ctx)
}

async fn with_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Around every request: a span naming the route and (once authenticated) the key
/// id, one log line, the request counter, and JSON for errors the framework answers
/// in plain text (an unparsable path or query, for instance).
async fn observe(mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let key = auth::KeySlot::default();
    request.extensions_mut().insert(key.clone());
    let span = tracing::info_span!("request", method = %request.method(), route = %route, key = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let response = if (status.is_client_error() || status.is_server_error()) && !error::is_json(&response) {
        let (_, body) = response.into_parts();
        let text = match axum::body::to_bytes(body, 4096).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
            Err(_) => String::new(),
        };
        ApiError::from_status(status, text).into_response()
    } else {
        response
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let key = key.get().unwrap_or_else(|| "none".to_owned());
    span.in_scope(|| {
        if route.starts_with("/v1/") {
            tracing::info!(status = status.as_u16(), elapsed_ms, key = %key, "answered");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms, key = %key, "answered");
        }
    });
    metrics::counter!("event_api_requests_total", "route" => route, "status" => status.as_u16().to_string())
        .increment(1);
    response
}

async fn healthz(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Value>, ApiError> {
    ctx.live().map_err(ApiError::NotReady)?;
    Ok(Json(json!({"status": "alive"})))
}

async fn readyz(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Value>, ApiError> {
    ctx.ready().await.map_err(ApiError::NotReady)?;
    Ok(Json(json!({"status": "ready"})))
}

async fn render_metrics(State(ctx): State<Arc<ApiContext>>) -> Result<Response, ApiError> {
    let handle = ctx.metrics.as_ref().ok_or_else(|| ApiError::NotFound("metrics are not enabled".to_owned()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::document()).into_response()
}

async fn no_route() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// An identifier (client, producer, event type, consumer member): 1 to 128
/// characters, no control characters; as the envelope's identifiers.
fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(ApiError::invalid(format!("{field}: expected 1 to {MAX_ID_CHARS} characters, got {chars}")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!("{field}: control characters are not allowed")));
    }
    Ok(())
}

/// 404 unless the client exists.
async fn client_exists(db: &impl GenericClient, client_id: &str) -> Result<(), ApiError> {
    match db.query_opt("SELECT 1 FROM client WHERE id = $1", &[&client_id]).await? {
        Some(_) => Ok(()),
        None => Err(auth::unknown_client(client_id)),
    }
}

/// Whether a database error is this SQLSTATE (a constraint the handler expects).
fn is_state(e: &tokio_postgres::Error, state: &tokio_postgres::error::SqlState) -> bool {
    e.code() == Some(state)
}
