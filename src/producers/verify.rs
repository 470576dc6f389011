//! The verifier: for every event SQS acknowledged (the manifest), exactly one row
//! must exist in `message` or `rejected_message`, in the right table with the right
//! reason, and a stored event must hold the payload that was sent. Events are checked
//! by key, so a producer's re-send counts once. The other way round, every row of the
//! run's window must be explained by the manifest, and the check is final only once
//! the queue is drained, so a late duplicate is seen too.

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
    /// Stored events whose payload differs from the one sent.
    pub altered: usize,
    /// Rows sent within the run's window that no manifest line explains.
    pub unexplained: usize,
    /// Messages still on the source queue (visible and in flight) at the last check,
    /// when it was looked at: the verdict is final only at 0.
    pub left_on_queue: Option<u64>,
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
            && self.altered == 0
            && self.unexplained == 0
            && self.left_on_queue.is_none_or(|n| n == 0)
            && self.delivery.as_ref().is_none_or(|d| d.ok())
    }

    fn problem(&mut self, kind: &str, what: String) {
        match kind {
            "lost" => self.lost += 1,
            "duplicated" => self.duplicated += 1,
            "altered" => self.altered += 1,
            "unexplained" => self.unexplained += 1,
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
        writeln!(f, "altered payloads      {:>8}", self.altered)?;
        writeln!(f, "unexplained rows      {:>8}", self.unexplained)?;
        if let Some(n) = self.left_on_queue {
            writeln!(f, "left on the queue     {n:>8}")?;
        }
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

/// [`check`] every half second until nothing is lost and `queue` (the source queue,
/// when given) is drained, or `wait` has passed; the last report. An empty manifest is
/// an error: it proves nothing. While the queue still holds messages only its depth is
/// read: a full check reads every stored row, and repeating it while the processor
/// works would take the CPU a benchmark measures.
pub async fn until_complete(
    store: &crate::store::Store,
    entries: &[Entry],
    record: Option<&std::path::Path>,
    queue: Option<&crate::sqs::Queue>,
    wait: std::time::Duration,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!entries.is_empty(), "the manifest holds no acknowledged event: there is nothing to verify");
    let conn = store.pool().get().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // The queue first: once it is drained, every commit is in the check that follows.
        let left_on_queue = match queue {
            Some(queue) => Some(queue.depth().await.map_or(u64::MAX, |(visible, in_flight)| visible + in_flight)),
            None => None,
        };
        if left_on_queue.is_some_and(|n| n > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        let mut report = check(&**conn, entries).await?;
        report.left_on_queue = left_on_queue;
        if let Some(record) = record {
            report.delivery = Some(super::delivered::check(&**conn, entries, record).await?);
        }
        let pending = report.delivery.as_ref().is_some_and(|d| d.undelivered() > 0);
        let drained = left_on_queue.is_none_or(|n| n == 0);
        if (report.lost == 0 && !pending && drained) || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Checks the database against the manifest.
pub async fn check(db: &impl GenericClient, entries: &[Entry]) -> anyhow::Result<Report> {
    let mut report = Report::default();
    check_rows(db, entries, &mut report).await?;
    check_payloads(db, entries, &mut report).await?;
    check_window(db, entries, &mut report).await?;
    Ok(report)
}

/// Every stored event of the manifest holds the payload that was sent.
async fn check_payloads(db: &impl GenericClient, entries: &[Entry], report: &mut Report) -> anyhow::Result<()> {
    let mut sent: HashMap<(&str, &str), &str> = HashMap::new();
    for entry in entries {
        if let (Some(c), Some(e), Some(digest)) = (&entry.client_id, &entry.event_id, &entry.payload_sha256) {
            sent.entry((c.as_str(), e.as_str())).or_insert(digest.as_str());
        }
    }
    let (clients, events): (Vec<&str>, Vec<&str>) = sent.keys().copied().unzip();
    let rows = db
        .query(
            "SELECT m.client_id, m.event_id, m.payload FROM message m
             JOIN UNNEST($1::text[], $2::text[]) AS k(client_id, event_id) USING (client_id, event_id)",
            &[&clients, &events],
        )
        .await?;
    for row in rows {
        let (client_id, event_id): (String, String) = (row.get(0), row.get(1));
        let payload: serde_json::Value = row.get(2);
        if sent.get(&(client_id.as_str(), event_id.as_str()))
            != Some(&super::manifest::payload_digest(&payload).as_str())
        {
            report.problem("altered", format!("{client_id}/{event_id}: the stored payload is not the one sent"));
        }
    }
    Ok(())
}

/// Every row whose message SQS stamped within the run's window (first to last
/// acknowledgement) is explained by a manifest line, by message id or by key.
async fn check_window(db: &impl GenericClient, entries: &[Entry], report: &mut Report) -> anyhow::Result<()> {
    let acked: Vec<i64> = entries.iter().filter_map(|e| e.acked_ms).collect();
    let (Some(first), Some(last)) = (acked.iter().min(), acked.iter().max()) else { return Ok(()) };
    // SQS stamps a message before the producer hears the acknowledgement.
    let (from, to) = (
        chrono::DateTime::from_timestamp_millis(first - 2_000).unwrap_or_default(),
        chrono::DateTime::from_timestamp_millis(*last).unwrap_or_default(),
    );
    let ids: HashSet<&str> = entries.iter().map(|e| e.sqs_message_id.as_str()).collect();
    let keys: HashSet<(&str, &str)> =
        entries.iter().filter_map(|e| e.client_id.as_deref().zip(e.event_id.as_deref())).collect();
    let rows = db
        .query(
            "SELECT 'message', sqs_message_id, client_id, event_id FROM message WHERE sent_at BETWEEN $1 AND $2
             UNION ALL
             SELECT 'rejected_message', sqs_message_id, client_id, event_id FROM rejected_message
             WHERE sent_at BETWEEN $1 AND $2",
            &[&from, &to],
        )
        .await?;
    for row in rows {
        let (table, id): (&str, &str) = (row.get(0), row.get(1));
        let key = row.get::<_, Option<&str>>(2).zip(row.get::<_, Option<&str>>(3));
        if !ids.contains(id) && !key.is_some_and(|k| keys.contains(&k)) {
            report.problem("unexplained", format!("{table} row of SQS message {id} is in no manifest line"));
        }
    }
    Ok(())
}

/// Each manifest line has its one row, in the right table.
async fn check_rows(db: &impl GenericClient, entries: &[Entry], report: &mut Report) -> anyhow::Result<()> {
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

    report.acknowledged = entries.len();
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
    Ok(())
}
