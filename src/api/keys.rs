//! API keys (admin only): create a producer or client key, shown once; list them
//! without secrets; revoke one. Revoked keys are kept, with when.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{self, Caller};
use super::error::{ApiError, Body, ErrorBody};
use super::ApiContext;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/v1/keys", post(create_key).get(list_keys)).route("/v1/keys/{id}", delete(revoke_key))
}

/// The role of a key: which producer or which client it acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Producer,
    Client,
}

impl KeyRole {
    fn as_str(self) -> &'static str {
        match self {
            KeyRole::Producer => "producer",
            KeyRole::Client => "client",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub role: KeyRole,
    /// The producer id (role `producer`) or client id (role `client`).
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: String,
    /// `epk_<id>_<secret>`: shown only in this answer; only its hash is kept.
    pub key: String,
    pub role: KeyRole,
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    /// `producer` or `client`.
    pub role: String,
    pub scope: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Create a key for a producer or a client.
#[utoipa::path(
    post,
    path = "/v1/keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, shown only now", body = CreatedKey),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 422, description = "`unknown_producer` or `unknown_client`", body = ErrorBody),
    )
)]
pub(super) async fn create_key(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Body(new): Body<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    caller.admin()?;
    let conn = ctx.store.pool().get().await?;
    let exists = match new.role {
        KeyRole::Producer => conn.query_opt("SELECT 1 FROM producer WHERE id = $1", &[&new.scope]).await?,
        KeyRole::Client => conn.query_opt("SELECT 1 FROM client WHERE id = $1", &[&new.scope]).await?,
    };
    if exists.is_none() {
        let (code, what) = match new.role {
            KeyRole::Producer => ("unknown_producer", "producer"),
            KeyRole::Client => ("unknown_client", "client"),
        };
        return Err(ApiError::Invalid { code, message: format!("{what} '{}' is not registered", new.scope) });
    }
    let (id, key, hashed) = auth::generate();
    conn.execute(
        "INSERT INTO api_key (id, secret_hash, role, scope) VALUES ($1, $2, $3, $4)",
        &[&id, &hashed, &new.role.as_str(), &new.scope],
    )
    .await?;
    tracing::info!(key_id = %id, role = new.role.as_str(), scope = %new.scope, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { id, key, role: new.role, scope: new.scope })))
}

/// Every key, revoked ones included; never a secret.
#[utoipa::path(
    get,
    path = "/v1/keys",
    responses(
        (status = 200, description = "The keys", body = [KeyView]),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
    )
)]
pub(super) async fn list_keys(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    caller.admin()?;
    let conn = ctx.store.pool().get().await?;
    let rows =
        conn.query("SELECT id, role, scope, created_at, revoked_at FROM api_key ORDER BY created_at, id", &[]).await?;
    Ok(Json(
        rows.iter()
            .map(|r| KeyView {
                id: r.get(0),
                role: r.get(1),
                scope: r.get(2),
                created_at: r.get(3),
                revoked_at: r.get(4),
            })
            .collect(),
    ))
}

/// Revoke a key: it is refused (401) from now on. Revoking twice is harmless.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    params(("id" = String, Path, description = "The key's id (the part after `epk_`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
pub(super) async fn revoke_key(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let conn = ctx.store.pool().get().await?;
    let revoked =
        conn.execute("UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", &[&id]).await?;
    if revoked == 0 {
        return Err(ApiError::not_found(format!("key '{id}'")));
    }
    tracing::info!(key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
