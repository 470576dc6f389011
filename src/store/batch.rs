//! One statement per batch (one round trip, its own transaction): the rows of accepted
//! and rejected messages, written with `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT
//! DO NOTHING`, the payloads sent as the JSON text the producer wrote.
//!
//! Each SQS message ends in exactly one table, whatever order its verdicts come in:
//! the first verdict that commits wins, and a redelivery judged differently (the
//! registry changed in between) is a duplicate. An event id already stored with other
//! content is no duplicate: the newcomer is rejected as `conflicting_duplicate`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{json, Value};
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, Json, ToSql, Type};

use super::{Store, StoreError};
use crate::validation::{Identity, Reason, Rejected, Rejection, Verdict};

/// The per-batch sets of message ids: SQS message ids are not chosen by an attacker
/// who could aim collisions at them, so the fast hasher will do.
type Hasher = foldhash::fast::RandomState;

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

/// A batch in one statement, so one round trip and its own transaction: new events,
/// unless their SQS message was already rejected, and new rejections, unless their SQS
/// message was already stored as an event. Returns how many events were written,
/// their message ids only when some were not (the ids of a whole batch would be sent
/// and decoded for nothing), and how many rejections were. Both inserts see the table
/// as it was before the statement, so a batch never holds one message under both
/// verdicts (see [`RejectedColumns::of`]).
const INSERT_BATCH: &str = "
    WITH events AS (
        INSERT INTO message (client_id, event_id, event_type, version, payload, occurred_at, sent_at, received_at,
                             sqs_message_id)
        SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::jsonb[], $6::timestamptz[],
                               $7::timestamptz[], $8::timestamptz[], $9::text[])
               AS u(client_id, event_id, event_type, version, payload, occurred_at, sent_at, received_at, sqs_message_id)
        WHERE NOT EXISTS (SELECT 1 FROM rejected_message r WHERE r.sqs_message_id = u.sqs_message_id)
        ON CONFLICT (client_id, event_id) DO NOTHING
        RETURNING sqs_message_id),
    rejections AS (
        INSERT INTO rejected_message (sqs_message_id, body, reason, detail, client_id, event_type, version, event_id,
                                      receive_count, sent_at, received_at)
        SELECT u.* FROM UNNEST($10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::text[],
                               $16::int4[], $17::text[], $18::int4[], $19::timestamptz[], $20::timestamptz[])
               AS u(sqs_message_id, body, reason, detail, client_id, event_type, version, event_id, receive_count,
                    sent_at, received_at)
        WHERE NOT EXISTS (SELECT 1 FROM message m WHERE m.client_id = u.client_id AND m.event_id = u.event_id
                                                    AND m.sqs_message_id = u.sqs_message_id)
        ON CONFLICT (sqs_message_id) DO NOTHING
        RETURNING 1)
    SELECT (SELECT count(*) FROM events),
           CASE WHEN (SELECT count(*) FROM events) < cardinality($9::text[]) THEN ARRAY(SELECT sqs_message_id FROM events) END,
           (SELECT count(*) FROM rejections)";

/// What an accepted event that was not written meets: the stored row of its key (and
/// whether its content is the same), and a rejection of its SQS message.
const EXPLAIN_UNWRITTEN: &str = "
    SELECT u.i, m.sqs_message_id, m.event_type, m.version,
           (m.event_type, m.version, m.payload) IS NOT DISTINCT FROM (u.event_type, u.version, u.payload),
           r.sqs_message_id IS NOT NULL
    FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::jsonb[], $7::text[])
         AS u(i, client_id, event_id, event_type, version, payload, sqs_message_id)
    LEFT JOIN message m ON m.client_id = u.client_id AND m.event_id = u.event_id
    LEFT JOIN rejected_message r ON r.sqs_message_id = u.sqs_message_id";

/// What one committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// New rows in `message`.
    pub stored: u64,
    /// Accepted events already settled: their key stored with the same content
    /// (redeliveries, producer retries), or their SQS message already rejected.
    pub duplicates: u64,
    /// Accepted events whose key was stored with other content, turned into
    /// `conflicting_duplicate` rejections in place.
    pub conflicting: u64,
    /// New rows in `rejected_message`.
    pub rejected: u64,
    /// Rows PostgreSQL refused, turned into `unstorable` rejections in place.
    pub unstorable: u64,
}

impl Store {
    /// Commits a batch in one statement (see [`INSERT_BATCH`]). If PostgreSQL refuses a
    /// row permanently, the batch is split so that only the refused rows become
    /// `unstorable` rejections (their verdicts are changed in place) and the rest
    /// commit. On a transient error the caller retries; what a failed attempt wrote
    /// is a duplicate then.
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
                    total.conflicting += outcome.conflicting;
                    total.rejected += outcome.rejected;
                    total.unstorable += outcome.unstorable;
                }
                Ok(total)
            }
            other => other,
        }
    }

    /// One attempt within the store's deadline: the batch's statement, and for accepted
    /// events whose key holds other content, a second one that writes them as
    /// `conflicting_duplicate` rejections (their verdicts changed in place). Between the
    /// two, such a message is in neither table and still on SQS, so a failure there
    /// loses nothing: the retry, or the redelivery, judges it again. (The retry counts
    /// the events the first statement wrote as duplicates.)
    async fn try_commit(&self, batch: &mut [Classified]) -> Result<CommitOutcome, StoreError> {
        self.within_deadline(async |conn| write(&*conn, batch).await).await
    }

    /// Applies a replay of rejected messages in one transaction: those now accepted
    /// move into `message` (idempotently) and leave `rejected_message`, unless their
    /// event id is stored with other content (then they stay, as
    /// `conflicting_duplicate`, their verdict changed in place); those still rejected
    /// get their current reason and detail. Returns how many moved.
    pub async fn replay_batch(&self, batch: &mut [Classified]) -> Result<u64, StoreError> {
        self.within_deadline(async |conn| {
            let tx = conn.transaction().await?;
            let accepted: Vec<&str> = batch
                .iter()
                .filter(|c| matches!(c.verdict, Verdict::Accepted(_)))
                .map(|c| c.arrival.message_id.as_str())
                .collect();
            // Out of the way first: an event whose message is rejected is not written.
            tx.execute("DELETE FROM rejected_message WHERE sqs_message_id = ANY($1)", &[&accepted]).await?;
            let moved = accepted.len() as u64;
            let conflicting = write(&tx, batch).await?.conflicting;
            let rejects = RejectedColumns::of(batch, |_| true);
            tx.execute(
                "UPDATE rejected_message r SET reason = u.reason, detail = u.detail
                 FROM UNNEST($1::text[], $2::text[], $3::jsonb[]) AS u(id, reason, detail)
                 WHERE r.sqs_message_id = u.id AND (r.reason, r.detail) IS DISTINCT FROM (u.reason, u.detail)",
                &[&rejects.sqs_message_id, &rejects.reason, &rejects.detail],
            )
            .await?;
            tx.commit().await?;
            Ok(moved - conflicting)
        })
        .await
    }
}

/// Writes a batch with [`INSERT_BATCH`]; then the accepted events it did not write
/// whose key holds other content become `conflicting_duplicate` rejections, their
/// verdicts changed in place, written by the same statement with no events.
async fn write(db: &impl GenericClient, batch: &mut [Classified]) -> Result<CommitOutcome, StoreError> {
    let events = EventColumns::of(batch);
    let accepted = events.len();
    let (stored, written, mut rejected) = insert_batch(db, &events, &RejectedColumns::of(batch, |_| true)).await?;
    let conflicts = match written {
        Some(written) => events.conflicts(db, &written).await?,
        None => Vec::new(),
    };
    drop(events);
    let conflicting = conflicts.len() as u64;
    if !conflicts.is_empty() {
        let turned: HashSet<usize> = conflicts.iter().map(|(index, _)| *index).collect();
        for (index, verdict) in conflicts {
            batch[index].verdict = verdict;
        }
        let rejects = RejectedColumns::of(batch, |index| turned.contains(&index));
        rejected += insert_batch(db, &EventColumns::default(), &rejects).await?.2;
    }
    Ok(CommitOutcome { stored, duplicates: accepted - stored - conflicting, conflicting, rejected, unstorable: 0 })
}

/// Runs [`INSERT_BATCH`]: how many events were written, their message ids when some
/// were not (only then are they needed), and how many rejections were written.
async fn insert_batch(
    db: &impl GenericClient,
    events: &EventColumns<'_>,
    rejects: &RejectedColumns<'_>,
) -> Result<(u64, Option<Vec<String>>, u64), StoreError> {
    let statement = db.prepare_cached(INSERT_BATCH).await?;
    let parameters: Vec<&(dyn ToSql + Sync)> = events.parameters().into_iter().chain(rejects.parameters()).collect();
    let row = db.query_one(&statement, &parameters).await?;
    Ok((row.get::<_, i64>(0) as u64, row.get(1), row.get::<_, i64>(2) as u64))
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

/// JSON text sent as `jsonb` as it is. PostgreSQL parses the text either way, so
/// re-serialising a parsed payload would only cost the processor.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1); // jsonb's binary format: a version byte, then the text
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSONB);
    to_sql_checked!();
}

/// A `timestamptz` encoded straight from its Unix time. postgres-types' own encoding
/// of a chrono time rebuilds PostgreSQL's epoch (2000-01-01) as a date and subtracts
/// it as a duration, for each of a message's three timestamps; this gives the same
/// microseconds (cut toward the epoch, as a duration's are) for less.
#[derive(Debug)]
struct Timestamp(DateTime<Utc>);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix seconds.
const POSTGRES_EPOCH_SECS: i64 = 946_684_800;

impl ToSql for Timestamp {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let (secs, nanos) = (self.0.timestamp() - POSTGRES_EPOCH_SECS, i64::from(self.0.timestamp_subsec_nanos()));
        let micros = match (secs, nanos) {
            // A leap second (`:60` in an RFC 3339 time): chrono's own way.
            (_, 1_000_000_000..) => return self.0.to_sql(ty, out),
            (..0, 1..) => (secs + 1) * 1_000_000 + (nanos - 1_000_000_000) / 1_000,
            _ => secs * 1_000_000 + nanos / 1_000,
        };
        out.put_i64(micros);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

/// Column arrays for the `message` insert.
#[derive(Default)]
struct EventColumns<'a> {
    /// Each row's position in the batch.
    index: Vec<usize>,
    client_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    version: Vec<i32>,
    payload: Vec<JsonText<'a>>,
    occurred_at: Vec<Option<Timestamp>>,
    sent_at: Vec<Option<Timestamp>>,
    received_at: Vec<Timestamp>,
    sqs_message_id: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// The accepted events of a batch.
    fn of(batch: &'a [Classified]) -> Self {
        let mut c = EventColumns::default();
        for (index, item) in batch.iter().enumerate() {
            if let Verdict::Accepted(e) = &item.verdict {
                c.index.push(index);
                c.client_id.push(&e.client_id);
                c.event_id.push(&e.event_id);
                c.event_type.push(&e.event_type);
                c.version.push(e.version);
                c.payload.push(JsonText(&e.payload));
                c.occurred_at.push(e.occurred_at.map(Timestamp));
                c.sent_at.push(item.arrival.sent_at.map(Timestamp));
                c.received_at.push(Timestamp(item.arrival.received_at));
                c.sqs_message_id.push(&item.arrival.message_id);
            }
        }
        c
    }

    fn len(&self) -> u64 {
        self.client_id.len() as u64
    }

    /// The statement's parameters, in order.
    fn parameters(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.client_id,
            &self.event_id,
            &self.event_type,
            &self.version,
            &self.payload,
            &self.occurred_at,
            &self.sent_at,
            &self.received_at,
            &self.sqs_message_id,
        ]
    }

    /// The rows the batch statement did not write whose key holds other content, each with its
    /// `conflicting_duplicate` verdict, by batch position. The others are duplicates:
    /// the same content again, or a message already settled as rejected.
    async fn conflicts(
        &self,
        db: &impl GenericClient,
        written: &[String],
    ) -> Result<Vec<(usize, Verdict)>, StoreError> {
        // Rows written, by message id; a message id twice in a batch was written once.
        let mut unclaimed: HashMap<&str, usize, Hasher> =
            HashMap::with_capacity_and_hasher(written.len(), Hasher::default());
        for id in written {
            *unclaimed.entry(id.as_str()).or_default() += 1;
        }
        let mut rows = Vec::new();
        for (k, id) in self.sqs_message_id.iter().enumerate() {
            match unclaimed.get_mut(id) {
                Some(n) if *n > 0 => *n -= 1,
                _ => rows.push(k),
            }
        }
        let pick = |column: &[&'a str]| -> Vec<&'a str> { rows.iter().map(|&k| column[k]).collect() };
        let positions: Vec<i32> = rows.iter().map(|&k| k as i32).collect();
        let versions: Vec<i32> = rows.iter().map(|&k| self.version[k]).collect();
        let payloads: Vec<&JsonText> = rows.iter().map(|&k| &self.payload[k]).collect();
        let statement = db.prepare_cached(EXPLAIN_UNWRITTEN).await?;
        let found = db
            .query(
                &statement,
                &[
                    &positions,
                    &pick(&self.client_id),
                    &pick(&self.event_id),
                    &pick(&self.event_type),
                    &versions,
                    &payloads,
                    &pick(&self.sqs_message_id),
                ],
            )
            .await?;
        let mut conflicts = Vec::new();
        for row in found {
            let k = row.get::<_, i32>(0) as usize;
            let stored_id: Option<String> = row.get(1);
            let same: Option<bool> = row.get(4);
            let already_rejected: bool = row.get(5);
            let Some(stored_id) = stored_id else { continue };
            if already_rejected || same == Some(true) || stored_id == self.sqs_message_id[k] {
                continue;
            }
            let detail = json!({
                "error": "this event id is already stored with a different event type, version or payload",
                "stored": {"sqs_message_id": stored_id, "event_type": row.get::<_, String>(2), "version": row.get::<_, i32>(3)},
            });
            let identity = Identity {
                client_id: Some(self.client_id[k].to_owned()),
                event_type: Some(self.event_type[k].to_owned()),
                version: Some(self.version[k]),
                event_id: Some(self.event_id[k].to_owned()),
            };
            let rejection = Rejection { reason: Reason::ConflictingDuplicate, detail };
            conflicts.push((self.index[k], Verdict::Rejected(Rejected { rejection, identity })));
        }
        Ok(conflicts)
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
    sent_at: Vec<Option<Timestamp>>,
    received_at: Vec<Timestamp>,
}

impl<'a> RejectedColumns<'a> {
    /// The rejected messages of a batch at the positions `wanted` picks. A message
    /// received twice into one batch, once accepted and once rejected, is left to its
    /// event: one message, one table.
    fn of(batch: &'a [Classified], wanted: impl Fn(usize) -> bool) -> Self {
        let mut c = RejectedColumns::default();
        let mut accepted: Option<HashSet<&str, Hasher>> = None;
        for (index, item) in batch.iter().enumerate() {
            if let Verdict::Rejected(r) = &item.verdict {
                if !wanted(index) {
                    continue;
                }
                let accepted = accepted.get_or_insert_with(|| {
                    let mut ids = HashSet::with_capacity_and_hasher(batch.len(), Hasher::default());
                    ids.extend(
                        batch
                            .iter()
                            .filter(|c| matches!(c.verdict, Verdict::Accepted(_)))
                            .map(|c| c.arrival.message_id.as_str()),
                    );
                    ids
                });
                if accepted.contains(item.arrival.message_id.as_str()) {
                    continue;
                }
                let m = &item.arrival;
                c.sqs_message_id.push(&m.message_id);
                // SQS does not allow NUL in bodies, but text columns refuse it: never fail on
                // it (looked for with memchr's vector search: a rejected body can be 256 KiB).
                c.body.push(if memchr::memchr(0, m.body.as_bytes()).is_some() {
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
                c.sent_at.push(m.sent_at.map(Timestamp));
                c.received_at.push(Timestamp(m.received_at));
            }
        }
        c
    }

    /// The statement's parameters, in order.
    fn parameters(&self) -> [&(dyn ToSql + Sync); 11] {
        [
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
        ]
    }
}

/// Encodes a batch's insert parameters as the commit sends them to PostgreSQL, into
/// `out`; returns the bytes written. The batch-encoding benchmark measures the
/// client's side of a commit with it, without a database.
#[doc(hidden)]
pub fn encode_parameters(batch: &[Classified], out: &mut BytesMut) -> usize {
    let start = out.len();
    let (events, rejected) = (EventColumns::of(batch), RejectedColumns::of(batch, |_| true));
    let event_types = [
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT4_ARRAY,
        Type::JSONB_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TEXT_ARRAY,
    ];
    let rejected_types = [
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::JSONB_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT4_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT4_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
    ];
    let parameters =
        events.parameters().into_iter().zip(event_types).chain(rejected.parameters().into_iter().zip(rejected_types));
    for (parameter, ty) in parameters {
        parameter.to_sql_checked(&ty, out).expect("the statement's parameter types");
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_timestamp_is_encoded_as_postgres_types_encodes_a_chrono_time() {
        let instants = [
            Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap(),
            Utc.timestamp_opt(1_764_151_200, 123_456_789).unwrap(),
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(946_684_799, 999_999_500).unwrap(), // just before PostgreSQL's epoch
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            DateTime::parse_from_rfc3339("2016-12-31T23:59:60.5Z").unwrap().to_utc(), // a leap second
        ];
        for instant in instants {
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            Timestamp(instant).to_sql_checked(&Type::TIMESTAMPTZ, &mut ours).unwrap();
            instant.to_sql_checked(&Type::TIMESTAMPTZ, &mut theirs).unwrap();
            assert_eq!(ours, theirs, "{instant:?}");
        }
    }
}
