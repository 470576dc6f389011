//! One transaction per batch: the rows of accepted and rejected messages, written
//! with `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO NOTHING`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::Json;

use super::{Store, StoreError};
use crate::validation::{Identity, Reason, Rejected, Rejection, Verdict};

/// How a message arrived, as its row records it. Transport-neutral: the SQS receipt
/// handle stays with the ingest pipeline, which alone deletes messages.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The SQS message id: the key of `rejected_message`, and the event id of an
    /// envelope without one.
    pub message_id: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on first delivery.
    pub receive_count: i32,
    /// `SentTimestamp`: when the producer's send was acknowledged.
    pub sent_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

/// A message with its verdict: one row to commit.
#[derive(Debug, Clone)]
pub struct Classified {
    pub arrival: Arrival,
    pub verdict: Verdict,
}

const INSERT_MESSAGES: &str = "
    INSERT INTO message (client_id, event_id, event_type, version, payload, occurred_at, sent_at, received_at, sqs_message_id)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::jsonb[], $6::timestamptz[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[])
    ON CONFLICT (client_id, event_id) DO NOTHING";

const INSERT_REJECTED: &str = "
    INSERT INTO rejected_message (sqs_message_id, body, reason, detail, client_id, event_type, version, event_id,
                                  receive_count, sent_at, received_at)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::int4[],
                         $8::text[], $9::int4[], $10::timestamptz[], $11::timestamptz[])
    ON CONFLICT (sqs_message_id) DO NOTHING";

/// What one committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// New rows in `message`.
    pub stored: u64,
    /// Accepted events whose key already had a row (redeliveries, producer retries).
    pub duplicates: u64,
    /// New rows in `rejected_message`.
    pub rejected: u64,
    /// Rows PostgreSQL refused, turned into `unstorable` rejections in place.
    pub unstorable: u64,
}

impl Store {
    /// Commits a batch in one transaction. If PostgreSQL refuses a row permanently,
    /// the batch is split so that only the refused rows become `unstorable`
    /// rejections (their verdicts are changed in place) and the rest commit.
    /// On a transient error nothing is stored and the caller retries.
    #[tracing::instrument(skip_all, fields(batch = batch.len()), err(Display))]
    pub async fn commit_batch(&self, batch: &mut [Classified]) -> Result<CommitOutcome, StoreError> {
        match self.try_commit(batch).await {
            Err(e) if e.is_permanent() => {
                tracing::warn!(error = %e, "a row was refused; committing the batch row by row");
                let mut total = CommitOutcome::default();
                for item in batch.chunks_mut(1) {
                    let outcome = match self.try_commit(item).await {
                        Err(e) if e.is_permanent() => {
                            let item = &mut item[0];
                            tracing::warn!(sqs_message_id = %item.arrival.message_id, error = %e, "rejected as unstorable");
                            item.verdict = unstorable(&item.verdict, &e);
                            let mut outcome = self.try_commit(std::slice::from_mut(item)).await?;
                            outcome.unstorable = 1;
                            outcome
                        }
                        other => other?,
                    };
                    total.stored += outcome.stored;
                    total.duplicates += outcome.duplicates;
                    total.rejected += outcome.rejected;
                    total.unstorable += outcome.unstorable;
                }
                Ok(total)
            }
            other => other,
        }
    }

    async fn try_commit(&self, batch: &[Classified]) -> Result<CommitOutcome, StoreError> {
        let (events, rejects) = (EventColumns::of(batch), RejectedColumns::of(batch));
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let stored = events.insert(&tx).await?;
        let rejected = rejects.insert(&tx).await?;
        tx.commit().await?;
        Ok(CommitOutcome { stored, duplicates: events.len() - stored, rejected, unstorable: 0 })
    }

    /// Applies a replay of rejected messages in one transaction: those now accepted
    /// move into `message` (idempotently) and leave `rejected_message`; those still
    /// rejected get their current reason and detail.
    pub async fn replay_batch(&self, batch: &[Classified]) -> Result<u64, StoreError> {
        let accepted: Vec<&str> = batch
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Accepted(_)))
            .map(|c| c.arrival.message_id.as_str())
            .collect();
        let rejects = RejectedColumns::of(batch);
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        EventColumns::of(batch).insert(&tx).await?;
        tx.execute("DELETE FROM rejected_message WHERE sqs_message_id = ANY($1)", &[&accepted]).await?;
        tx.execute(
            "UPDATE rejected_message r SET reason = u.reason, detail = u.detail
             FROM UNNEST($1::text[], $2::text[], $3::jsonb[]) AS u(id, reason, detail)
             WHERE r.sqs_message_id = u.id AND (r.reason, r.detail) IS DISTINCT FROM (u.reason, u.detail)",
            &[&rejects.sqs_message_id, &rejects.reason, &rejects.detail],
        )
        .await?;
        tx.commit().await?;
        Ok(accepted.len() as u64)
    }
}

/// The rejection that replaces a verdict PostgreSQL refused to store.
fn unstorable(verdict: &Verdict, error: &StoreError) -> Verdict {
    let identity = match verdict {
        Verdict::Accepted(e) => Identity {
            client_id: Some(e.client_id.clone()),
            event_type: Some(e.event_type.clone()),
            version: Some(e.version),
            event_id: Some(e.event_id.clone()),
        },
        Verdict::Rejected(r) => r.identity.clone(),
    };
    let detail: Value = json!({ "error": format!("PostgreSQL refused the row: {error}") });
    Verdict::Rejected(Rejected { rejection: Rejection { reason: Reason::Unstorable, detail }, identity })
}

/// Column arrays for the `message` insert.
#[derive(Default)]
struct EventColumns<'a> {
    client_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    version: Vec<i32>,
    payload: Vec<Json<&'a Value>>,
    occurred_at: Vec<Option<DateTime<Utc>>>,
    sent_at: Vec<Option<DateTime<Utc>>>,
    received_at: Vec<DateTime<Utc>>,
    sqs_message_id: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// The accepted events of a batch.
    fn of(batch: &'a [Classified]) -> Self {
        let mut c = EventColumns::default();
        for item in batch {
            if let Verdict::Accepted(e) = &item.verdict {
                c.client_id.push(&e.client_id);
                c.event_id.push(&e.event_id);
                c.event_type.push(&e.event_type);
                c.version.push(e.version);
                c.payload.push(Json(&e.payload));
                c.occurred_at.push(e.occurred_at);
                c.sent_at.push(item.arrival.sent_at);
                c.received_at.push(item.arrival.received_at);
                c.sqs_message_id.push(&item.arrival.message_id);
            }
        }
        c
    }

    fn len(&self) -> u64 {
        self.client_id.len() as u64
    }

    /// Inserts the rows whose key is new; returns how many.
    async fn insert(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<u64, StoreError> {
        if self.client_id.is_empty() {
            return Ok(0);
        }
        let statement = tx.prepare_cached(INSERT_MESSAGES).await?;
        Ok(tx
            .execute(
                &statement,
                &[
                    &self.client_id,
                    &self.event_id,
                    &self.event_type,
                    &self.version,
                    &self.payload,
                    &self.occurred_at,
                    &self.sent_at,
                    &self.received_at,
                    &self.sqs_message_id,
                ],
            )
            .await?)
    }
}

/// Column arrays for the `rejected_message` insert.
#[derive(Default)]
struct RejectedColumns<'a> {
    sqs_message_id: Vec<&'a str>,
    body: Vec<Cow<'a, str>>,
    reason: Vec<&'static str>,
    detail: Vec<Json<&'a Value>>,
    client_id: Vec<Option<&'a str>>,
    event_type: Vec<Option<&'a str>>,
    version: Vec<Option<i32>>,
    event_id: Vec<Option<&'a str>>,
    receive_count: Vec<i32>,
    sent_at: Vec<Option<DateTime<Utc>>>,
    received_at: Vec<DateTime<Utc>>,
}

impl<'a> RejectedColumns<'a> {
    /// The rejected messages of a batch.
    fn of(batch: &'a [Classified]) -> Self {
        let mut c = RejectedColumns::default();
        for item in batch {
            if let Verdict::Rejected(r) = &item.verdict {
                let m = &item.arrival;
                c.sqs_message_id.push(&m.message_id);
                // SQS does not allow NUL in bodies, but text columns refuse it: never fail on it.
                c.body.push(if m.body.contains('\0') {
                    Cow::Owned(m.body.replace('\0', "\u{FFFD}"))
                } else {
                    Cow::Borrowed(&m.body)
                });
                c.reason.push(r.rejection.reason.code());
                c.detail.push(Json(&r.rejection.detail));
                c.client_id.push(r.identity.client_id.as_deref());
                c.event_type.push(r.identity.event_type.as_deref());
                c.version.push(r.identity.version);
                c.event_id.push(r.identity.event_id.as_deref());
                c.receive_count.push(m.receive_count);
                c.sent_at.push(m.sent_at);
                c.received_at.push(m.received_at);
            }
        }
        c
    }

    /// Inserts the rows whose SQS message id is new; returns how many.
    async fn insert(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<u64, StoreError> {
        if self.sqs_message_id.is_empty() {
            return Ok(0);
        }
        let statement = tx.prepare_cached(INSERT_REJECTED).await?;
        Ok(tx
            .execute(
                &statement,
                &[
                    &self.sqs_message_id,
                    &self.body,
                    &self.reason,
                    &self.detail,
                    &self.client_id,
                    &self.event_type,
                    &self.version,
                    &self.event_id,
                    &self.receive_count,
                    &self.sent_at,
                    &self.received_at,
                ],
            )
            .await?)
    }
}
