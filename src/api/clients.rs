//! Clients (tenants) and their subscriptions to event types. Changes reach running
//! processors through the registry-version triggers on both tables.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use super::auth::{unknown_client, Caller};
use super::error::{ApiError, Body, ErrorBody};
use super::{check_id, client_exists, is_state, ApiContext};

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/clients", post(create_client).get(list_clients))
        .route("/v1/clients/{client}", get(get_client).delete(delete_client))
        .route("/v1/clients/{client}/subscriptions", get(list_subscriptions))
        .route("/v1/clients/{client}/subscriptions/{event_type}", put(subscribe).delete(unsubscribe))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// 1 to 128 characters; what events name in `client_id`.
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub client: String,
    /// Every version of this event type.
    pub event_type: String,
    pub created_at: DateTime<Utc>,
}

fn client_view(r: &tokio_postgres::Row) -> ClientView {
    ClientView { id: r.get(0), name: r.get(1), created_at: r.get(2) }
}

/// Register a client.
#[utoipa::path(
    post,
    path = "/v1/clients",
    request_body = NewClient,
    responses(
        (status = 201, description = "Registered", body = ClientView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 409, description = "`conflict`: the id is taken", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
    )
)]
pub(super) async fn create_client(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Body(new): Body<NewClient>,
) -> Result<(StatusCode, Json<ClientView>), ApiError> {
    caller.admin()?;
    check_id("id", &new.id)?;
    let conn = ctx.store.pool().get().await?;
    let row = conn
        .query_opt(
            "INSERT INTO client (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id, name, created_at",
            &[&new.id, &new.name],
        )
        .await?
        .ok_or_else(|| ApiError::conflict(format!("client '{}' already exists", new.id)))?;
    Ok((StatusCode::CREATED, Json(client_view(&row))))
}

/// Every client (admin), or the caller's own (client key).
#[utoipa::path(
    get,
    path = "/v1/clients",
    responses(
        (status = 200, description = "The clients", body = [ClientView]),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
    )
)]
pub(super) async fn list_clients(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
) -> Result<Json<Vec<ClientView>>, ApiError> {
    let only = caller.visible_clients()?;
    let conn = ctx.store.pool().get().await?;
    let rows = conn
        .query("SELECT id, name, created_at FROM client WHERE $1::text IS NULL OR id = $1 ORDER BY id", &[&only])
        .await?;
    Ok(Json(rows.iter().map(client_view).collect()))
}

/// One client.
#[utoipa::path(
    get,
    path = "/v1/clients/{client}",
    params(("client" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such client (or not the caller's)", body = ErrorBody),
    )
)]
pub(super) async fn get_client(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(client): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    let row = conn
        .query_opt("SELECT id, name, created_at FROM client WHERE id = $1", &[&client])
        .await?
        .ok_or_else(|| unknown_client(&client))?;
    Ok(Json(client_view(&row)))
}

/// Remove a client with its subscriptions and consumers, and revoke its keys. A
/// client with stored events cannot be removed.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client}",
    params(("client" = String, Path, description = "Client id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
        (status = 409, description = "`conflict`: it has stored events", body = ErrorBody),
    )
)]
pub(super) async fn delete_client(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(client): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let mut conn = ctx.store.pool().get().await?;
    let tx = conn.transaction().await?;
    let deleted = match tx.execute("DELETE FROM client WHERE id = $1", &[&client]).await {
        Ok(n) => n,
        Err(e) if is_state(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
            return Err(ApiError::conflict(format!("client '{client}' has stored events and cannot be removed")))
        }
        Err(e) => return Err(e.into()),
    };
    if deleted == 0 {
        return Err(unknown_client(&client));
    }
    tx.execute(
        "UPDATE api_key SET revoked_at = now() WHERE role = 'client' AND scope = $1 AND revoked_at IS NULL",
        &[&client],
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The event types a client is subscribed to.
#[utoipa::path(
    get,
    path = "/v1/clients/{client}/subscriptions",
    params(("client" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Its subscriptions", body = [SubscriptionView]),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such client (or not the caller's)", body = ErrorBody),
    )
)]
pub(super) async fn list_subscriptions(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(client): Path<String>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    client_exists(&**conn, &client).await?;
    let rows = conn
        .query(
            "SELECT client_id, event_type, created_at FROM subscription WHERE client_id = $1 ORDER BY event_type",
            &[&client],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| SubscriptionView { client: r.get(0), event_type: r.get(1), created_at: r.get(2) })
            .collect(),
    ))
}

/// Subscribe a client to an event type (every version): its events are accepted.
#[utoipa::path(
    put,
    path = "/v1/clients/{client}/subscriptions/{event_type}",
    params(
        ("client" = String, Path, description = "Client id"),
        ("event_type" = String, Path, description = "Event type name"),
    ),
    responses(
        (status = 201, description = "Subscribed", body = SubscriptionView),
        (status = 200, description = "Already subscribed", body = SubscriptionView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such client (or not the caller's)", body = ErrorBody),
        (status = 422, description = "`unknown_event_type`", body = ErrorBody),
    )
)]
pub(super) async fn subscribe(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, event_type)): Path<(String, String)>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    client_exists(&**conn, &client).await?;
    if conn.query_opt("SELECT 1 FROM event_type WHERE name = $1 LIMIT 1", &[&event_type]).await?.is_none() {
        return Err(ApiError::Invalid {
            code: "unknown_event_type",
            message: format!("event type '{event_type}' is not registered"),
        });
    }
    let inserted = conn
        .query_opt(
            "INSERT INTO subscription (client_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING created_at",
            &[&client, &event_type],
        )
        .await?;
    let (status, created_at): (StatusCode, DateTime<Utc>) = match inserted {
        Some(row) => (StatusCode::CREATED, row.get(0)),
        None => {
            let row = conn
                .query_one(
                    "SELECT created_at FROM subscription WHERE client_id = $1 AND event_type = $2",
                    &[&client, &event_type],
                )
                .await?;
            (StatusCode::OK, row.get(0))
        }
    };
    Ok((status, Json(SubscriptionView { client, event_type, created_at })))
}

/// Unsubscribe a client from an event type: its new events are rejected as
/// `not_subscribed`.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client}/subscriptions/{event_type}",
    params(
        ("client" = String, Path, description = "Client id"),
        ("event_type" = String, Path, description = "Event type name"),
    ),
    responses(
        (status = 204, description = "Unsubscribed"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such subscription (or client)", body = ErrorBody),
    )
)]
pub(super) async fn unsubscribe(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path((client, event_type)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.client(&client)?;
    let conn = ctx.store.pool().get().await?;
    let deleted = conn
        .execute("DELETE FROM subscription WHERE client_id = $1 AND event_type = $2", &[&client, &event_type])
        .await?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!("subscription of client '{client}' to '{event_type}'")));
    }
    Ok(StatusCode::NO_CONTENT)
}
