//! Why a message was not accepted. The codes are stable: they are stored in
//! `rejected_message.reason`, counted in metrics, and selected by replay.

use std::fmt;

use serde_json::{json, Value};

/// A stable rejection reason code (see `docs/design.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The body is not JSON at all (for example the original "Hello World").
    MalformedJson,
    /// JSON, but a required envelope field is missing or mistyped.
    InvalidEnvelope,
    /// `client_id` names no registered client.
    UnknownClient,
    /// No schema is registered for (`event_type`, `version`).
    UnknownEventType,
    /// The client is not subscribed to the event type.
    NotSubscribed,
    /// The payload fails the registered JSON Schema.
    SchemaViolation,
    /// Valid JSON that PostgreSQL cannot store (e.g. `\u0000` in a jsonb string).
    Unstorable,
    /// The event id was already stored with a different event type, version or
    /// payload: a reused id, not a retry (decided at commit, never by `classify`).
    ConflictingDuplicate,
}

impl Reason {
    /// Every reason, in the order of their `index`.
    pub const ALL: [Reason; 8] = [
        Reason::MalformedJson,
        Reason::InvalidEnvelope,
        Reason::UnknownClient,
        Reason::UnknownEventType,
        Reason::NotSubscribed,
        Reason::SchemaViolation,
        Reason::Unstorable,
        Reason::ConflictingDuplicate,
    ];

    /// The code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidEnvelope => "invalid_envelope",
            Reason::UnknownClient => "unknown_client",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::NotSubscribed => "not_subscribed",
            Reason::SchemaViolation => "schema_violation",
            Reason::Unstorable => "unstorable",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Position in [`Reason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Reasons that a later registration can cure (so the registry is worth a refresh,
    /// and `replay` is worth running).
    pub fn is_registry_miss(self) -> bool {
        matches!(self, Reason::UnknownClient | Reason::UnknownEventType | Reason::NotSubscribed)
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(code: &str) -> Result<Reason, String> {
        Reason::from_code(code).ok_or_else(|| {
            let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
            format!("expected one of {}", codes.join(", "))
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A reason with the detail an operator needs to fix the producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    /// Stored as `rejected_message.detail` (jsonb): `{"error": ...}`, or for schema
    /// violations `{"errors": [{"instance_path", "schema_path", "message"}]}`.
    pub detail: Value,
}

impl Rejection {
    pub fn new(reason: Reason, error: impl Into<String>) -> Self {
        Rejection { reason, detail: json!({ "error": error.into() }) }
    }
}
