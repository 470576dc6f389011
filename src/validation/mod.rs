//! Validation: every message body becomes exactly one verdict, either an accepted
//! [`Event`] for `message` or a [`Rejected`] one for `rejected_message`.
//!
//! Pure: no I/O, and nothing from the SQS or store modules, so the processor, replay,
//! the fuzzer and (later) the HTTP ingest endpoint all judge a body the same way.
//!
//! Order of checks: JSON, envelope, storability, client, event type and version,
//! subscription, schema. Storability comes before the registry so that a payload
//! PostgreSQL would refuse never reaches a batch insert.

use chrono::{DateTime, Utc};

use crate::registry::Registry;

pub mod envelope;
pub mod payload;
pub mod rejection;
mod schema;
pub mod text;

pub use envelope::{find_nul, kind_of, Envelope, Identity, MAX_ID_CHARS};
pub use payload::Payload;
pub use rejection::{Reason, Rejection};
pub use schema::{violation, Schema};
pub use text::numbers_fit_numeric;

/// An accepted event, ready for the `message` table.
#[derive(Debug, Clone)]
pub struct Event {
    pub client_id: String,
    /// The idempotency key: the producer's `event_id`, or the SQS message id.
    pub event_id: String,
    pub event_type: String,
    pub version: i32,
    /// The payload's JSON text as the producer sent it (parsed, so known to be JSON):
    /// what is stored, never re-serialised (jsonb keeps the same value whatever its
    /// spacing or key order).
    pub payload: Box<str>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A rejected message, ready for the `rejected_message` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub rejection: Rejection,
    pub identity: Identity,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Accepted(Event),
    Rejected(Rejected),
}

impl Verdict {
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Verdict::Accepted(_) => None,
            Verdict::Rejected(r) => Some(r.rejection.reason),
        }
    }
}

/// Decides what a message body becomes. Pure: no I/O, cheap enough for the poller.
pub fn classify(body: &str, sqs_message_id: &str, registry: &Registry) -> Verdict {
    let envelope = match Envelope::parse(body) {
        Ok(envelope) => envelope,
        Err((rejection, identity)) => return Verdict::Rejected(Rejected { rejection, identity }),
    };
    let reject = |rejection: Rejection| Verdict::Rejected(Rejected { rejection, identity: envelope.identity() });
    // A NUL reaches a parsed string only through the escape `\u0000` (JSON allows no raw
    // one), so a payload the one-pass reader read without it needs no search (a payload
    // serde_json reads is always searched: see `Envelope::parse`).
    if let Some(path) = envelope.storable.escaped_nul.then(|| find_nul(&envelope.payload.to_value())).flatten() {
        return reject(Rejection::new(
            Reason::Unstorable,
            format!("payload{path}: U+0000 cannot be stored in PostgreSQL jsonb"),
        ));
    }
    let schema = match registry.schema_for(&envelope.client_id, &envelope.event_type, envelope.version) {
        Ok(schema) => schema,
        Err(rejection) => return reject(rejection),
    };
    if let Some(rejection) = violation(schema, &envelope.payload) {
        return reject(rejection);
    }
    let Envelope { client_id, event_type, version, event_id, occurred_at, payload, payload_json, storable } = envelope;
    // The text as sent, unless a number in it is beyond what PostgreSQL's numeric takes
    // (serde_json reads `1e-20000` as 0.0; jsonb refuses it): then the text of what
    // was read and validated.
    let payload = match storable.unfit_number {
        false => payload_json.into(),
        true => payload.to_value().to_string().into(),
    };
    Verdict::Accepted(Event {
        client_id,
        event_id: event_id.unwrap_or_else(|| sqs_message_id.to_owned()),
        event_type,
        version,
        payload,
        occurred_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryFile;

    fn verdict(body: &str) -> Verdict {
        let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
        classify(body, "sqs-1", &registry)
    }

    #[test]
    fn legacy_message_is_keyed_by_the_sqs_message_id() {
        let Verdict::Accepted(e) = verdict(r#"{"event_type":"monitor-app","client_id":"client-1","message":"hi"}"#)
        else {
            panic!("rejected")
        };
        assert_eq!((e.event_id.as_str(), e.version), ("sqs-1", 1));
    }

    #[test]
    fn each_check_has_its_reason() {
        let cases = [
            ("Hello World", Reason::MalformedJson),
            (r#"{"client_id":"client-1"}"#, Reason::InvalidEnvelope),
            (r#"{"client_id":"nobody","event_type":"user-app","message":"x"}"#, Reason::UnknownClient),
            (r#"{"client_id":"client-1","event_type":"user-app","version":7,"message":"x"}"#, Reason::UnknownEventType),
            (r#"{"client_id":"client-3","event_type":"transaction-app","message":"x"}"#, Reason::NotSubscribed),
            (r#"{"client_id":"client-1","event_type":"user-app","version":2,"payload":{}}"#, Reason::SchemaViolation),
            (r#"{"client_id":"client-1","event_type":"user-app","message":"a\u0000b"}"#, Reason::Unstorable),
            // The same, read the two-pass way (a key repeated in the payload).
            (
                r#"{"client_id":"client-1","event_type":"user-app","version":2,"payload":{"a":1,"a":"\u0000"}}"#,
                Reason::Unstorable,
            ),
            // A NUL only serde_json's raw value reading decodes (an escaped backslash in
            // the text): still found, in a string, and in a key a violation would name.
            (
                r#"{"client_id":"client-1","event_type":"user-app","payload":{"$serde_json::private::RawValue":"\"\\u0000\""}}"#,
                Reason::Unstorable,
            ),
            (
                r#"{"client_id":"client-1","event_type":"transaction-app","version":2,
                    "payload":{"$serde_json::private::RawValue":"{\"a\\u0000\":1}"}}"#,
                Reason::Unstorable,
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(verdict(body).reason(), Some(reason), "{body}");
        }
    }

    #[test]
    fn numbers_postgres_would_refuse_are_stored_as_they_were_read() {
        let file: RegistryFile = serde_json::from_value(serde_json::json!({
            "clients": [{"id": "c"}],
            "event_types": [{"name": "t", "version": 1, "schema": {}}],
            "subscriptions": [{"client": "c", "event_type": "t"}],
        }))
        .unwrap();
        let registry = Registry::from_file(&file).unwrap();
        for (payload, stored) in [(r#"[1e-20000, 2.5]"#, "[0.0,2.5]"), (r#"{"a": 1e-9999}"#, r#"{"a": 1e-9999}"#)] {
            let body = format!(r#"{{"client_id":"c","event_type":"t","payload":{payload}}}"#);
            let Verdict::Accepted(e) = classify(&body, "sqs-1", &registry) else { panic!("rejected: {body}") };
            assert_eq!(&*e.payload, stored);
        }
    }
}
