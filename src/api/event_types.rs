//! Event types: one JSON Schema per (name, version), immutable once registered
//! (events already stored were validated against it). Registering the same schema
//! again is harmless; a different one needs a new version.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use super::auth::{Caller, Role};
use super::error::{ApiError, Body, ErrorBody};
use super::{check_id, is_state, ApiContext};
use crate::validation::Schema;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/event-types", post(register_event_type).get(list_event_types))
        .route("/v1/event-types/{name}/{version}", get(get_event_type).delete(delete_event_type))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEventType {
    pub name: String,
    /// >= 1.
    pub version: i32,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise); formats are
    /// asserted, remote `$ref`s refused.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// The owning producer; a producer key may leave it out (its own) or name itself.
    #[serde(default)]
    pub producer: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    pub name: String,
    pub version: i32,
    pub producer: Option<String>,
    pub description: String,
    #[schema(value_type = Object)]
    pub schema: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "name, version, producer_id, description, schema, created_at, updated_at";

fn event_type_view(r: &tokio_postgres::Row) -> EventTypeView {
    EventTypeView {
        name: r.get(0),
        version: r.get(1),
        producer: r.get(2),
        description: r.get(3),
        schema: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn unknown_producer(producer: &str) -> ApiError {
    ApiError::Invalid { code: "unknown_producer", message: format!("producer '{producer}' is not registered") }
}

fn unknown_event_type(name: &str, version: i32) -> ApiError {
    ApiError::not_found(format!("event type '{name}' version {version}"))
}

/// Register a schema for an event type and version.
#[utoipa::path(
    post,
    path = "/v1/event-types",
    request_body = NewEventType,
    responses(
        (status = 201, description = "Registered", body = EventTypeView),
        (status = 200, description = "Already registered with this schema", body = EventTypeView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A client key, or another producer's key", body = ErrorBody),
        (status = 409, description = "`schema_immutable`: registered with another schema", body = ErrorBody),
        (status = 422, description = "`invalid_schema`, `unknown_producer`, `invalid_request`", body = ErrorBody),
    )
)]
pub(super) async fn register_event_type(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Body(new): Body<NewEventType>,
) -> Result<(StatusCode, Json<EventTypeView>), ApiError> {
    let producer = match (&caller.role, new.producer.clone()) {
        (Role::Admin, producer) => producer,
        (Role::Producer(own), None) => Some(own.clone()),
        (Role::Producer(own), Some(named)) if named == *own => Some(named),
        (Role::Producer(_), Some(_)) => {
            return Err(ApiError::Forbidden("a producer key registers event types only for its own producer".into()))
        }
        (Role::Client(_), _) => return Err(ApiError::Forbidden("a client key cannot register event types".into())),
    };
    check_id("name", &new.name)?;
    if new.version < 1 {
        return Err(ApiError::invalid(format!("version: expected >= 1, got {}", new.version)));
    }
    Schema::compile(new.schema.clone())
        .map_err(|e| ApiError::Invalid { code: "invalid_schema", message: format!("schema: {e:#}") })?;
    let mut conn = ctx.store.pool().get().await?;
    if let Some(p) = &producer {
        if conn.query_opt("SELECT 1 FROM producer WHERE id = $1", &[p]).await?.is_none() {
            return Err(unknown_producer(p));
        }
    }
    // A name belongs to one producer: every version of it, since subscriptions cover
    // every version. The lock makes "first version" a decision one request at a time.
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('event_type:' || $1))", &[&new.name]).await?;
    if let Role::Producer(own) = &caller.role {
        let taken = tx
            .query_opt(
                "SELECT 1 FROM event_type WHERE name = $1 AND producer_id IS DISTINCT FROM $2 LIMIT 1",
                &[&new.name, own],
            )
            .await?;
        if taken.is_some() {
            return Err(ApiError::Forbidden(format!("event type '{}' belongs to another producer", new.name)));
        }
    }
    let inserted = tx
        .query_opt(
            &format!(
                "INSERT INTO event_type (name, version, schema, producer_id, description) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name, version) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[&new.name, &new.version, &new.schema, &producer, &new.description],
        )
        .await;
    let inserted = match inserted {
        Ok(row) => row,
        Err(e) if is_state(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
            return Err(unknown_producer(producer.as_deref().unwrap_or_default()))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(row) = inserted {
        tx.commit().await?;
        tracing::info!(event_type = %new.name, version = new.version, "event type registered");
        return Ok((StatusCode::CREATED, Json(event_type_view(&row))));
    }
    let existing = tx
        .query_one(
            &format!("SELECT {COLUMNS} FROM event_type WHERE name = $1 AND version = $2"),
            &[&new.name, &new.version],
        )
        .await?;
    let existing = event_type_view(&existing);
    if let Role::Producer(own) = &caller.role {
        if existing.producer.as_deref() != Some(own.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "event type '{}' version {} belongs to another producer",
                new.name, new.version
            )));
        }
    }
    if existing.schema != new.schema {
        return Err(ApiError::Conflict {
            code: "schema_immutable",
            message: format!(
                "event type '{}' version {} is registered with another schema; register a new version",
                new.name, new.version
            ),
        });
    }
    Ok((StatusCode::OK, Json(existing)))
}

/// Every event type and version (any key).
#[utoipa::path(
    get,
    path = "/v1/event-types",
    responses(
        (status = 200, description = "The event types", body = [EventTypeView]),
        (status = 401, description = "No valid key", body = ErrorBody),
    )
)]
pub(super) async fn list_event_types(
    State(ctx): State<Arc<ApiContext>>,
    _caller: Caller,
) -> Result<Json<Vec<EventTypeView>>, ApiError> {
    let conn = ctx.store.pool().get().await?;
    let rows = conn.query(&format!("SELECT {COLUMNS} FROM event_type ORDER BY name, version"), &[]).await?;
    Ok(Json(rows.iter().map(event_type_view).collect()))
}

/// One event type version, with its schema (any key).
#[utoipa::path(
    get,
    path = "/v1/event-types/{name}/{version}",
    params(
        ("name" = String, Path, description = "Event type name"),
        ("version" = i32, Path, description = "Version, >= 1"),
    ),
    responses(
        (status = 200, description = "The event type", body = EventTypeView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such event type version", body = ErrorBody),
    )
)]
pub(super) async fn get_event_type(
    State(ctx): State<Arc<ApiContext>>,
    _caller: Caller,
    Path((name, version)): Path<(String, i32)>,
) -> Result<Json<EventTypeView>, ApiError> {
    let conn = ctx.store.pool().get().await?;
    let row = conn
        .query_opt(&format!("SELECT {COLUMNS} FROM event_type WHERE name = $1 AND version = $2"), &[&name, &version])
        .await?
        .ok_or_else(|| unknown_event_type(&name, version))?;
    Ok(Json(event_type_view(&row)))
}

/// Remove an event type version. One with stored events cannot be removed.
#[utoipa::path(
    delete,
    path = "/v1/event-types/{name}/{version}",
    params(
        ("name" = String, Path, description = "Event type name"),
        ("version" = i32, Path, description = "Version, >= 1"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such event type version", body = ErrorBody),
        (status = 409, description = "`conflict`: events of it are stored", body = ErrorBody),
    )
)]
pub(super) async fn delete_event_type(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((name, version)): Path<(String, i32)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let conn = ctx.store.pool().get().await?;
    let deleted =
        match conn.execute("DELETE FROM event_type WHERE name = $1 AND version = $2", &[&name, &version]).await {
            Ok(n) => n,
            Err(e) if is_state(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                return Err(ApiError::conflict(format!(
                    "event type '{name}' version {version} has stored events and cannot be removed"
                )))
            }
            Err(e) => return Err(e.into()),
        };
    if deleted == 0 {
        return Err(unknown_event_type(&name, version));
    }
    Ok(StatusCode::NO_CONTENT)
}
