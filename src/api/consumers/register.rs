//! Registering a consumer through the sender's own registration (`push` ones with
//! their endpoint checks, `pull` ones without an endpoint): the same start position,
//! cursor and subscriptions, and a signing secret shown once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{view, ConsumerKind, ConsumerView};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, Body, ErrorBody};
use crate::api::{client_exists, ApiContext};
use crate::delivery::consumer::{self, ConsumerEntry, Registered, Subscribed};

/// A consumer as registered (the registry file's entry, without `client`, plus `kind`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsumer {
    /// Unique within the client: letters, digits, `.`, `_`, `-`; at most 128.
    pub name: String,
    /// `push` (default) or `pull`.
    #[serde(default)]
    pub kind: Option<ConsumerKind>,
    /// `http` or `https` URL (push only).
    #[serde(default)]
    pub endpoint: String,
    /// `whsec_` + base64; generated (and shown once) when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// `EVENT_TYPE` or `EVENT_TYPE@VERSION`.
    #[schema(value_type = Vec<String>)]
    pub event_types: Vec<Subscribed>,
    /// `beginning`, `new` (default) or a position `XACT.SEQ`.
    #[serde(default = "consumer::default_start")]
    pub start: String,
    #[serde(default = "consumer::default_timeout_ms")]
    pub timeout_ms: i32,
    #[serde(default = "consumer::default_max_in_flight")]
    pub max_in_flight: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedConsumer {
    pub consumer: ConsumerView,
    /// The generated signing secret, shown only in this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// As the `consumer.name` CHECK: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: expected 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit, got '{name}'"
        )))
    }
}

/// Register a consumer.
#[utoipa::path(
    post,
    tag = "consumers",
    path = "/v1/clients/{client}/consumers",
    params(("client" = String, Path, description = "Client id")),
    request_body = NewConsumer,
    responses(
        (status = 201, description = "Registered; a generated secret is shown only now", body = CreatedConsumer),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "A producer key", body = ErrorBody),
        (status = 404, description = "No such client (or not the caller's)", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`unknown_event_type`, `invalid_request`", body = ErrorBody),
    )
)]
pub(super) async fn create_consumer(
    State(ctx): State<Arc<ApiContext>>,
    caller: Caller,
    Path(client): Path<String>,
    Body(new): Body<NewConsumer>,
) -> Result<(StatusCode, Json<CreatedConsumer>), ApiError> {
    caller.client(&client)?;
    check_name(&new.name)?;
    if new.event_types.is_empty() {
        return Err(ApiError::invalid("event_types: subscribe to at least one event type"));
    }
    let mut conn = ctx.store.pool().get().await?;
    let tx = conn.transaction().await?;
    client_exists(&*tx, &client).await?;
    let taken =
        tx.query_opt("SELECT 1 FROM consumer WHERE client_id = $1 AND name = $2", &[&client, &new.name]).await?;
    if taken.is_some() {
        return Err(ApiError::conflict(format!("consumer '{}' of client '{client}' already exists", new.name)));
    }
    let types: Vec<String> = new.event_types.iter().map(|s| s.event_type.clone()).collect();
    let versions: Vec<Option<i32>> = new.event_types.iter().map(|s| s.version).collect();
    let missing: Vec<String> = tx
        .query(
            "SELECT u.t || coalesce('@' || u.v, '') FROM UNNEST($1::text[], $2::int4[]) AS u(t, v)
             WHERE NOT EXISTS (SELECT 1 FROM event_type e WHERE e.name = u.t AND (u.v IS NULL OR e.version = u.v))",
            &[&types, &versions],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Invalid {
            code: "unknown_event_type",
            message: format!("event types not registered: {}", missing.join(", ")),
        });
    }
    let secret = register_entry(&*tx, &client, &new).await?;
    let consumer = view(&*tx, &client, &new.name).await?;
    tx.commit().await?;
    tracing::info!(client = %client, consumer = %new.name, kind = %consumer.kind, "consumer registered");
    Ok((StatusCode::CREATED, Json(CreatedConsumer { consumer, secret })))
}

/// Through the sender's own registration, for both kinds (endpoint checks and all).
async fn register_entry(tx: &impl GenericClient, client: &str, new: &NewConsumer) -> Result<Option<String>, ApiError> {
    let entry = ConsumerEntry {
        kind: match new.kind.unwrap_or(ConsumerKind::Push) {
            ConsumerKind::Push => consumer::Kind::Push,
            ConsumerKind::Pull => consumer::Kind::Pull,
        },
        client: client.to_owned(),
        name: new.name.clone(),
        endpoint: new.endpoint.clone(),
        secret: new.secret.clone(),
        event_types: new.event_types.clone(),
        start: new.start.clone(),
        timeout_ms: new.timeout_ms,
        max_in_flight: new.max_in_flight,
    };
    match consumer::register(tx, &entry, true).await {
        Ok(Registered::Created { secret, .. }) => Ok(secret),
        Ok(_) => Err(ApiError::conflict(format!("consumer '{}' of client '{client}' already exists", new.name))),
        Err(e) if e.downcast_ref::<tokio_postgres::Error>().is_some() => Err(ApiError::from(e)),
        Err(e) if format!("{e:#}").contains("(23505)") => {
            Err(ApiError::conflict(format!("consumer '{}' of client '{client}' already exists", new.name)))
        }
        Err(e) => Err(ApiError::invalid(format!("{e:#}"))),
    }
}
