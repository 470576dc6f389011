//! The envelope every SQS message body carries, parsed without trusting anything in it.
//!
//! One pass over the body ([`text::Reader`]) checks it is JSON and reads the envelope's
//! fields, the payload's document (for validation), the payload's JSON text as it was
//! sent (what the store writes, so it is never re-serialised) and what storing it
//! needs to know. Bodies that pass declines (anything unusual, every error among
//! them) are read by serde_json in two passes, which tell why: "not JSON"
//! (`malformed_json`) and "JSON of the wrong shape" (`invalid_envelope`) are told
//! apart, and every field problem is reported at once rather than the first one only.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::payload::Payload;
use super::rejection::{Reason, Rejection};
use super::text::{self, Reader, Storable};

/// Longest accepted `client_id`, `event_type` and `event_id`.
pub const MAX_ID_CHARS: usize = 128;

/// A well-formed event, not yet checked against the registry.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub client_id: String,
    pub event_type: String,
    /// Schema version of the payload; 1 when absent.
    pub version: i32,
    /// Producer-assigned idempotency key; `None` means the SQS message id is the key.
    pub event_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// `payload`, or the legacy string `message` of the original producers, parsed
    /// (borrowing from the body) for validation.
    pub payload: Payload<'a>,
    /// The same payload as its JSON text in the body.
    pub payload_json: &'a str,
    /// What storing that text needs to know.
    pub storable: Storable,
}

/// What could be read of an envelope, kept with a rejection so operators (and
/// `replay`) can find rejected events by tenant and key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub client_id: Option<String>,
    pub event_type: Option<String>,
    pub version: Option<i32>,
    pub event_id: Option<String>,
}

/// The envelope's fields as found in the body: present (even as `null`) or absent.
/// Any other member is skipped; a member given twice makes the envelope invalid, as
/// two readers could disagree on which one counts. `P` is how the payload is read:
/// kept as text (`&RawValue`) by serde_json, or parsed with its text ([`Read`]) by the
/// one-pass [`read`].
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
struct Members<P> {
    #[serde(default, deserialize_with = "present")]
    client_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    event_type: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    event_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    version: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    occurred_at: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<P>,
    #[serde(default, deserialize_with = "present")]
    message: Option<P>,
}

/// A member that is there, `null` included (`Option`'s own impl reads `null` as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A payload as read: parsed, its text, and what storing it needs to know.
type Read<'a> = (Payload<'a>, &'a str, Storable);

/// The common case in one pass of [`Reader`], which checks the body is JSON as it goes:
/// keys without escapes, each given once, and the envelope's fields strings, `null`
/// or numbers. `None` for anything else, which serde_json then reads.
fn read(body: &str) -> Option<Members<Read<'_>>> {
    let mut members = Members {
        client_id: None,
        event_type: None,
        event_id: None,
        version: None,
        occurred_at: None,
        payload: None,
        message: None,
    };
    let mut reader = Reader::new(body);
    reader.eat(b'{')?;
    if reader.peek()? == b'}' {
        reader.at += 1;
    } else {
        loop {
            if reader.peek()? != b'"' {
                return None;
            }
            let Cow::Borrowed(key) = reader.string()? else { return None };
            reader.eat(b':')?;
            match key {
                "client_id" => field(&mut reader, &mut members.client_id)?,
                "event_type" => field(&mut reader, &mut members.event_type)?,
                "event_id" => field(&mut reader, &mut members.event_id)?,
                "version" => field(&mut reader, &mut members.version)?,
                "occurred_at" => field(&mut reader, &mut members.occurred_at)?,
                "payload" => payload(&mut reader, &mut members.payload)?,
                "message" => payload(&mut reader, &mut members.message)?,
                // Any other member is skipped, read to check it is JSON.
                _ => drop(Payload::read(&mut reader)?),
            }
            match reader.peek()? {
                b',' => reader.at += 1,
                b'}' => {
                    reader.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    reader.peek().is_none().then_some(members)
}

/// An envelope field: a string, `null` or a number, given once.
fn field(reader: &mut Reader, member: &mut Option<Value>) -> Option<()> {
    let value = match reader.peek()? {
        b'"' => Value::String(reader.string()?.into_owned()),
        b'n' => reader.literal(b"null").map(|()| Value::Null)?,
        b'-' | b'0'..=b'9' => Value::Number(text::number(reader.number()?)?),
        _ => return None,
    };
    member.replace(value).is_none().then_some(())
}

/// The payload (or the legacy `message`), given once: parsed, and its text.
fn payload<'a>(reader: &mut Reader<'a>, member: &mut Option<Read<'a>>) -> Option<()> {
    reader.peek()?;
    let (start, seen) = (reader.at, std::mem::take(&mut reader.seen));
    let payload = Payload::read(reader)?;
    let storable = std::mem::replace(&mut reader.seen, seen);
    let read = (payload, reader.text().get(start..reader.at)?, storable);
    member.replace(read).is_none().then_some(())
}

fn malformed(error: impl std::fmt::Display, identity: Identity) -> (Rejection, Identity) {
    (Rejection::new(Reason::MalformedJson, format!("not JSON: {error}")), identity)
}

fn invalid(errors: Vec<String>, identity: Identity) -> (Rejection, Identity) {
    (Rejection { reason: Reason::InvalidEnvelope, detail: json!({ "errors": errors }) }, identity)
}

impl<'a> Envelope<'a> {
    /// Parses a message body; on failure returns the rejection and whatever identity
    /// fields were well-formed.
    pub fn parse(body: &'a str) -> Result<Envelope<'a>, (Rejection, Identity)> {
        match read(body) {
            Some(members) => {
                let (fields, payload) = members.split();
                fields.envelope(payload)
            }
            None => Envelope::parse_by_serde(body),
        }
    }

    /// What [`read`] declines: serde_json reads it.
    fn parse_by_serde(body: &'a str) -> Result<Envelope<'a>, (Rejection, Identity)> {
        if !body.trim_start().starts_with('{') {
            // Not an object: only the kind of JSON it is (if any) goes into the rejection.
            return Err(match serde_json::from_str::<Value>(body) {
                Err(e) => malformed(e, Identity::default()),
                Ok(value) => invalid(
                    vec![format!("the body must be a JSON object, got {}", kind_of(&value))],
                    Identity::default(),
                ),
            });
        }
        // Two passes: they tell a syntax error from a member given twice, keep the
        // envelope's fields when only the payload is not JSON, and read the payload as
        // `Value` does.
        let members: Members<&'a RawValue> = serde_json::from_str(body).map_err(|e| match e.classify() {
            // A member given twice stops the read there: the rest must still be JSON.
            serde_json::error::Category::Data => match serde_json::from_str::<serde::de::IgnoredAny>(body) {
                Ok(_) => invalid(vec![e.to_string()], Identity::default()),
                Err(syntax) => malformed(syntax, Identity::default()),
            },
            _ => malformed(e, Identity::default()),
        })?;
        let (fields, payload) = members.split();
        let payload = match payload {
            None => None,
            Some((json, name)) => match serde_json::from_str::<Value>(json.get()) {
                Ok(value) => {
                    // `Value` reads an object keyed by serde_json's raw value marker as the
                    // JSON text in its string, whose decoded escapes the reader does not
                    // see: this rare reading always has its payload searched for U+0000.
                    let storable = Storable { escaped_nul: true, ..text::storable(json.get()) };
                    Some(((Payload::from_value(&value), json.get(), storable), name))
                }
                Err(e) => return Err(malformed(format_args!("{name}: {e}"), fields.identity)),
            },
        };
        fields.envelope(payload)
    }

    pub fn identity(&self) -> Identity {
        Identity {
            client_id: Some(self.client_id.clone()),
            event_type: Some(self.event_type.clone()),
            version: Some(self.version),
            event_id: self.event_id.clone(),
        }
    }
}

/// The envelope's fields other than the payload: those well-formed, and what is wrong
/// with the others.
struct Fields {
    identity: Identity,
    occurred_at: Option<DateTime<Utc>>,
    errors: Vec<String>,
}

impl<P> Members<P> {
    /// The fields, checked, and the payload member (`payload`, else the legacy
    /// `message`) with its name.
    fn split(self) -> (Fields, Option<(P, &'static str)>) {
        let mut errors = Vec::new();
        let identity = Identity {
            client_id: id_field(self.client_id, "client_id", true, &mut errors),
            event_type: id_field(self.event_type, "event_type", true, &mut errors),
            event_id: id_field(self.event_id, "event_id", false, &mut errors),
            version: version_field(self.version, &mut errors),
        };
        let occurred_at = occurred_at_field(self.occurred_at, &mut errors);
        let payload = match (self.payload, self.message) {
            (Some(payload), _) => Some((payload, "payload")),
            (None, Some(message)) => Some((message, "message")),
            (None, None) => None,
        };
        (Fields { identity, occurred_at, errors }, payload)
    }
}

impl Fields {
    /// The envelope, when every field and the payload (parsed, its text, what storing
    /// it needs to know, and the member it came from) are well-formed.
    fn envelope<'a>(mut self, payload: Option<(Read<'a>, &str)>) -> Result<Envelope<'a>, (Rejection, Identity)> {
        let payload = match payload {
            Some(((message, _, _), "message")) if !message.is_string() => {
                self.errors.push(format!("message: expected a string, got {}", kind_of(&message.to_value())));
                None
            }
            Some((read, _)) => Some(read),
            None => {
                self.errors.push("payload: required (or the legacy string `message`)".to_owned());
                None
            }
        };
        let Identity { client_id, event_type, version, event_id } = self.identity;
        match (client_id, event_type, version, payload) {
            (Some(client_id), Some(event_type), Some(version), Some((payload, payload_json, storable)))
                if self.errors.is_empty() =>
            {
                Ok(Envelope {
                    client_id,
                    event_type,
                    version,
                    event_id,
                    occurred_at: self.occurred_at,
                    payload,
                    payload_json,
                    storable,
                })
            }
            (client_id, event_type, version, _) => {
                Err(invalid(self.errors, Identity { client_id, event_type, version, event_id }))
            }
        }
    }
}

/// A string identifier: 1..=128 characters and no NUL (text columns refuse it).
fn id_field(member: Option<Value>, name: &str, required: bool, errors: &mut Vec<String>) -> Option<String> {
    match member {
        None | Some(Value::Null) if !required => None,
        None | Some(Value::Null) => {
            errors.push(format!("{name}: required"));
            None
        }
        // (No more characters than bytes: only a long one is counted.)
        Some(Value::String(s)) if s.is_empty() || (s.len() > MAX_ID_CHARS && s.chars().count() > MAX_ID_CHARS) => {
            errors.push(format!("{name}: expected 1 to {MAX_ID_CHARS} characters, got {}", s.chars().count()));
            None
        }
        Some(Value::String(s)) if s.contains('\0') => {
            errors.push(format!("{name}: must not contain U+0000"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(format!("{name}: expected a string, got {}", kind_of(&other)));
            None
        }
    }
}

fn version_field(member: Option<Value>, errors: &mut Vec<String>) -> Option<i32> {
    match &member {
        None | Some(Value::Null) => Some(1),
        Some(Value::Number(n)) => match n.as_i64().and_then(|v| i32::try_from(v).ok()) {
            Some(v) if v >= 1 => Some(v),
            _ => {
                errors.push(format!("version: expected an integer >= 1, got {n}"));
                None
            }
        },
        Some(other) => {
            errors.push(format!("version: expected an integer >= 1, got {}", kind_of(other)));
            None
        }
    }
}

fn occurred_at_field(member: Option<Value>, errors: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match &member {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                errors.push(format!("occurred_at: expected an RFC 3339 timestamp ({e})"));
                None
            }
        },
        Some(other) => {
            errors.push(format!("occurred_at: expected an RFC 3339 timestamp, got {}", kind_of(other)));
            None
        }
    }
}

/// The JSON type name of a value, for error messages that never echo input.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Where a value holds U+0000 in a string or key (jsonb refuses it), as a JSON pointer.
pub fn find_nul(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('\0', "\\u0000").replace('~', "~0").replace('/', "~1"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> Reason {
        Envelope::parse(body).unwrap_err().0.reason
    }

    #[test]
    fn parses_a_full_envelope() {
        let e = Envelope::parse(
            r#"{"event_id":"e1","client_id":"c","event_type":"t","version":2,
                "occurred_at":"2026-11-22T10:00:00+01:00","payload":{"a":1},"extra":true}"#,
        )
        .unwrap();
        assert_eq!(e.event_id.as_deref(), Some("e1"));
        assert_eq!(e.version, 2);
        assert_eq!(e.occurred_at.unwrap().to_rfc3339(), "2026-11-22T09:00:00+00:00");
        assert_eq!(e.payload.to_value(), json!({"a": 1}));
    }

    #[test]
    fn accepts_the_original_producers_shape() {
        let e = Envelope::parse(r#"{"event_type":"monitor-app","client_id":"client-1","message":"cpu high"}"#).unwrap();
        assert_eq!((e.version, e.event_id, e.payload.to_value()), (1, None, json!("cpu high")));
    }

    #[test]
    fn tells_malformed_json_from_a_bad_envelope() {
        assert_eq!(reason("Hello World"), Reason::MalformedJson);
        assert_eq!(reason("[1,2]"), Reason::InvalidEnvelope);
        assert_eq!(reason(r#"{"client_id":"c","payload":{}}"#), Reason::InvalidEnvelope);
        assert_eq!(reason(r#"{"client_id":"c","event_type":"t","version":0,"payload":{}}"#), Reason::InvalidEnvelope);
        assert_eq!(reason(r#"{"client_id":"c","event_type":"t","version":1.5,"payload":{}}"#), Reason::InvalidEnvelope);
        assert_eq!(reason(r#"{"client_id":7,"event_type":"t","payload":{}}"#), Reason::InvalidEnvelope);
        assert_eq!(reason(r#"{"client_id":"c","event_type":"t","message":{}}"#), Reason::InvalidEnvelope);
        assert_eq!(
            reason(r#"{"client_id":"c","event_type":"t","occurred_at":"yesterday","payload":1}"#),
            Reason::InvalidEnvelope
        );
        assert_eq!(reason(r#"{"client_id":"c\u0000","event_type":"t","payload":1}"#), Reason::InvalidEnvelope);
    }

    #[test]
    fn reports_every_field_problem_and_keeps_what_was_readable() {
        let (rejection, identity) = Envelope::parse(r#"{"client_id":"c","event_type":5,"event_id":""}"#).unwrap_err();
        assert_eq!(rejection.detail["errors"].as_array().unwrap().len(), 3);
        assert_eq!(identity.client_id.as_deref(), Some("c"));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let body = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(reason(&body), Reason::MalformedJson);
        // Inside the payload, with the envelope's fields kept for the rejection.
        let nested = "[".repeat(10_000) + &"]".repeat(10_000);
        let (rejection, identity) =
            Envelope::parse(&format!(r#"{{"client_id":"c","event_type":"t","payload":{nested}}}"#)).unwrap_err();
        assert_eq!((rejection.reason, identity.client_id.as_deref()), (Reason::MalformedJson, Some("c")));
    }

    #[test]
    fn keeps_the_payload_as_sent_and_reads_null_as_a_value() {
        let e = Envelope::parse(r#"{"client_id":"c","event_type":"t","payload": {"b":1, "a":[1, 2.50]} }"#).unwrap();
        assert_eq!(e.payload_json, r#"{"b":1, "a":[1, 2.50]}"#);
        assert_eq!(e.payload.to_value(), json!({"a": [1, 2.5], "b": 1}));
        let e = Envelope::parse(r#"{"client_id":"c","event_type":"t","payload":null,"version":null}"#).unwrap();
        assert_eq!((e.payload.to_value(), e.payload_json, e.version), (Value::Null, "null", 1));
    }

    #[test]
    fn a_member_given_twice_is_an_invalid_envelope() {
        let (rejection, _) =
            Envelope::parse(r#"{"client_id":"a","event_type":"t","client_id":"b","payload":{}}"#).unwrap_err();
        assert_eq!(rejection.reason, Reason::InvalidEnvelope);
        assert!(
            rejection.detail["errors"][0].as_str().unwrap().contains("duplicate field `client_id`"),
            "{rejection:?}"
        );
        // Not JSON after the repeated member: malformed, as without the repetition.
        assert_eq!(reason(r#"{"client_id":"a","client_id" oops"#), Reason::MalformedJson);
        // Members the envelope does not read may repeat, as before.
        assert!(Envelope::parse(r#"{"client_id":"a","event_type":"t","x":1,"x":2,"payload":{}}"#).is_ok());
    }

    #[test]
    fn a_payload_key_written_with_escapes_is_read_the_two_pass_way() {
        let e = Envelope::parse(r#"{"client_id":"c","event_type":"t","pay\u006coad": {"a":1}}"#).unwrap();
        assert_eq!((e.payload_json, e.payload.to_value()), (r#"{"a":1}"#, json!({"a": 1})));
    }

    #[test]
    fn finds_nul_in_nested_strings_and_keys() {
        assert_eq!(find_nul(&json!({"a": [1, {"b": "x\u{0}"}]})).as_deref(), Some("/a/1/b"));
        assert_eq!(find_nul(&json!({"k\u{0}": 1})).as_deref(), Some("/k\\u0000"));
        assert_eq!(find_nul(&json!({"a": "fine"})), None);
    }

    /// What an envelope reads as, for comparing two readings: its fields, the payload's
    /// value and text, and whether a NUL the payload holds was seen.
    fn summary(parsed: Result<Envelope, (Rejection, Identity)>) -> String {
        match parsed {
            Ok(e) => {
                let value = e.payload.to_value();
                let nul_seen = e.storable.escaped_nul || find_nul(&value).is_none();
                format!(
                    "{} {} {} {:?} {:?} {value} {} {} {nul_seen}",
                    e.client_id,
                    e.event_type,
                    e.version,
                    e.event_id,
                    e.occurred_at,
                    e.payload_json,
                    e.storable.unfit_number
                )
            }
            Err(rejected) => format!("{rejected:?}"),
        }
    }

    /// The one-pass reader accepts only JSON, and reads what it accepts as serde_json
    /// does: generated bodies of both workloads (valid and of every bad kind), edge
    /// cases, and each of them changed by one character at every place (a deletion, an
    /// insertion, a replacement).
    #[test]
    fn the_one_pass_reading_is_the_serde_reading() {
        use crate::producers::generator::{Generator, Invalid, Mix};
        use crate::producers::templates::EventsFile;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deployments/bench");
        let mut bodies: Vec<String> = Vec::new();
        for events in [EventsFile::demo(), EventsFile::read(&root.join("formats-events.json")).unwrap()] {
            let mut generator = Generator::new(events, Mix::default(), Some(5), Some(11));
            bodies.extend((0..4).map(|_| generator.valid().body));
            bodies.extend(Invalid::ALL.into_iter().map(|kind| generator.invalid(kind).body));
        }
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let edge = [
            r#"{"client_id":"c","event_type":"t","payload":{}}"#.to_owned(),
            r#" { "client_id" : "c" , "event_type":"t","version":3,"event_id":null,"payload":[ [] , {} , [{}] ] } "#
                .into(),
            r#"{"client_id":"c","event_type":"t","payload":{"a":"\u0000","b":"\\u0000","\u0000":1}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"s":"\ud83e\udd80 é \" \\ \/ \b\f\n\r\t"}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":["\ud800"]}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":[0,-0,-0.0,1e5,1E-5,-12.5e+3,123456789012345678901,1e400]}"#
                .into(),
            r#"{"client_id":"c","event_type":"t","payload":[1e-20000,true,false,null]}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"a":1,"a":2}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"$serde_json::private::RawValue":"[1]"}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":1,"payload":2}"#.into(),
            r#"{"client_id":"c","client_id":"d","event_type":"t","payload":1}"#.into(),
            r#"{"client\u005fid":"c","event_type":"t","payload":1}"#.into(),
            r#"{"client_id":"c\u0000","event_type":"t","version":"2","payload":1,"message":{"x":[1]}}"#.into(),
            r#"{"client_id":"c","event_type":"t","occurred_at":"2026-11-26T10:00:00Z","message":"m","x":{"y":[]}}"#
                .into(),
            r#"{"client_id":true,"event_type":"t","payload":1}"#.into(),
            r#"{"client_id":"c","event_type":"t","version":1.0,"payload":1} x"#.into(),
            r#"{}"#.into(),
            format!(r#"{{"client_id":"c","event_type":"t","payload":{}}}"#, nested(63)),
            format!(r#"{{"client_id":"c","event_type":"t","payload":{}}}"#, nested(64)),
            format!(r#"{{"client_id":"c","event_type":"t","payload":{}}}"#, nested(65)),
            format!(r#"{{"client_id":"c","event_type":"t","payload":{}}}"#, nested(130)),
            format!(r#"{{"client_id":"c","event_type":"t","x":{},"payload":1}}"#, nested(65)),
            format!(r#"{{"client_id":"c","event_type":"t","message":{}}}"#, nested(65)),
            r#"{"client_id":"c","event_type":"t","payload":[999999999999999999,1000000000000000000,
                -999999999999999999,-9223372036854775808,18446744073709551615,18446744073709551616]}"#
                .into(),
            r#"{"x":1e-20000,"y":"\u0000","client_id":"c","event_type":"t","payload":{"a":"b"}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"a":{"$serde_json::private::RawValue":"[1]"}}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"a":1,"$serde_json::private::RawValue":"[1]"}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"$serde_json::private::RawValu\u0065":"[1]"}}"#.into(),
            r#"{"client_id":"c","event_type":"t","payload":{"a":1,"\u0061":2}}"#.into(),
            format!(
                r#"{{"client_id":"c","event_type":"t","payload":{{{},"k3":0}}}}"#,
                (0..20).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",")
            ),
            format!(r#"{{"client_id":"c","event_type":"t","payload":["{}","é{}"]}}"#, "x".repeat(150), "y".repeat(90)),
        ];
        bodies.extend(edge);
        let bytes = [
            "\"", "\\", "{", "}", "[", "]", ",", ":", "0", "1", "-", "+", ".", "e", "E", " ", "\t", "\n", "\r",
            "\u{b}", "\u{c}", "\u{a0}", "\0", "\u{1}", "\u{1f}", "\u{7f}", "u", "n", "t", "f", "l", "a", "b", "/", "é",
        ];
        let mut read = 0;
        let mut compare = |body: &str| {
            if super::read(body).is_some() {
                read += 1;
            }
            assert_eq!(summary(Envelope::parse(body)), summary(Envelope::parse_by_serde(body)), "{body}");
        };
        for body in &bodies {
            compare(body);
            if body.len() > 1024 {
                continue; // (the oversized kind: read whole, not changed at every byte)
            }
            for at in (0..=body.len()).filter(|&at| body.is_char_boundary(at)) {
                if let Some(next) = body[at..].chars().next() {
                    compare(&format!("{}{}", &body[..at], &body[at + next.len_utf8()..]));
                    for b in bytes {
                        compare(&format!("{}{b}{}", &body[..at], &body[at + next.len_utf8()..]));
                    }
                }
                for b in bytes {
                    compare(&format!("{}{b}{}", &body[..at], &body[at..]));
                }
            }
        }
        assert!(read > 10_000, "the reader accepted few enough bodies to prove little: {read}");
    }
}
