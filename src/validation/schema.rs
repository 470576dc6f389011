//! JSON Schemas: compiled once per (event type, version), and the
//! `schema_violation` rejection that lists where and why a payload fails.

use std::fmt;

use serde_json::{json, Value};

use super::payload::{Payload, PayloadJson};
use super::rejection::{Reason, Rejection};

/// A compiled schema for one (event type, version).
pub struct Schema {
    /// The schema document, kept to tell whether a reload changed it.
    pub document: Value,
    /// Validates payloads as [`Payload`]s, read in place from the body.
    pub validator: jsonschema::Validator<PayloadJson>,
}

impl Schema {
    /// Compiles a schema, after checking it against its meta-schema. Formats
    /// (`date-time`, `email`, `uuid`, ...) are asserted, as producers expect.
    pub fn compile(document: Value) -> anyhow::Result<Schema> {
        jsonschema::meta::validate(&document).map_err(|e| anyhow::anyhow!("not a valid JSON Schema: {e}"))?;
        let validator = jsonschema::options_for::<PayloadJson>()
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| anyhow::anyhow!("cannot compile the schema: {e}"))?;
        Ok(Schema { document, validator })
    }
}

/// A `schema_violation` rejection listing where and why the payload fails.
pub fn violation(schema: &Schema, payload: &Payload) -> Option<Rejection> {
    const MAX_ERRORS: usize = 20;
    const MAX_MESSAGE_CHARS: usize = 300;
    const MAX_QUOTED_BYTES: usize = 64;
    // The validator's fast path: no error values are built for the payloads that pass.
    if schema.validator.is_valid(payload.root()) {
        return None;
    }
    let errors = schema.validator.iter_errors(payload.root());
    let listed: Vec<Value> = errors
        .take(MAX_ERRORS)
        .map(|e| {
            let message = match &**e.instance() {
                // Quoting a long string would escape all of it before the cut, and cut
                // off why it failed: its start stands in for it.
                Value::String(s) if s.len() > MAX_MESSAGE_CHARS => {
                    let quoted = Value::String(format!("{}…", head(s, MAX_QUOTED_BYTES))).to_string();
                    shortened(&e.masked_with(quoted), MAX_MESSAGE_CHARS)
                }
                _ => shortened(&e, MAX_MESSAGE_CHARS),
            };
            json!({
                "instance_path": e.instance_path().to_string(),
                "schema_path": e.schema_path().to_string(),
                "message": message,
            })
        })
        .collect();
    Some(Rejection { reason: Reason::SchemaViolation, detail: json!({ "errors": listed }) })
}

/// The first `limit` bytes of `value`'s text, cut at a character boundary and ended
/// with '…' when there was more. Messages quote the offending value, which may be the
/// whole payload: formatting stops at the limit rather than writing it all out first.
fn shortened(value: &impl fmt::Display, limit: usize) -> String {
    struct Bounded {
        text: String,
        limit: usize,
    }
    impl fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = self.limit - self.text.len();
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            self.text.push_str(head(s, room));
            Err(fmt::Error) // stops the formatting
        }
    }
    let mut bounded = Bounded { text: String::new(), limit };
    if fmt::write(&mut bounded, format_args!("{value}")).is_err() {
        bounded.text.push('…');
    }
    bounded.text
}

/// The longest start of `s` within `max` bytes that ends on a character boundary.
fn head(s: &str, max: usize) -> &str {
    let cut = (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryFile};

    #[test]
    fn violations_list_paths_and_formats_are_asserted() {
        let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
        let schema = registry.schema_for("client-1", "user-app", 2).unwrap();
        let ok = json!({"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"});
        assert!(violation(schema, &Payload::from_value(&ok)).is_none());
        let bad = json!({"user_id": "usr-0123abcd", "action": "fly", "at": "not a time"});
        let detail = violation(schema, &Payload::from_value(&bad)).unwrap().detail;
        let paths: Vec<&str> =
            detail["errors"].as_array().unwrap().iter().map(|e| e["instance_path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"/action") && paths.contains(&"/at"), "{detail}");
    }

    #[test]
    fn messages_quoting_a_huge_value_are_cut_short() {
        let schema = Schema::compile(json!({"type": "string"})).unwrap();
        let huge = json!({ "text": "é".repeat(10_000) });
        let detail = violation(&schema, &Payload::from_value(&huge)).unwrap().detail;
        let message = detail["errors"][0]["message"].as_str().unwrap();
        assert!(message.starts_with(r#"{"text":"éé"#) && message.ends_with('…'), "{message}");
        assert!(message.len() <= 300 + '…'.len_utf8(), "{} bytes", message.len());
        // A long string is quoted by its start, and the reason is kept.
        let schema = Schema::compile(json!({"type": "object"})).unwrap();
        let detail = violation(&schema, &Payload::from_value(&json!("x".repeat(100_000)))).unwrap().detail;
        let message = detail["errors"][0]["message"].as_str().unwrap();
        assert_eq!(message, format!(r#""{}…" is not of type "object""#, "x".repeat(64)));
        assert_eq!(shortened(&"short", 300), "short", "a message within the limit is kept whole");
        assert_eq!(shortened(&"abcdef", 6), "abcdef", "exactly at the limit: no ellipsis");
        assert_eq!(shortened(&"abcdefg", 6), "abcdef…");
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(Schema::compile(json!({"type": "no-such-type"})).is_err());
        assert!(Schema::compile(json!({"$ref": "https://example.com/remote.json"})).is_err());
    }
}
