//! Where an event is: stored, with its position in the log and, per consumer,
//! whether it was delivered, is pending or was parked; or rejected, with why.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::ApiContext;

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub consumer: String,
    /// `delivered` (at or before the consumer's cursor), `pending` or `parked`.
    pub state: String,
}

/// `stored` (with its position and deliveries) or `rejected` (with the reason).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventStatus {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<Delivery>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_at: Option<DateTime<Utc>>,
}

/// Where an event is: stored (its position and, per consumer, delivered, pending or
/// parked) or rejected (why).
#[utoipa::path(
    get,
    tag = "events",
    path = "/v1/clients/{client}/events/{event_id}",
    params(("client" = String, Path, description = "Client id"), ("event_id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Stored or rejected", body = EventStatus),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "Neither stored nor rejected (or not the caller's client)", body = ErrorBody),
    )
)]
pub(super) async fn event_status(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, event_id)): Path<(String, String)>,
) -> Result<Json<EventStatus>, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    let stored = conn
        .query_opt(
            "SELECT xact_id, seq, stored_at, event_type, version FROM message WHERE client_id = $1 AND event_id = $2",
            &[&client, &event_id],
        )
        .await?;
    if let Some(row) = stored {
        let (xact, seq, event_type, version): (i64, i64, String, i32) =
            (row.get(0), row.get(1), row.get(3), row.get(4));
        let deliveries: Vec<Delivery> = conn
            .query(
                "SELECT c.name,
                        CASE WHEN EXISTS (SELECT 1 FROM parked_delivery p
                                          WHERE p.consumer_id = c.id AND p.xact_id = $3::bigint AND p.seq = $4::bigint)
                             THEN 'parked'
                             WHEN (c.cursor_xact, c.cursor_seq) >= ($3::bigint, $4::bigint) THEN 'delivered'
                             ELSE 'pending' END
                 FROM consumer c
                 WHERE c.client_id = $1 AND (c.start_xact, c.start_seq) < ($3::bigint, $4::bigint)
                   AND EXISTS (SELECT 1 FROM consumer_subscription s WHERE s.consumer_id = c.id
                               AND s.event_type = $2 AND (s.version IS NULL OR s.version = $5::int4))
                 ORDER BY c.name",
                &[&client, &event_type, &xact, &seq, &version],
            )
            .await?
            .iter()
            .map(|r| Delivery { consumer: r.get(0), state: r.get(1) })
            .collect();
        return Ok(Json(EventStatus {
            status: "stored".into(),
            position: Some(format!("{xact}.{seq}")),
            stored_at: Some(row.get(2)),
            deliveries: Some(deliveries),
            reason: None,
            detail: None,
            rejected_at: None,
        }));
    }
    let rejected = conn
        .query_opt(
            "SELECT reason, detail, received_at FROM rejected_message WHERE client_id = $1 AND event_id = $2
             ORDER BY received_at DESC LIMIT 1",
            &[&client, &event_id],
        )
        .await?;
    match rejected {
        Some(row) => Ok(Json(EventStatus {
            status: "rejected".into(),
            position: None,
            stored_at: None,
            deliveries: None,
            reason: Some(row.get(0)),
            detail: Some(row.get(1)),
            rejected_at: Some(row.get(2)),
        })),
        None => Err(ApiError::not_found(format!("event '{event_id}' of client '{client}'"))),
    }
}
