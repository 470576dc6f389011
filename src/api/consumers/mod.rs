//! A client's consumers: `push` ones, to which the sender POSTs signed webhooks,
//! and `pull` ones, which read through `GET .../events` (see `pull`). Both keep a
//! durable cursor in the commit-safe log; pause, resume and moving the cursor are
//! the operator's levers, as `sender consumers` offers them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, Body, ErrorBody};
use super::{client_exists, ApiContext};
use crate::delivery::consumer::{self, Change};
use crate::delivery::log::Start;

pub(super) mod register;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/clients/{client}/consumers", post(register::create_consumer).get(list_consumers))
        .route("/v1/clients/{client}/consumers/{name}", axum::routing::get(get_consumer).delete(delete_consumer))
        .route("/v1/clients/{client}/consumers/{name}/pause", post(pause_consumer))
        .route("/v1/clients/{client}/consumers/{name}/resume", post(resume_consumer))
        .route("/v1/clients/{client}/consumers/{name}/cursor", put(move_cursor))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerKind {
    /// The sender POSTs each event to `endpoint`.
    Push,
    /// Members read with `GET .../events` and acknowledge with `POST .../ack`.
    Pull,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerView {
    pub client: String,
    pub name: String,
    /// `push` or `pull`.
    pub kind: String,
    pub endpoint: String,
    pub event_types: Vec<String>,
    /// `active`, `paused` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    pub timeout_ms: i32,
    pub max_in_flight: i32,
    pub start: String,
    /// Every event at or before it was delivered (or parked, or acknowledged).
    pub cursor: String,
    pub parked: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorMove {
    /// `beginning`, `new` or a position `XACT.SEQ`: the next events are those after it.
    pub start: String,
}

/// The consumers of `client` (one, by `name`), as views: the sender's listing,
/// without what only operators of the sender see (lease owner, failure clock).
pub(super) async fn views(
    db: &impl GenericClient,
    client: &str,
    name: Option<&str>,
) -> Result<Vec<ConsumerView>, ApiError> {
    Ok(consumer::list(db, Some(client), name)
        .await?
        .into_iter()
        .map(|c| ConsumerView {
            client: c.client,
            name: c.name,
            kind: c.kind,
            endpoint: c.endpoint,
            event_types: c.event_types,
            state: c.state,
            disabled_reason: c.disabled_reason,
            timeout_ms: c.timeout_ms,
            max_in_flight: c.max_in_flight,
            start: c.start,
            cursor: c.cursor,
            parked: c.parked,
            created_at: c.created_at,
        })
        .collect())
}

pub(super) fn unknown_consumer(client: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("consumer '{name}' of client '{client}'"))
}

pub(super) async fn view(db: &impl GenericClient, client: &str, name: &str) -> Result<ConsumerView, ApiError> {
    views(db, client, Some(name)).await?.into_iter().next().ok_or_else(|| unknown_consumer(client, name))
}

/// A client's consumers.
#[utoipa::path(
    get,
    path = "/v1/clients/{client}/consumers",
    params(("client" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Its consumers", body = [ConsumerView]),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such client (or not the caller's)", body = ErrorBody),
    )
)]
pub(super) async fn list_consumers(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(client): Path<String>,
) -> Result<Json<Vec<ConsumerView>>, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    client_exists(&**conn, &client).await?;
    Ok(Json(views(&**conn, &client, None).await?))
}

/// One consumer, with its state and cursor.
#[utoipa::path(
    get,
    path = "/v1/clients/{client}/consumers/{name}",
    params(("client" = String, Path, description = "Client id"), ("name" = String, Path, description = "Consumer name")),
    responses(
        (status = 200, description = "The consumer", body = ConsumerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
    )
)]
pub(super) async fn get_consumer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
) -> Result<Json<ConsumerView>, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    Ok(Json(view(&**conn, &client, &name).await?))
}

/// Remove a consumer, with its attempts, parked events and leases.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client}/consumers/{name}",
    params(("client" = String, Path, description = "Client id"), ("name" = String, Path, description = "Consumer name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
    )
)]
pub(super) async fn delete_consumer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    let deleted = conn.execute("DELETE FROM consumer WHERE client_id = $1 AND name = $2", &[&client, &name]).await?;
    if deleted == 0 {
        return Err(unknown_consumer(&client, &name));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn apply(ctx: &ApiContext, client: &str, name: &str, change: Change) -> Result<Json<ConsumerView>, ApiError> {
    let mut conn = ctx.store.pool().get().await?;
    let tx = conn.transaction().await?;
    let reset = matches!(change, Change::Reset(_));
    if !consumer::change(&*tx, client, name, change).await? {
        return Err(unknown_consumer(client, name));
    }
    if reset {
        // A pull consumer's leases and acknowledgements belong to the old position.
        tx.execute(
            "DELETE FROM pull_lease WHERE consumer_id = (SELECT id FROM consumer WHERE client_id = $1 AND name = $2)",
            &[&client, &name],
        )
        .await?;
    }
    let consumer = view(&*tx, client, name).await?;
    tx.commit().await?;
    Ok(Json(consumer))
}

/// Stop delivering to a consumer; its cursor stays.
#[utoipa::path(
    post,
    path = "/v1/clients/{client}/consumers/{name}/pause",
    params(("client" = String, Path, description = "Client id"), ("name" = String, Path, description = "Consumer name")),
    responses(
        (status = 200, description = "Paused", body = ConsumerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
    )
)]
pub(super) async fn pause_consumer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
) -> Result<Json<ConsumerView>, ApiError> {
    caller.client(&client)?;
    apply(&ctx, &client, &name, Change::Pause).await
}

/// Deliver again to a paused or disabled consumer, from its cursor.
#[utoipa::path(
    post,
    path = "/v1/clients/{client}/consumers/{name}/resume",
    params(("client" = String, Path, description = "Client id"), ("name" = String, Path, description = "Consumer name")),
    responses(
        (status = 200, description = "Active", body = ConsumerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
    )
)]
pub(super) async fn resume_consumer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
) -> Result<Json<ConsumerView>, ApiError> {
    caller.client(&client)?;
    apply(&ctx, &client, &name, Change::Resume).await
}

/// Move a consumer's cursor: back to deliver again, forward to skip.
#[utoipa::path(
    put,
    path = "/v1/clients/{client}/consumers/{name}/cursor",
    params(("client" = String, Path, description = "Client id"), ("name" = String, Path, description = "Consumer name")),
    request_body = CursorMove,
    responses(
        (status = 200, description = "Moved", body = ConsumerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such consumer (or client)", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not a start position", body = ErrorBody),
    )
)]
pub(super) async fn move_cursor(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, name)): Path<(String, String)>,
    Body(to): Body<CursorMove>,
) -> Result<Json<ConsumerView>, ApiError> {
    caller.client(&client)?;
    let start: Start = to.start.parse().map_err(|e: String| ApiError::invalid(format!("start: {e}")))?;
    apply(&ctx, &client, &name, Change::Reset(start)).await
}
