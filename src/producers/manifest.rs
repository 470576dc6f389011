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
}

impl Entry {
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
