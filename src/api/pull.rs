//! Pull consumption: the members of a `pull` consumer read the events after its
//! cursor, in the same commit-safe log order as the sender (`delivery::log`). Each
//! event handed out is leased to one member for `visibility` seconds (a row in
//! `pull_lease`), so the members of one consumer share its events like a consumer
//! group; what is not acknowledged in time is handed out again. Acknowledgements
//! move the durable cursor over the contiguous acknowledged prefix, and the leases
//! behind it are dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tokio_postgres::GenericClient;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::consumers::unknown_consumer;
use super::error::{ApiError, Body, ErrorBody};
use super::{check_id, ApiContext};
use crate::delivery::log::{LogEvent, Position, EVENT_COLUMNS};

/// How often an idle long poll looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/clients/{client}/consumers/{name}/events", get(pull_events))
        .route("/v1/clients/{client}/consumers/{name}/ack", post(ack_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// Most events to return, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Seconds to wait when no event is ready (default 20, capped by API_MAX_WAIT_SECS).
    pub wait: Option<u64>,
    /// The member of the consumer group asking (default `default`).
    pub member: Option<String>,
    /// Seconds the events stay leased to this member, 1 to 43200 (default 30).
    pub visibility: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PulledEvent {
    /// Its place in the log, `XACT.SEQ`: what to acknowledge.
    pub position: String,
    /// The event as webhooks carry it: `event_id`, `client_id`, `event_type`,
    /// `version`, `occurred_at`, `payload`.
    #[schema(value_type = Object)]
    pub event: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pulled {
    /// In log order; empty when none arrived within `wait`.
    pub events: Vec<PulledEvent>,
    /// The consumer's durable cursor.
    pub cursor: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Positions of events handed out, `XACT.SEQ` (1 to 10000).
    pub positions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Acked {
    /// Leases newly acknowledged.
    pub acknowledged: u64,
    /// The consumer's durable cursor afterwards.
    pub cursor: String,
}

/// A pull consumer as its reads need it.
struct PullConsumer {
    id: i64,
    active: bool,
    cursor: Position,
    event_types: Vec<String>,
    /// Parallel to `event_types`; 0 for every version.
    versions: Vec<i32>,
}

/// The pull consumer `name` of `client` (locked for the transaction with `lock`).
async fn load(db: &impl GenericClient, client: &str, name: &str, lock: bool) -> Result<PullConsumer, ApiError> {
    let sql = if lock {
        "SELECT id, kind, state, cursor_xact, cursor_seq FROM consumer WHERE client_id = $1 AND name = $2 FOR UPDATE"
    } else {
        "SELECT id, kind, state, cursor_xact, cursor_seq FROM consumer WHERE client_id = $1 AND name = $2"
    };
    let row = db.query_opt(sql, &[&client, &name]).await?.ok_or_else(|| unknown_consumer(client, name))?;
    let (id, kind, state): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    if kind != "pull" {
        return Err(ApiError::Conflict {
            code: "not_pull_consumer",
            message: format!("consumer '{name}' is a {kind} consumer: the sender delivers its events"),
        });
    }
    let subscriptions = db
        .query("SELECT event_type, coalesce(version, 0) FROM consumer_subscription WHERE consumer_id = $1", &[&id])
        .await?;
    Ok(PullConsumer {
        id,
        active: state == "active",
        cursor: Position { xact: row.get(3), seq: row.get(4) },
        event_types: subscriptions.iter().map(|r| r.get(0)).collect(),
        versions: subscriptions.iter().map(|r| r.get(1)).collect(),
    })
}

/// Leases to `member` up to `limit` of the consumer's events after its cursor that
/// no member holds and none acknowledged; returns them in log order. One statement,
/// so it sees the cursor and the leases as of one moment; concurrent claims of one
/// event are settled by the primary key (the loser's update finds it leased).
async fn claim(
    db: &impl GenericClient,
    client: &str,
    consumer: &PullConsumer,
    member: &str,
    visibility_secs: f64,
    limit: i64,
) -> Result<Vec<LogEvent>, ApiError> {
    let rows = db
        .query(
            &format!(
                "WITH cur AS (SELECT cursor_xact AS cx, cursor_seq AS cs FROM consumer WHERE id = $2::bigint),
             candidate AS (
                 SELECT m.xact_id, m.seq FROM message m, cur
                 WHERE m.client_id = $1 AND (m.xact_id, m.seq) > (cur.cx, cur.cs)
                   AND m.xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                   AND EXISTS (SELECT 1 FROM UNNEST($3::text[], $4::int4[]) AS s(event_type, version)
                               WHERE s.event_type = m.event_type AND (s.version = 0 OR s.version = m.version))
                   AND NOT EXISTS (SELECT 1 FROM pull_lease l
                                   WHERE l.consumer_id = $2::bigint AND l.xact_id = m.xact_id AND l.seq = m.seq
                                     AND (l.acked OR l.lease_until > now()))
                 ORDER BY m.xact_id, m.seq
                 LIMIT $5::bigint),
             claimed AS (
                 INSERT INTO pull_lease (consumer_id, xact_id, seq, member, lease_until)
                 SELECT $2::bigint, xact_id, seq, $6::text, now() + make_interval(secs => $7::float8) FROM candidate
                 ON CONFLICT (consumer_id, xact_id, seq) DO UPDATE
                     SET member = EXCLUDED.member, lease_until = EXCLUDED.lease_until
                     WHERE pull_lease.lease_until < now() AND NOT pull_lease.acked
                 RETURNING xact_id, seq)
             SELECT {EVENT_COLUMNS}
             FROM claimed c JOIN message m ON m.client_id = $1 AND m.xact_id = c.xact_id AND m.seq = c.seq
             ORDER BY m.xact_id, m.seq"
            ),
            &[&client, &consumer.id, &consumer.event_types, &consumer.versions, &limit, &member, &visibility_secs],
        )
        .await?;
    Ok(rows.iter().map(|r| LogEvent::from_row(client, r)).collect())
}

/// Read events: those after the cursor that no other member holds, leased to
/// `member`. Waits up to `wait` seconds when none is ready.
#[utoipa::path(
    get,
    path = "/v1/clients/{client}/consumers/{name}/events",
    params(
        ("client" = String, Path, description = "Client id"),
        ("name" = String, Path, description = "Pull consumer name"),
        PullQuery,
    ),
    responses(
        (status = 200, description = "Events leased to the member (maybe none)", body = Pulled),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
        (status = 409, description = "`not_pull_consumer`: a push consumer", body = ErrorBody),
        (status = 422, description = "`invalid_request`: a parameter out of range", body = ErrorBody),
    )
)]
pub(super) async fn pull_events(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
    Query(query): Query<PullQuery>,
) -> Result<Json<Pulled>, ApiError> {
    caller.client(&client)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: expected 1 to 1000, got {limit}")));
    }
    let visibility = query.visibility.unwrap_or(30);
    if !(1..=43_200).contains(&visibility) {
        return Err(ApiError::invalid(format!("visibility: expected 1 to 43200 seconds, got {visibility}")));
    }
    let member = query.member.unwrap_or_else(|| "default".to_owned());
    check_id("member", &member)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(20)).min(ctx.settings.max_wait);
    let deadline = Instant::now() + wait;
    loop {
        let (events, cursor, active) = {
            let conn = ctx.store.pool().get().await?;
            let consumer = load(&**conn, &client, &name, false).await?;
            let events = if consumer.active {
                claim(&**conn, &client, &consumer, &member, visibility as f64, limit).await?
            } else {
                Vec::new()
            };
            (events, consumer.cursor, consumer.active)
        };
        let now = Instant::now();
        if !events.is_empty() || !active || now >= deadline {
            let events = events
                .iter()
                .map(|e| {
                    let event: Value = serde_json::from_str(&e.body())
                        .map_err(|err| ApiError::Internal(format!("event {}: {err}", e.position)))?;
                    Ok(PulledEvent { position: e.position.to_string(), event })
                })
                .collect::<Result<Vec<PulledEvent>, ApiError>>()?;
            return Ok(Json(Pulled { events, cursor: cursor.to_string() }));
        }
        tokio::select! {
            _ = ctx.stopping.cancelled() => {
                return Ok(Json(Pulled { events: Vec::new(), cursor: cursor.to_string() }));
            }
            _ = tokio::time::sleep(POLL_INTERVAL.min(deadline - now)) => {}
        }
    }
}

/// Acknowledge events: they are not handed out again, and the cursor moves over
/// every event up to the first one not yet acknowledged.
#[utoipa::path(
    post,
    path = "/v1/clients/{client}/consumers/{name}/ack",
    params(
        ("client" = String, Path, description = "Client id"),
        ("name" = String, Path, description = "Pull consumer name"),
    ),
    request_body = Ack,
    responses(
        (status = 200, description = "Acknowledged; the cursor as it is now", body = Acked),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
        (status = 409, description = "`not_pull_consumer`: a push consumer", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not positions `XACT.SEQ`", body = ErrorBody),
    )
)]
pub(super) async fn ack_events(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
    Body(ack): Body<Ack>,
) -> Result<Json<Acked>, ApiError> {
    caller.client(&client)?;
    if ack.positions.is_empty() || ack.positions.len() > 10_000 {
        return Err(ApiError::invalid(format!("positions: expected 1 to 10000, got {}", ack.positions.len())));
    }
    let positions = ack
        .positions
        .iter()
        .map(|p| p.parse::<Position>().map_err(|e| ApiError::invalid(format!("positions: {e}"))))
        .collect::<Result<Vec<Position>, ApiError>>()?;
    let xacts: Vec<i64> = positions.iter().map(|p| p.xact).collect();
    let seqs: Vec<i64> = positions.iter().map(|p| p.seq).collect();
    let mut conn = ctx.store.pool().get().await?;
    let tx = conn.transaction().await?;
    // Locked: acknowledgements of one consumer move its cursor one at a time.
    let consumer = load(&*tx, &client, &name, true).await?;
    let acknowledged = tx
        .execute(
            "UPDATE pull_lease SET acked = true
             WHERE consumer_id = $1 AND NOT acked
               AND (xact_id, seq) IN (SELECT x, s FROM UNNEST($2::int8[], $3::int8[]) AS u(x, s))",
            &[&consumer.id, &xacts, &seqs],
        )
        .await?;
    let cursor = advance(&*tx, &client, &consumer).await?;
    tx.commit().await?;
    Ok(Json(Acked { acknowledged, cursor: cursor.to_string() }))
}

/// Moves the cursor to the last acknowledged event before the first selected event
/// that is not acknowledged, and drops the leases at or behind it.
async fn advance(db: &impl GenericClient, client: &str, consumer: &PullConsumer) -> Result<Position, ApiError> {
    let first_open = db
        .query_opt(
            "SELECT m.xact_id, m.seq FROM message m
             WHERE m.client_id = $1 AND (m.xact_id, m.seq) > ($2::bigint, $3::bigint)
               AND m.xact_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
               AND EXISTS (SELECT 1 FROM UNNEST($4::text[], $5::int4[]) AS s(event_type, version)
                           WHERE s.event_type = m.event_type AND (s.version = 0 OR s.version = m.version))
               AND NOT EXISTS (SELECT 1 FROM pull_lease l WHERE l.consumer_id = $6::bigint
                               AND l.xact_id = m.xact_id AND l.seq = m.seq AND l.acked)
             ORDER BY m.xact_id, m.seq LIMIT 1",
            &[
                &client,
                &consumer.cursor.xact,
                &consumer.cursor.seq,
                &consumer.event_types,
                &consumer.versions,
                &consumer.id,
            ],
        )
        .await?;
    let bound = first_open.map_or((i64::MAX, i64::MAX), |r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
    let last_acked = db
        .query_opt(
            "SELECT xact_id, seq FROM pull_lease
             WHERE consumer_id = $1 AND acked AND (xact_id, seq) > ($2::bigint, $3::bigint)
               AND (xact_id, seq) < ($4::bigint, $5::bigint)
             ORDER BY xact_id DESC, seq DESC LIMIT 1",
            &[&consumer.id, &consumer.cursor.xact, &consumer.cursor.seq, &bound.0, &bound.1],
        )
        .await?;
    let Some(row) = last_acked else { return Ok(consumer.cursor) };
    let cursor = Position { xact: row.get(0), seq: row.get(1) };
    db.execute(
        "UPDATE consumer SET cursor_xact = $2, cursor_seq = $3, updated_at = now() WHERE id = $1",
        &[&consumer.id, &cursor.xact, &cursor.seq],
    )
    .await?;
    // Only rows behind the previous cursor go: the ones acknowledged just now stay one
    // more round as `acked`, so a claim that raced this transaction cannot re-lease them.
    db.execute(
        "DELETE FROM pull_lease WHERE consumer_id = $1 AND (xact_id, seq) <= ($2::bigint, $3::bigint)",
        &[&consumer.id, &consumer.cursor.xact, &consumer.cursor.seq],
    )
    .await?;
    Ok(cursor)
}
