//! The HTTP side of the fake consumers: routes, handlers and per-consumer state.
//! The route table is in the parent module's documentation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, Update, Verdict};
use super::record::{Record, Recorder};
use crate::delivery::signature::{self, Secret};

/// Shared by all handlers.
pub(super) struct App {
    /// By name, the path segment deliveries are posted to.
    pub(super) consumers: HashMap<String, Consumer>,
    /// `None` when no record file was asked for: deliveries are only counted.
    pub(super) recorder: Option<Recorder>,
    /// See [`Settings::tolerance_secs`](super::Settings::tolerance_secs).
    pub(super) tolerance_secs: i64,
    /// Cuts delayed answers short, so shutdown does not wait out a long `delay_ms`.
    pub(super) shutdown: CancellationToken,
}

/// One named endpoint: its key, how it answers, and what it has seen.
pub(super) struct Consumer {
    secret: Secret,
    /// A plain mutex: it is held only to read or change a few fields, never across
    /// an `.await`.
    behaviour: std::sync::Mutex<Behaviour>,
    counters: Counters,
}

impl Consumer {
    pub(super) fn new(secret: Secret, behaviour: Behaviour) -> Consumer {
        Consumer { secret, behaviour: std::sync::Mutex::new(behaviour), counters: Counters::default() }
    }

    fn behaviour(&self) -> MutexGuard<'_, Behaviour> {
        // A panic elsewhere cannot leave a Behaviour half-changed (`apply` validates
        // first), so a poisoned lock is still good to use.
        self.behaviour.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self) -> Value {
        json!({
            "behaviour": self.behaviour().to_json(Instant::now()),
            "counters": self.counters.to_json(),
        })
    }
}

/// Per-consumer counts, for tests to compare with what the sender reports.
#[derive(Default)]
struct Counters {
    /// Deliveries accepted (and recorded): answered 204.
    received: AtomicU64,
    /// Deliveries answered 401: missing, stale or wrong signature.
    rejected_signature: AtomicU64,
    /// Deliveries refused on purpose by the behaviour (random failure, outage, gone).
    refused: AtomicU64,
    /// Signed deliveries whose body is not JSON with the expected fields: answered 400.
    rejected_body: AtomicU64,
}

impl Counters {
    fn to_json(&self) -> Value {
        json!({
            "received": self.received.load(Ordering::Relaxed),
            "rejected_signature": self.rejected_signature.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "rejected_body": self.rejected_body.load(Ordering::Relaxed),
        })
    }
}

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/_control/{name}", get(show_control).put(update_control))
        .route("/{name}", post(deliver))
        .route("/{name}/received", get(received))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

/// The fields a record copies from the body (null when absent). Anything else in the
/// body is ignored.
#[derive(Deserialize)]
struct Identity {
    #[serde(default)]
    client_id: Value,
    #[serde(default)]
    event_id: Value,
    #[serde(default)]
    event_type: Value,
}

async fn deliver(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(consumer) = app.consumers.get(&name) else {
        return error(StatusCode::NOT_FOUND, "unknown_consumer");
    };
    let webhook_id = header_text(&headers, "webhook-id");
    let now = chrono::Utc::now();
    if let Err(e) = signature::verify(
        &consumer.secret,
        webhook_id,
        header_text(&headers, "webhook-timestamp"),
        header_text(&headers, "webhook-signature"),
        &body,
        now.timestamp(),
        app.tolerance_secs,
    ) {
        consumer.counters.rejected_signature.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(consumer = %name, webhook_id, reason = e.code(), "signature rejected");
        return error(StatusCode::UNAUTHORIZED, e.code());
    }

    let delay = consumer.behaviour().delay();
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = app.shutdown.cancelled() => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        }
    }
    let (verdict, retry_after) = {
        let mut behaviour = consumer.behaviour();
        let verdict = behaviour.verdict(Instant::now());
        let retry_after = match verdict {
            Verdict::Refuse { status, .. } => behaviour.retry_after(status),
            Verdict::Accept => None,
        };
        (verdict, retry_after)
    };
    if let Verdict::Refuse { status, reason } = verdict {
        consumer.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(consumer = %name, webhook_id, status = status.as_u16(), reason, "delivery refused on purpose");
        let mut response = error(status, reason);
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }

    let Ok(identity) = serde_json::from_slice::<Identity>(&body) else {
        consumer.counters.rejected_body.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::BAD_REQUEST, "invalid_body");
    };
    if let Some(recorder) = &app.recorder {
        let record = Record {
            consumer: &name,
            webhook_id,
            client_id: identity.client_id,
            event_id: identity.event_id,
            event_type: identity.event_type,
            received_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        // Unrecorded means unacknowledged: the sender retries, and the record stays
        // a complete list of what was acknowledged.
        if let Err(e) = recorder.append(&record).await {
            tracing::error!(consumer = %name, webhook_id, "cannot append to the record file: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "record_failed");
        }
    }
    consumer.counters.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

async fn received(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let Some(consumer) = app.consumers.get(&name) else {
        return error(StatusCode::NOT_FOUND, "unknown_consumer");
    };
    let counters = &consumer.counters;
    let body = json!({
        "received": counters.received.load(Ordering::Relaxed),
        "rejected_signature": counters.rejected_signature.load(Ordering::Relaxed),
    });
    json_response(StatusCode::OK, &body)
}

async fn show_control(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.consumers.get(&name) {
        Some(consumer) => json_response(StatusCode::OK, &consumer.report()),
        None => error(StatusCode::NOT_FOUND, "unknown_consumer"),
    }
}

/// Applies a behaviour change and answers with the result, as `GET` would.
async fn update_control(State(app): State<Arc<App>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(consumer) = app.consumers.get(&name) else {
        return error(StatusCode::NOT_FOUND, "unknown_consumer");
    };
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return error_with_detail(StatusCode::BAD_REQUEST, "invalid_control", &e.to_string()),
    };
    let applied = consumer.behaviour().apply(update, Instant::now());
    if let Err(e) = applied {
        return error_with_detail(StatusCode::BAD_REQUEST, "invalid_control", &e);
    }
    let report = consumer.report();
    let behaviour = &report["behaviour"];
    tracing::info!(consumer = %name, %behaviour, "behaviour changed");
    json_response(StatusCode::OK, &report)
}

/// A header's value, or `""` when absent or not text (which verification then reports
/// as a missing header).
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
}

/// axum's `Json` would need its `json` feature and one more crate; this is all we use.
fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

/// A short JSON error: `{"error": code}`, a stable code tests can match.
fn error(status: StatusCode, code: &str) -> Response {
    json_response(status, &json!({ "error": code }))
}

fn error_with_detail(status: StatusCode, code: &str, detail: &str) -> Response {
    json_response(status, &json!({ "error": code, "detail": detail }))
}
