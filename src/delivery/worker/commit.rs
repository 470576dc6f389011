//! Making a worker's progress durable: the cursor, the failure clock, the attempts,
//! parked and unparked events, in one transaction fenced by the lease and the
//! consumer's generation; and disabling a consumer.

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::warn;

use super::{Exit, Run, Snapshot, Uncommitted};
use crate::store::describe;

impl Run<'_> {
    /// Makes what was done durable in one transaction: the cursor, the failure clock,
    /// the attempts, parked and unparked events; and, with `disable`, the consumer's
    /// disabling. Fenced: nothing is written unless this sender still holds the lease
    /// and the consumer was not changed since the worker loaded it.
    pub(super) async fn commit(&mut self, disable: Option<&str>) -> anyhow::Result<()> {
        let Some(snapshot) = self.snapshot().or_else(|| disable.map(|_| self.empty_snapshot())) else {
            self.last_commit = Instant::now();
            return Ok(());
        };
        let written = self.write(&snapshot, disable).await;
        self.settle(snapshot, written)
    }

    /// What to commit now, taken out of `pending`; `None` when nothing changed.
    pub(super) fn snapshot(&self) -> Option<Snapshot> {
        let failing = *self.failing_since.lock().expect("failing");
        let work = std::mem::take(&mut *self.pending.lock().expect("pending"));
        let nothing = work.attempts.is_empty() && work.parked.is_empty() && work.unparked.is_empty();
        if nothing && self.cursor == self.committed && failing == self.failing_committed {
            return None;
        }
        Some(Snapshot { cursor: self.cursor, failing, work })
    }

    fn empty_snapshot(&self) -> Snapshot {
        Snapshot {
            cursor: self.cursor,
            failing: *self.failing_since.lock().expect("failing"),
            work: Uncommitted::default(),
        }
    }

    /// Records a write's outcome: committed, fenced (the worker stops), or failed (the
    /// work goes back to `pending` for the next commit).
    pub(super) fn settle(&mut self, snapshot: Snapshot, written: anyhow::Result<bool>) -> anyhow::Result<()> {
        match written {
            Ok(true) => {
                self.committed = snapshot.cursor;
                self.failing_committed = snapshot.failing;
                self.last_commit = Instant::now();
                Ok(())
            }
            Ok(false) => {
                self.worker.cancel.cancel();
                anyhow::bail!("lease lost or consumer changed: not committing")
            }
            Err(e) => {
                let mut pending = self.pending.lock().expect("pending");
                let newer = std::mem::replace(&mut *pending, snapshot.work);
                pending.attempts.extend(newer.attempts);
                pending.parked.extend(newer.parked);
                pending.unparked.extend(newer.unparked);
                Err(e)
            }
        }
    }

    pub(super) async fn write(&self, snapshot: &Snapshot, disable: Option<&str>) -> anyhow::Result<bool> {
        let Snapshot { cursor, failing, work } = snapshot;
        let id = self.worker.consumer_id;
        let mut conn = self.worker.store.pool().get().await?;
        let tx = conn.transaction().await?;
        // Losing the last commits in a PostgreSQL crash only means delivering those
        // events again (at least once); not waiting for the WAL flush keeps commits
        // off the delivery path.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let fenced = tx
            .execute(
                "UPDATE consumer SET cursor_xact = $2, cursor_seq = $3, failing_since = $4, updated_at = now()
                 WHERE id = $1 AND lease_owner = $5 AND generation = $6 AND state = 'active'",
                &[&id, &cursor.xact, &cursor.seq, failing, &self.worker.settings.instance, &self.target.generation],
            )
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?
            == 0;
        if fenced {
            return Ok(false);
        }
        if !work.attempts.is_empty() {
            let a = &work.attempts;
            let xacts: Vec<i64> = a.iter().map(|r| r.position.xact).collect();
            let seqs: Vec<i64> = a.iter().map(|r| r.position.seq).collect();
            let event_ids: Vec<&str> = a.iter().map(|r| r.event_id.as_str()).collect();
            let numbers: Vec<i32> = a.iter().map(|r| r.attempt).collect();
            let statuses: Vec<Option<i32>> = a.iter().map(|r| r.status).collect();
            let errors: Vec<Option<&str>> = a.iter().map(|r| r.error.as_deref()).collect();
            let durations: Vec<i32> = a.iter().map(|r| r.duration_ms).collect();
            let ats: Vec<DateTime<Utc>> = a.iter().map(|r| r.at).collect();
            tx.execute(
                "INSERT INTO delivery_attempt (consumer_id, client_id, xact_id, seq, event_id, attempt, status, error,
                                               duration_ms, attempted_at)
                 SELECT $1, $2, * FROM UNNEST($3::int8[], $4::int8[], $5::text[], $6::int4[], $7::int4[], $8::text[],
                                              $9::int4[], $10::timestamptz[])",
                &[
                    &id,
                    &self.target.selection.client_id,
                    &xacts,
                    &seqs,
                    &event_ids,
                    &numbers,
                    &statuses,
                    &errors,
                    &durations,
                    &ats,
                ],
            )
            .await?;
        }
        for p in &work.parked {
            tx.execute(
                "INSERT INTO parked_delivery (consumer_id, xact_id, seq, client_id, event_id, attempts, last_status,
                                              last_error, response_snippet)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (consumer_id, xact_id, seq) DO UPDATE
                   SET attempts = parked_delivery.attempts + EXCLUDED.attempts, last_status = EXCLUDED.last_status,
                       last_error = EXCLUDED.last_error, response_snippet = EXCLUDED.response_snippet,
                       parked_at = now(), replay = false",
                &[
                    &id,
                    &p.position.xact,
                    &p.position.seq,
                    &self.target.selection.client_id,
                    &p.event_id,
                    &p.attempts,
                    &p.last_status,
                    &p.last_error,
                    &p.snippet.as_deref().map(|s| s.replace('\0', "")),
                ],
            )
            .await?;
        }
        if !work.unparked.is_empty() {
            let xacts: Vec<i64> = work.unparked.iter().map(|p| p.xact).collect();
            let seqs: Vec<i64> = work.unparked.iter().map(|p| p.seq).collect();
            tx.execute(
                "DELETE FROM parked_delivery WHERE consumer_id = $1
                   AND (xact_id, seq) IN (SELECT * FROM UNNEST($2::int8[], $3::int8[]))",
                &[&id, &xacts, &seqs],
            )
            .await?;
        }
        if let Some(reason) = disable {
            tx.execute(
                "UPDATE consumer SET state = 'disabled', disabled_reason = $2, generation = generation + 1,
                        lease_owner = NULL, lease_until = NULL, updated_at = now()
                 WHERE id = $1",
                &[&id, &reason],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Commits what was done, then disables the consumer with `reason`.
    pub(super) async fn disable(&mut self, reason: String) -> anyhow::Result<Exit> {
        warn!(consumer = %self.target.label, %reason, "disabling the consumer");
        self.commit(Some(&reason)).await?;
        metrics::counter!("event_sender_disabled_total").increment(1);
        Ok(Exit::Disabled(reason))
    }
}
