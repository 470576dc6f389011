//! Producers: the applications that emit events and own event types. A producer's
//! definition carries a version that only moves forward, so replaying an old
//! deployment cannot undo a newer one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, Body, ErrorBody};
use super::{check_id, is_state, ApiContext};

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/producers", get(list_producers))
        .route("/v1/producers/{id}", get(get_producer).put(put_producer).delete(delete_producer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerDefinition {
    #[serde(default)]
    pub name: String,
    /// Applied only when above the stored version (>= 1).
    pub version: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProducerView {
    pub id: String,
    pub name: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

fn producer_view(r: &tokio_postgres::Row) -> ProducerView {
    ProducerView { id: r.get(0), name: r.get(1), version: r.get(2), created_at: r.get(3) }
}

fn unknown_producer(id: &str) -> ApiError {
    ApiError::not_found(format!("producer '{id}'"))
}

/// Create a producer, or update it to a newer version.
#[utoipa::path(
    put,
    path = "/v1/producers/{id}",
    params(("id" = String, Path, description = "Producer id")),
    request_body = ProducerDefinition,
    responses(
        (status = 201, description = "Created", body = ProducerView),
        (status = 200, description = "Updated to the newer version", body = ProducerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 409, description = "`stale_version`: not above the stored version", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
    )
)]
pub(super) async fn put_producer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(definition): Body<ProducerDefinition>,
) -> Result<(StatusCode, Json<ProducerView>), ApiError> {
    caller.admin()?;
    check_id("id", &id)?;
    if definition.version < 1 {
        return Err(ApiError::invalid(format!("version: expected >= 1, got {}", definition.version)));
    }
    let conn = ctx.store.pool().get().await?;
    // `xmax = 0` tells a fresh insert from an update of an existing row.
    let row = conn
        .query_opt(
            "INSERT INTO producer (id, name, version) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version
             WHERE producer.version < EXCLUDED.version
             RETURNING id, name, version, created_at, (xmax = 0)",
            &[&id, &definition.name, &definition.version],
        )
        .await?;
    match row {
        Some(row) => {
            let created: bool = row.get(4);
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(producer_view(&row))))
        }
        None => {
            let stored: i32 =
                conn.query_opt("SELECT version FROM producer WHERE id = $1", &[&id]).await?.map_or(0, |r| r.get(0));
            Err(ApiError::Conflict {
                code: "stale_version",
                message: format!(
                    "producer '{id}' is at version {stored}; send a version above it (got {})",
                    definition.version
                ),
            })
        }
    }
}

/// Every producer (admin), or the caller's own (producer key).
#[utoipa::path(
    get,
    path = "/v1/producers",
    responses(
        (status = 200, description = "The producers", body = [ProducerView]),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A client key", body = ErrorBody),
    )
)]
pub(super) async fn list_producers(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
) -> Result<Json<Vec<ProducerView>>, ApiError> {
    let only = caller.visible_producers()?;
    let conn = ctx.store.pool().get().await?;
    let rows = conn
        .query(
            "SELECT id, name, version, created_at FROM producer WHERE $1::text IS NULL OR id = $1 ORDER BY id",
            &[&only],
        )
        .await?;
    Ok(Json(rows.iter().map(producer_view).collect()))
}

/// One producer.
#[utoipa::path(
    get,
    path = "/v1/producers/{id}",
    params(("id" = String, Path, description = "Producer id")),
    responses(
        (status = 200, description = "The producer", body = ProducerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A client key", body = ErrorBody),
        (status = 404, description = "No such producer (or not the caller's)", body = ErrorBody),
    )
)]
pub(super) async fn get_producer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProducerView>, ApiError> {
    caller.producer(&id)?;
    let conn = ctx.store.pool().get().await?;
    let row = conn
        .query_opt("SELECT id, name, version, created_at FROM producer WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| unknown_producer(&id))?;
    Ok(Json(producer_view(&row)))
}

/// Remove a producer and revoke its keys. A producer that owns event types cannot
/// be removed.
#[utoipa::path(
    delete,
    path = "/v1/producers/{id}",
    params(("id" = String, Path, description = "Producer id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such producer", body = ErrorBody),
        (status = 409, description = "`conflict`: it owns event types", body = ErrorBody),
    )
)]
pub(super) async fn delete_producer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let mut conn = ctx.store.pool().get().await?;
    let tx = conn.transaction().await?;
    let deleted = match tx.execute("DELETE FROM producer WHERE id = $1", &[&id]).await {
        Ok(n) => n,
        Err(e) if is_state(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
            return Err(ApiError::conflict(format!("producer '{id}' owns event types and cannot be removed")))
        }
        Err(e) => return Err(e.into()),
    };
    if deleted == 0 {
        return Err(unknown_producer(&id));
    }
    tx.execute(
        "UPDATE api_key SET revoked_at = now() WHERE role = 'producer' AND scope = $1 AND revoked_at IS NULL",
        &[&id],
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
