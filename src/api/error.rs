//! Every error the API answers with, in one enum mapped to status codes in one
//! [`IntoResponse`]: `{"error": {"code": "stable_code", "message": "...", "detail": ...}}`.
//! The codes are stable; clients match on them, never on messages.
//!
//! Also [`Body`], the JSON request body extractor, whose failures are such errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::describe;
use crate::validation::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no key, a malformed one, an unknown or revoked one.
    #[error("a valid API key is required: `Authorization: Bearer <key>`")]
    Unauthenticated,
    /// 403: the key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing, or one that belongs to another tenant (the same answer).
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409: `conflict`, `stale_version`, `schema_immutable`.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 422: well-formed but unacceptable: `invalid_request`, `invalid_schema`,
    /// `unknown_producer`, `unknown_client`, `unknown_event_type`.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 400: `bad_request`, `malformed_json`, `queue_refused`.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 400: an event the processor would reject; the code is its rejection reason.
    #[error("{message}")]
    Rejected { code: &'static str, message: String, detail: Value },
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 503: the request took longer than API_REQUEST_TIMEOUT_SECS.
    #[error("the request timed out")]
    Timeout,
    /// 503: SQS did not take the event.
    #[error("the queue did not take the event: {0}")]
    QueueUnavailable(String),
    /// 503: no database connection, or the database is shutting down.
    #[error("the database is unavailable")]
    DatabaseUnavailable(String),
    /// 503 from `/readyz`.
    #[error("not ready: {0}")]
    NotReady(String),
    /// 500: a bug or an unexpected database answer; logged, never shown.
    #[error("internal error")]
    Internal(String),
    /// A plain-text error from the framework (an unparsable path or query), made JSON.
    #[error("{message}")]
    Other { status: StatusCode, code: &'static str, message: String },
}

impl ApiError {
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid { code: "invalid_request", message: message.into() }
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::Conflict { code: "conflict", message: message.into() }
    }

    /// An event the processor would reject, with the processor's reason and detail.
    pub fn rejected(rejection: &Rejection) -> ApiError {
        ApiError::Rejected {
            code: rejection.reason.code(),
            message: summary(rejection),
            detail: rejection.detail.clone(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { .. } | ApiError::Rejected { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout
            | ApiError::QueueUnavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Other { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. }
            | ApiError::Invalid { code, .. }
            | ApiError::BadRequest { code, .. }
            | ApiError::Rejected { code, .. }
            | ApiError::Other { code, .. } => *code,
            ApiError::TooLarge(_) => "too_large",
            ApiError::Timeout => "timeout",
            ApiError::QueueUnavailable(_) => "queue_unavailable",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// A framework error response (plain text) as one of ours.
    pub fn from_status(status: StatusCode, text: String) -> ApiError {
        let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(message),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid(message),
            s if s.is_server_error() => ApiError::Other { status, code: "internal_error", message },
            _ => ApiError::Other { status, code: "bad_request", message },
        }
    }

    /// The JSON body of this error (also used per entry by the batch endpoint).
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_owned(),
            message: self.to_string(),
            detail: match self {
                ApiError::Rejected { detail, .. } => Some(detail.clone()),
                _ => None,
            },
        }
    }
}

/// A one-line account of a rejection, from its detail.
fn summary(rejection: &Rejection) -> String {
    let detail = &rejection.detail;
    if let Some(error) = detail.get("error").and_then(Value::as_str) {
        return error.to_owned();
    }
    let problems: Vec<String> = detail
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .take(3)
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => {
                        let at = other.get("instance_path").and_then(Value::as_str).unwrap_or("");
                        let message = other.get("message").and_then(Value::as_str).unwrap_or("invalid");
                        if at.is_empty() {
                            message.to_owned()
                        } else {
                            format!("{at}: {message}")
                        }
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if problems.is_empty() {
        format!("the event was rejected: {}", rejection.reason)
    } else {
        problems.join("; ")
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthenticated`, `forbidden`, `not_found`, `conflict`, a rejection reason, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// For rejected events: the processor's detail (`{"error"}` or `{"errors": [...]}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::DatabaseUnavailable(cause) => tracing::warn!(error = %cause, "database unavailable"),
            ApiError::QueueUnavailable(cause) => tracing::warn!(error = %cause, "queue unavailable"),
            _ => {}
        }
        (self.status(), Json(ErrorBody { error: self.detail() })).into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        let transient = match e.code() {
            // Connection exceptions, operator intervention (shutdown), resources,
            // serialization failures and deadlocks: worth retrying.
            Some(code) => ["08", "57", "53", "40"].iter().any(|class| code.code().starts_with(class)),
            None => true,
        };
        if transient {
            ApiError::DatabaseUnavailable(describe(&e))
        } else {
            ApiError::Internal(describe(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        ApiError::DatabaseUnavailable(e.to_string())
    }
}

impl From<crate::sqs::QueueError> for ApiError {
    fn from(e: crate::sqs::QueueError) -> ApiError {
        ApiError::QueueUnavailable(e.to_string())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        match e.downcast::<tokio_postgres::Error>() {
            Ok(db) => ApiError::from(db),
            Err(e) => ApiError::Internal(format!("{e:#}")),
        }
    }
}

/// A JSON request body. Unlike `axum::Json` it takes any content type, and its
/// failures are [`ApiError`]s: 400 `malformed_json` for text that is not JSON, 422
/// `invalid_request` for JSON of the wrong shape, 413 `too_large`.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("the request body is too large".to_owned())
            } else {
                ApiError::BadRequest { code: "bad_request", message: rejection.body_text() }
            }
        })?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses a JSON request body, telling syntax (400) from shape (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("request body: {e}")),
        _ => ApiError::BadRequest { code: "malformed_json", message: format!("request body is not JSON: {e}") },
    })
}

/// Whether a response already carries a JSON body.
pub fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Reason;

    #[test]
    fn rejections_keep_the_processor_reason_and_detail() {
        let error = ApiError::rejected(&Rejection::new(Reason::UnknownClient, "client 'x' is not registered"));
        assert_eq!((error.status(), error.code()), (StatusCode::BAD_REQUEST, "unknown_client"));
        let detail = error.detail();
        assert_eq!(detail.message, "client 'x' is not registered");
        assert_eq!(detail.detail.unwrap()["error"], "client 'x' is not registered");
    }

    #[test]
    fn bodies_tell_syntax_from_shape() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        assert_eq!(parse_json::<Named>(b"{").unwrap_err().code(), "malformed_json");
        assert_eq!(parse_json::<Named>(b"{\"name\": 1}").unwrap_err().status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(parse_json::<Named>(b"{\"name\": \"a\"}").unwrap().name, "a");
    }
}
