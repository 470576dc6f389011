//! The verifier: for every event SQS acknowledged (the manifest), exactly one row
//! must exist in `message` or `rejected_message`, in the right table with the right
//! reason. Events are checked by key, so a producer's re-send counts once.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::delivered::DeliveryReport;
use super::manifest::{Entry, Expect};

/// What `verify` found. `ok()` when nothing was lost, duplicated or misclassified.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Manifest lines.
    pub acknowledged: usize,
    /// Distinct keys that must have a `message` row.
    pub expected_stored: usize,
    /// Messages that must have a `rejected_message` row.
    pub expected_rejected: usize,
    /// Re-sends of an already sent key.
    pub duplicates_sent: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub misclassified: usize,
    /// Messages in the dead-letter queue, when it was looked at.
    pub dead_lettered: Option<u64>,
    /// A few examples of each problem, for the operator.
    pub examples: Vec<String>,
    /// Deliveries to the push consumers, when a record file was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.misclassified == 0
            && self.delivery.as_ref().is_none_or(|d| d.ok())
    }

    fn problem(&mut self, kind: &str, what: String) {
        match kind {
            "lost" => self.lost += 1,
            "duplicated" => self.duplicated += 1,
            _ => self.misclassified += 1,
        }
        if self.examples.len() < 20 {
            self.examples.push(format!("{kind}: {what}"));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "acknowledged events   {:>8}", self.acknowledged)?;
        writeln!(f, "  expected stored     {:>8}  (distinct keys)", self.expected_stored)?;
        writeln!(f, "  expected rejected   {:>8}", self.expected_rejected)?;
        writeln!(f, "  duplicates sent     {:>8}", self.duplicates_sent)?;
        writeln!(f, "lost                  {:>8}", self.lost)?;
        writeln!(f, "duplicated            {:>8}", self.duplicated)?;
        writeln!(f, "misclassified         {:>8}", self.misclassified)?;
        if let Some(n) = self.dead_lettered {
            writeln!(f, "dead-lettered         {n:>8}")?;
        }
        for e in &self.examples {
            writeln!(f, "  {e}")?;
        }
        if let Some(delivery) = &self.delivery {
            writeln!(f, "{delivery}")?;
        }
        write!(f, "{}", if self.ok() { "OK: every acknowledged event is stored exactly once" } else { "FAILED" })
    }
}

struct RejectedRow {
    sqs_message_id: String,
    reason: String,
    key: Option<(String, String)>,
}

/// [`check`] every half second until nothing is lost or `wait` has passed (the
/// processor may still be draining); the last report.
pub async fn until_complete(
    store: &crate::store::Store,
    entries: &[Entry],
    record: Option<&std::path::Path>,
    wait: std::time::Duration,
) -> anyhow::Result<Report> {
    let conn = store.pool().get().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut report = check(&**conn, entries).await?;
        if let Some(record) = record {
            report.delivery = Some(super::delivered::check(&**conn, entries, record).await?);
        }
        let pending = report.delivery.as_ref().is_some_and(|d| d.undelivered() > 0);
        if (report.lost == 0 && !pending) || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Checks the database against the manifest.
pub async fn check(db: &impl GenericClient, entries: &[Entry]) -> anyhow::Result<Report> {
    let event_ids: Vec<&str> = entries.iter().filter_map(|e| e.event_id.as_deref()).collect();
    let sqs_ids: Vec<&str> = entries.iter().map(|e| e.sqs_message_id.as_str()).collect();
    let stored: HashSet<(String, String)> = db
        .query("SELECT client_id, event_id FROM message WHERE event_id = ANY($1)", &[&event_ids])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rejected: Vec<RejectedRow> = db
        .query(
            "SELECT sqs_message_id, reason, client_id, event_id FROM rejected_message
             WHERE sqs_message_id = ANY($1) OR event_id = ANY($2)",
            &[&sqs_ids, &event_ids],
        )
        .await?
        .iter()
        .map(|r| RejectedRow {
            sqs_message_id: r.get(0),
            reason: r.get(1),
            key: r.get::<_, Option<String>>(2).zip(r.get::<_, Option<String>>(3)),
        })
        .collect();
    let rejected_by_sqs: HashMap<&str, &RejectedRow> =
        rejected.iter().map(|r| (r.sqs_message_id.as_str(), r)).collect();
    let mut rejected_by_key: HashMap<(&str, &str), Vec<&RejectedRow>> = HashMap::new();
    for r in &rejected {
        if let Some((c, e)) = &r.key {
            rejected_by_key.entry((c.as_str(), e.as_str())).or_default().push(r);
        }
    }

    let mut report = Report { acknowledged: entries.len(), ..Report::default() };
    // Events that must be stored, by key: the original and every re-send of it.
    let mut must_store: HashMap<(&str, &str), Vec<&Entry>> = HashMap::new();
    for entry in entries {
        let expect = entry.expectation().map_err(anyhow::Error::msg)?;
        let key = entry.client_id.as_deref().zip(entry.event_id.as_deref());
        match expect {
            Expect::Stored | Expect::Duplicate => {
                if expect == Expect::Duplicate {
                    report.duplicates_sent += 1;
                }
                let key =
                    key.ok_or_else(|| anyhow::anyhow!("manifest: {} has no client_id/event_id", entry.sqs_message_id))?;
                must_store.entry(key).or_default().push(entry);
            }
            Expect::Rejected(reason) => {
                report.expected_rejected += 1;
                let in_message = key.is_some_and(|(c, e)| stored.contains(&(c.to_owned(), e.to_owned())));
                match (rejected_by_sqs.get(entry.sqs_message_id.as_str()), in_message) {
                    (Some(_), true) => {
                        report.problem("duplicated", format!("{} is in both tables", entry.sqs_message_id))
                    }
                    (Some(row), false) if row.reason != reason.code() => report.problem(
                        "misclassified",
                        format!(
                            "{} ({}) expected {expect}, got rejected:{}",
                            entry.sqs_message_id, entry.kind, row.reason
                        ),
                    ),
                    (Some(_), false) => {}
                    (None, true) => report.problem(
                        "misclassified",
                        format!("{} ({}) expected {expect}, got stored", entry.sqs_message_id, entry.kind),
                    ),
                    (None, false) => {
                        report.problem("lost", format!("{} ({}) expected {expect}", entry.sqs_message_id, entry.kind))
                    }
                }
            }
        }
    }
    report.expected_stored = must_store.len();
    for ((client_id, event_id), group) in &must_store {
        let in_message = stored.contains(&(client_id.to_string(), event_id.to_string()));
        let mut rejections: Vec<&RejectedRow> =
            rejected_by_key.get(&(*client_id, *event_id)).cloned().unwrap_or_default();
        for entry in group {
            if let Some(row) = rejected_by_sqs.get(entry.sqs_message_id.as_str()) {
                if !rejections.iter().any(|r| r.sqs_message_id == row.sqs_message_id) {
                    rejections.push(row);
                }
            }
        }
        match (in_message, rejections.first()) {
            (true, None) => {}
            (true, Some(_)) => report.problem("duplicated", format!("{client_id}/{event_id} is in both tables")),
            (false, Some(row)) => report.problem(
                "misclassified",
                format!("{client_id}/{event_id} expected stored, got rejected:{}", row.reason),
            ),
            (false, None) => {
                report.problem("lost", format!("{client_id}/{event_id} ({}) expected stored", group[0].kind))
            }
        }
    }
    Ok(report)
}
