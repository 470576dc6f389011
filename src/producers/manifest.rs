//! The manifest: one JSON line per event SQS acknowledged, with the outcome the
//! processor must reach. It is the ground truth `verify` checks the database against.

use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::validation::Reason;

/// What the processor must make of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// One row in `message`.
    Stored,
    /// A re-send of an `event_id` already sent: absorbed by the row of the original.
    Duplicate,
    /// One row in `rejected_message` with this reason.
    Rejected(Reason),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Stored => f.write_str("stored"),
            Expect::Duplicate => f.write_str("duplicate"),
            Expect::Rejected(reason) => write!(f, "rejected:{reason}"),
        }
    }
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stored" => Ok(Expect::Stored),
            "duplicate" => Ok(Expect::Duplicate),
            _ => s
                .strip_prefix("rejected:")
                .and_then(Reason::from_code)
                .map(Expect::Rejected)
                .ok_or_else(|| format!("unknown outcome '{s}'")),
        }
    }
}

/// One acknowledged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The idempotency key (the SQS message id for envelopes without `event_id`).
    pub event_id: Option<String>,
    pub client_id: Option<String>,
    pub sqs_message_id: String,
    /// `stored`, `duplicate` or `rejected:<reason>`.
    pub expect: String,
    /// What the producer generated (`valid`, `legacy`, `not_json`, ...).
    pub kind: String,
    /// When the send was acknowledged, in milliseconds since the epoch: the run's
    /// window, in which every stored row must be explained by the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_ms: Option<i64>,
    /// SHA-256 of the payload as the processor must store it (keys sorted), for
    /// events that must be stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
}

impl Entry {
    /// The entry of an event SQS acknowledged as `message_id`.
    pub fn acknowledged(outgoing: &super::generator::Outgoing, message_id: String, event_id: Option<String>) -> Entry {
        let payload_sha256 = match outgoing.expect {
            Expect::Stored | Expect::Duplicate => crate::validation::Envelope::parse(&outgoing.body)
                .ok()
                .map(|envelope| payload_digest(&envelope.payload.to_value())),
            Expect::Rejected(_) => None,
        };
        Entry {
            event_id: event_id.or_else(|| outgoing.event_id.clone()).or_else(|| Some(message_id.clone())),
            client_id: outgoing.client_id.clone(),
            sqs_message_id: message_id,
            expect: outgoing.expect.to_string(),
            kind: outgoing.kind.to_owned(),
            acked_ms: Some(chrono::Utc::now().timestamp_millis()),
            payload_sha256,
        }
    }

    pub fn expectation(&self) -> Result<Expect, String> {
        self.expect.parse()
    }
}

/// Appends entries to a manifest file from concurrent senders.
pub struct Writer(Mutex<BufWriter<std::fs::File>>);

impl Writer {
    pub fn create(path: &Path) -> anyhow::Result<Writer> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create manifest {}", path.display()))?;
        Ok(Writer(Mutex::new(BufWriter::new(file))))
    }

    pub fn write(&self, entries: &[Entry]) -> std::io::Result<()> {
        let mut out = self.0.lock().expect("manifest lock");
        for entry in entries {
            serde_json::to_writer(&mut *out, entry)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn finish(&self) -> std::io::Result<()> {
        self.0.lock().expect("manifest lock").flush()
    }
}

pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open manifest {}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a manifest entry", path.display(), n + 1))?;
        entry.expectation().map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// SHA-256 (hex) of a JSON value written with its object keys sorted, so the payload
/// sent and the jsonb PostgreSQL stored (which reorders keys) digest alike.
pub fn payload_digest(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    write(value, &mut text);
    sha256_hex(text.as_bytes())
}

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::payload_digest;
    use serde_json::json;

    #[test]
    fn a_payload_digests_alike_whatever_its_key_order_and_differs_by_content() {
        let sent = json!({"b": [1, {"y": 2, "x": "s"}], "a": 12.5});
        let stored: serde_json::Value = serde_json::from_str(r#"{"a": 12.50, "b": [1, {"x": "s", "y": 2}]}"#).unwrap();
        assert_eq!(payload_digest(&sent), payload_digest(&stored));
        assert_ne!(payload_digest(&sent), payload_digest(&json!({"a": 12.5, "b": [1, {"x": "s", "y": 3}]})));
        assert_ne!(payload_digest(&json!("a")), payload_digest(&json!(["a"])));
    }
}
