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

pub use envelope::{find_nul, kind_of, Envelope, Identity, MAX_ID_CHARS};
pub use payload::Payload;
pub use rejection::{Reason, Rejection};
pub use schema::{violation, Schema};

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
    // one), so a body without it needs no walk of its payload.
    if let Some(path) = memchr::memmem::find(body.as_bytes(), br"\u0000")
        .is_some()
        .then(|| find_nul(&envelope.payload.to_value()))
        .flatten()
    {
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
    let Envelope { client_id, event_type, version, event_id, occurred_at, payload, payload_json } = envelope;
    // The text as sent, unless a number in it is beyond what PostgreSQL's numeric takes
    // (serde_json reads `1e-20000` as 0.0; jsonb refuses it): then the text of what
    // was read and validated.
    let payload = match numbers_fit_numeric(payload_json) {
        true => payload_json.into(),
        false => payload.to_value().to_string().into(),
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

/// Whether every number in a JSON text is one PostgreSQL's `numeric` takes as written:
/// at most 4 exponent digits and 1,000 characters (it refuses more than 16,383
/// decimal places, and exponents past about 10^9).
pub fn numbers_fit_numeric(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Strings: jumped over, past escapes.
            b'"' => match envelope::string_end(bytes, i) {
                Some(end) => i = end,
                None => break, // only an unterminated string is left
            },
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent_digits: Option<usize> = None;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    match bytes[i] {
                        b'e' | b'E' => exponent_digits = Some(0),
                        b'0'..=b'9' => {
                            if let Some(n) = exponent_digits.as_mut() {
                                *n += 1
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if i - start > 1000 || exponent_digits.is_some_and(|n| n > 4) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
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
        ];
        for (body, reason) in cases {
            assert_eq!(verdict(body).reason(), Some(reason), "{body}");
        }
    }

    #[test]
    fn numbers_postgres_would_refuse_are_stored_as_they_were_read() {
        for (number, fits) in [
            ("12.5", true),
            ("-1e-9999", true),
            ("1e-20000", false),
            ("0e99999999999", false),
            (&format!("1.{}", "0".repeat(20_000)), false),
        ] {
            assert_eq!(
                numbers_fit_numeric(&format!(r#"{{"a":[1,{number}],"s":"1e-99999 \" 1e-99999"}}"#)),
                fits,
                "{number}"
            );
        }
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
