//! Replay: validates rejected messages again with the current registry. Those that
//! pass now (typically `unknown_client` before the client was registered) move into
//! `message`, idempotently; the others stay, with their current reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Arrival, Classified, Store};
use crate::registry::Registry;
use crate::validation::{classify, Reason, Verdict};

/// Which rejected messages to replay; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<Reason>,
    pub client_id: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub examined: u64,
    /// Now valid: moved into `message` (or already there under the same key).
    pub moved: u64,
    /// Still rejected, by current reason.
    pub still_rejected: BTreeMap<String, u64>,
    pub dry_run: bool,
}

const PAGE: i64 = 500;

pub async fn run(store: &Store, filter: &Filter, dry_run: bool) -> anyhow::Result<Report> {
    let conn = store.pool().get().await?;
    let registry = Registry::load(&**conn, None).await?;
    let mut report = Report { dry_run, ..Report::default() };
    let reason = filter.reason.map(Reason::code);
    let mut after = String::new();
    loop {
        let rows = conn
            .query(
                "SELECT sqs_message_id, body, receive_count, sent_at, received_at FROM rejected_message
                 WHERE sqs_message_id > $1 AND ($2::text IS NULL OR reason = $2)
                   AND ($3::text IS NULL OR client_id = $3) AND ($4::timestamptz IS NULL OR received_at >= $4)
                 ORDER BY sqs_message_id LIMIT $5",
                &[&after, &reason, &filter.client_id, &filter.since, &PAGE],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let mut batch: Vec<Classified> = rows
            .iter()
            .map(|row| {
                let arrival = Arrival {
                    message_id: row.get(0),
                    body: row.get(1),
                    receive_count: row.get(2),
                    sent_at: row.get(3),
                    received_at: row.get(4),
                };
                let verdict = classify(&arrival.body, &arrival.message_id, &registry);
                Classified { arrival, verdict }
            })
            .collect();
        report.examined += batch.len() as u64;
        if !dry_run {
            // Commits may turn an accepted verdict into `conflicting_duplicate`.
            store.replay_batch(&mut batch).await?;
        }
        for item in &batch {
            match &item.verdict {
                Verdict::Accepted(_) => report.moved += 1,
                Verdict::Rejected(r) => {
                    *report.still_rejected.entry(r.rejection.reason.code().to_owned()).or_default() += 1
                }
            }
        }
    }
    Ok(report)
}
