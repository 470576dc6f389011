//! The whole registry as one document: producers, clients, event types with their
//! schemas, subscriptions and consumers, in the format `processor registry apply`
//! takes (a backup, or the start of a registry file).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::ApiContext;
use crate::registry::RegistryFile;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/v1/registry", get(export_registry))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Include the consumers' signing secrets (a backup that can rebuild them).
    #[serde(default)]
    pub with_secrets: bool,
}

/// Export the registry (admin).
#[utoipa::path(
    get,
    path = "/v1/registry",
    params(ExportQuery),
    responses(
        (status = 200, description = "A registry file, as `processor registry apply` takes it", body = serde_json::Value),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
    )
)]
pub(super) async fn export_registry(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Query(query): Query<ExportQuery>,
) -> Result<Json<RegistryFile>, ApiError> {
    caller.admin()?;
    let conn = ctx.store.pool().get().await?;
    Ok(Json(RegistryFile::export(&**conn, query.with_secrets).await?))
}
