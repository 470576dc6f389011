//! The record file: one JSON line per accepted delivery, the evidence a test reads to
//! check that every event arrived (and how often).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// One line of the record file.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub consumer: &'a str,
    /// The `webhook-id` header: repeated across retries of one message, so a test can
    /// tell a retry's duplicate from a second message.
    pub webhook_id: &'a str,
    /// `client_id`, `event_id` and `event_type` copied from the body as they are
    /// (null when absent), so a test can match lines to the events it sent.
    pub client_id: Value,
    pub event_id: Value,
    pub event_type: Value,
    /// RFC 3339 in UTC with milliseconds.
    pub received_at: String,
}

/// Appends records, one whole line at a time.
///
/// One lock serialises writers so lines never interleave. Each line is written and
/// flushed with no `.await` in between: a request dropped mid-way (the sender hung
/// up) cannot leave half a line in the buffer, and a `kill -9` loses at most the line
/// being written. The write is blocking, but it is one small `write(2)` to the page
/// cache, cheaper than handing it to a blocking thread; the async lock lets waiting
/// requests yield instead of blocking the runtime.
#[derive(Debug)]
pub struct Recorder {
    file: Mutex<BufWriter<File>>,
}

impl Recorder {
    /// Opens `path` for appending, creating it if needed: a restarted service adds to
    /// the evidence rather than wiping it.
    pub fn open(path: &Path) -> anyhow::Result<Recorder> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("CONSUMERS_RECORD: cannot open {} for appending", path.display()))?;
        Ok(Recorder { file: Mutex::new(BufWriter::new(file)) })
    }

    /// Appends one line and flushes it to the operating system before returning, so
    /// the caller may acknowledge the delivery.
    pub async fn append(&self, record: &Record<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        file.write_all(&line)?;
        file.flush()
    }
}
