//! Ingest and status. `POST /v1/events` validates a body exactly as the processor
//! will (the same `classify`, the same registry snapshot and refresh rule), answers a
//! rejection at once with the processor's reason code, and puts an accepted body on
//! SQS unchanged: the processor validates it again, because SQS has other writers.
//! The answer (202) comes once SQS has acknowledged the message. The batch endpoint
//! answers per entry, in request order, as EventBridge's PutEvents does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, Body, ErrorBody, ErrorDetail};
use super::ApiContext;
use crate::producers::generator::SQS_MAX_BYTES;
use crate::sqs::{EntryFailure, MAX_BATCH};
use crate::validation::{classify, Reason, Rejection, Verdict};

/// Most entries in one batch request.
pub const MAX_BATCH_ENTRIES: usize = 100;
/// Largest batch request body.
pub const BATCH_MAX_BYTES: usize = 5 * 1024 * 1024;

pub(super) mod status;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/events/batch", post(ingest_batch).layer(DefaultBodyLimit::max(BATCH_MAX_BYTES)))
        .route("/v1/clients/{client}/events/{event_id}", get(status::event_status))
}

/// The envelope the processor takes (`docs/design.md`, section 2).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventEnvelope {
    /// The idempotency key with `client_id`; without it, the SQS message id is the key.
    event_id: Option<String>,
    client_id: String,
    event_type: String,
    /// >= 1; 1 when absent.
    version: Option<i32>,
    occurred_at: Option<DateTime<Utc>>,
    /// Validated against the schema of (`event_type`, `version`).
    payload: Value,
    /// Legacy alias of `payload`: a string, used only when `payload` is absent.
    message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ingested {
    /// The key the event is stored under: its `event_id`, or else the SQS message id.
    pub event_id: String,
    /// The SQS message id.
    pub message_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 100 envelopes; each is sent exactly as given.
    #[schema(value_type = Vec<EventEnvelope>)]
    pub entries: Vec<Box<RawValue>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryFailed {
    pub error: ErrorDetail,
}

/// One entry's outcome: `{event_id, message_id}` or `{error}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchEntryResult {
    Accepted(Ingested),
    Failed(EntryFailed),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub failed_count: usize,
    /// In request order.
    pub entries: Vec<BatchEntryResult>,
}

/// Send one event.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body = EventEnvelope,
    responses(
        (status = 202, description = "On the queue", body = Ingested),
        (status = 400, description = "Rejected: the code is the processor's reason (`schema_violation`, ...)", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A client key, or an event type of another producer", body = ErrorBody),
        (status = 413, description = "`too_large`: above 256 KiB", body = ErrorBody),
        (status = 503, description = "`queue_unavailable`", body = ErrorBody),
    )
)]
pub(super) async fn ingest(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    let producer = caller.sender()?;
    let received_at = Utc::now();
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::rejected(&Rejection::new(Reason::MalformedJson, "not JSON: the body is not UTF-8")))?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let verdict = judge(&ctx, text, &message_id, received_at).await?;
    check_owner(&ctx, producer, &verdict, &mut HashMap::new()).await?;
    let event = match verdict {
        Verdict::Accepted(event) => event,
        Verdict::Rejected(rejected) => {
            metrics::counter!("event_api_rejected_total", "reason" => rejected.rejection.reason.code()).increment(1);
            return Err(ApiError::rejected(&rejected.rejection));
        }
    };
    let sent = ctx.queue.send(&[text.to_owned()]).await?.into_iter().next();
    let sqs_id =
        sent.ok_or_else(|| ApiError::QueueUnavailable("no answer for the message".into()))?.map_err(refused)?;
    metrics::counter!("event_api_ingested_total").increment(1);
    // Without an `event_id` the processor keys the event by the SQS message id.
    let event_id = if event.event_id == message_id { sqs_id.clone() } else { event.event_id };
    Ok((StatusCode::ACCEPTED, Json(Ingested { event_id, message_id: sqs_id })))
}

/// Send up to 100 events; each is judged and answered on its own.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per entry, in order", body = BatchResult),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A client key", body = ErrorBody),
        (status = 413, description = "`too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not 1 to 100 entries", body = ErrorBody),
    )
)]
pub(super) async fn ingest_batch(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Body(batch): Body<BatchRequest>,
) -> Result<Json<BatchResult>, ApiError> {
    let producer = caller.sender()?;
    let n = batch.entries.len();
    if n == 0 || n > MAX_BATCH_ENTRIES {
        return Err(ApiError::invalid(format!("entries: expected 1 to {MAX_BATCH_ENTRIES}, got {n}")));
    }
    let received_at = Utc::now();
    let mut results: Vec<Option<BatchEntryResult>> = (0..n).map(|_| None).collect();
    let mut accepted: Vec<Pending> = Vec::new();
    let mut owners = HashMap::new();
    for (index, raw) in batch.entries.iter().enumerate() {
        let text = raw.get();
        if text.len() > SQS_MAX_BYTES {
            let error = ApiError::TooLarge(format!("entry of {} bytes; at most {SQS_MAX_BYTES}", text.len()));
            results[index] = Some(failed(&error));
            continue;
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let verdict = judge(&ctx, text, &message_id, received_at).await?;
        match check_owner(&ctx, producer, &verdict, &mut owners).await {
            Ok(()) => {}
            Err(e @ ApiError::Forbidden(_)) => {
                results[index] = Some(failed(&e));
                continue;
            }
            Err(e) => return Err(e),
        }
        match verdict {
            Verdict::Accepted(event) => {
                let event_id = (event.event_id != message_id).then_some(event.event_id);
                accepted.push(Pending { index, body: text.to_owned(), event_id });
            }
            Verdict::Rejected(rejected) => {
                metrics::counter!("event_api_rejected_total", "reason" => rejected.rejection.reason.code())
                    .increment(1);
                results[index] = Some(failed(&ApiError::rejected(&rejected.rejection)));
            }
        }
    }
    let batches = chunks(&accepted);
    let queue = &ctx.queue;
    let sends = batches.iter().map(|chunk| async move {
        let bodies: Vec<String> = chunk.iter().map(|p| p.body.clone()).collect();
        queue.send(&bodies).await
    });
    let outcomes = futures::future::join_all(sends).await;
    for (chunk, outcome) in batches.iter().zip(outcomes) {
        match outcome {
            Ok(sent) => {
                for (pending, result) in chunk.iter().zip(sent) {
                    results[pending.index] = Some(match result {
                        Ok(sqs_id) => {
                            metrics::counter!("event_api_ingested_total").increment(1);
                            let event_id = pending.event_id.clone().unwrap_or_else(|| sqs_id.clone());
                            BatchEntryResult::Accepted(Ingested { event_id, message_id: sqs_id })
                        }
                        Err(failure) => failed(&refused(failure)),
                    });
                }
            }
            Err(e) => {
                let error = ApiError::from(e);
                for pending in chunk.iter() {
                    results[pending.index] = Some(failed(&error));
                }
            }
        }
    }
    let entries: Vec<BatchEntryResult> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| failed(&ApiError::Internal("no outcome for this entry".into()))))
        .collect();
    let failed_count = entries.iter().filter(|e| matches!(e, BatchEntryResult::Failed(_))).count();
    Ok(Json(BatchResult { failed_count, entries }))
}

/// An accepted batch entry on its way to SQS.
struct Pending {
    /// Its place in the request.
    index: usize,
    body: String,
    /// The envelope's `event_id`; `None` when the SQS message id becomes the key.
    event_id: Option<String>,
}

fn failed(error: &ApiError) -> BatchEntryResult {
    BatchEntryResult::Failed(EntryFailed { error: error.detail() })
}

/// Consecutive runs of at most 10 entries and 256 KiB: what one SendMessageBatch takes.
fn chunks(accepted: &[Pending]) -> Vec<&[Pending]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, pending) in accepted.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH || bytes + pending.body.len() > SQS_MAX_BYTES) {
            out.push(&accepted[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += pending.body.len();
    }
    if start < accepted.len() {
        out.push(&accepted[start..]);
    }
    out
}

/// An entry SQS refused: the request's fault (400) or SQS's (503).
fn refused(failure: EntryFailure) -> ApiError {
    let message = format!("{}: {}", failure.code, failure.message);
    if failure.sender_fault {
        ApiError::BadRequest { code: "queue_refused", message }
    } else {
        ApiError::QueueUnavailable(message)
    }
}

/// The processor's verdict on `body`. Before answering a registry miss, the snapshot
/// is brought up to every registration committed before the request arrived.
async fn judge(
    ctx: &ApiContext,
    body: &str,
    message_id: &str,
    received_at: DateTime<Utc>,
) -> Result<Verdict, ApiError> {
    let registry = ctx.registry.snapshot();
    let verdict = classify(body, message_id, &registry);
    let miss = verdict.reason().is_some_and(|r| r.is_registry_miss());
    if !miss || ctx.registry.checked_since(received_at) {
        return Ok(verdict);
    }
    let conn = ctx.store.pool().get().await?;
    ctx.registry.ensure_current(&**conn, received_at).await?;
    let latest = ctx.registry.snapshot();
    if Arc::ptr_eq(&latest, &registry) {
        return Ok(verdict);
    }
    Ok(classify(body, message_id, &latest))
}

/// A producer key may send only the event types its producer owns (403 otherwise).
/// Event types that are not registered are left to the verdict.
async fn check_owner(
    ctx: &ApiContext,
    producer: Option<&str>,
    verdict: &Verdict,
    owners: &mut HashMap<(String, i32), Option<Option<String>>>,
) -> Result<(), ApiError> {
    let Some(producer) = producer else { return Ok(()) };
    let (event_type, version) = match verdict {
        Verdict::Accepted(event) => (event.event_type.clone(), event.version),
        Verdict::Rejected(rejected) => match (&rejected.identity.event_type, rejected.identity.version) {
            (Some(event_type), Some(version)) => (event_type.clone(), version),
            _ => return Ok(()),
        },
    };
    let key = (event_type, version);
    let owner = match owners.get(&key) {
        Some(owner) => owner.clone(),
        None => {
            let conn = ctx.store.pool().get().await?;
            let owner: Option<Option<String>> = conn
                .query_opt("SELECT producer_id FROM event_type WHERE name = $1 AND version = $2", &[&key.0, &key.1])
                .await?
                .map(|row| row.get(0));
            owners.insert(key.clone(), owner.clone());
            owner
        }
    };
    match owner {
        None => Ok(()),
        Some(Some(owner)) if owner == producer => Ok(()),
        Some(_) => {
            Err(ApiError::Forbidden(format!("event type '{}' version {} belongs to another producer", key.0, key.1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: usize) -> Pending {
        Pending { index: 0, body: "x".repeat(bytes), event_id: None }
    }

    #[test]
    fn chunks_hold_at_most_ten_entries_and_the_sqs_limit() {
        let small: Vec<Pending> = (0..25).map(|_| pending(10)).collect();
        let sizes: Vec<usize> = chunks(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        let large: Vec<Pending> = (0..3).map(|_| pending(SQS_MAX_BYTES / 2)).collect();
        let sizes: Vec<usize> = chunks(&large).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 1]);
        assert!(chunks(&[]).is_empty());
    }
}
