//! Settling: classified messages are grouped into batches, each batch is committed in
//! one statement and only then deleted from SQS; a batch that cannot be committed
//! in time is released back to SQS instead. [`Settlement`] is the outcome of one
//! batch, so each step can be driven and checked on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, warn, Instrument};

use super::{within, Shared, CALL_DEADLINE};
use crate::backoff::Backoff;
use crate::sqs::MAX_BATCH;
use crate::store::{Classified, CommitOutcome};
use crate::telemetry::Stats;
use crate::validation::Verdict;

/// A classified message on its way to a batch, with the receipt handle that deletes it.
pub struct Pending {
    pub receipt_handle: String,
    pub row: Classified,
}

/// How one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Committed, then deleted from SQS (entries SQS refused are counted in the stats).
    Committed(CommitOutcome),
    /// Commits kept failing past `release_after`: handed back to SQS uncommitted.
    Released,
}

/// Groups classified messages into batches (by size, or when the window closes) and
/// hands each to a committer. Messages come a receive at a time and a batch takes
/// whole receives, so its deletes go out in full calls of ten as the receives came
/// (a receive is split only when `batch_size` is smaller than it). Pollers send no
/// empty receive, so every batch holds a message.
pub(super) async fn batch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Vec<Pending>>) {
    let settings = shared.settings().clone();
    let batch_size = settings.batch_size.max(1);
    let committers = Arc::new(Semaphore::new(settings.committers.max(1)));
    let mut settling = JoinSet::new();
    // The receive the last batch had no room for: it starts the next one.
    let mut carried: Vec<Pending> = Vec::new();
    loop {
        if carried.is_empty() {
            match rx.recv().await {
                Some(received) => carried = received,
                None => break, // every poller has stopped
            }
        }
        let mut buffer = Vec::with_capacity(batch_size);
        buffer.extend(carried.drain(..carried.len().min(batch_size)));
        let window = Instant::now() + settings.batch_window;
        while carried.is_empty() && buffer.len() < batch_size {
            match tokio::time::timeout_at(window, rx.recv()).await {
                Ok(Some(received)) if buffer.len() + received.len() <= batch_size => buffer.extend(received),
                Ok(Some(received)) => carried = received,
                Ok(None) | Err(_) => break,
            }
        }
        let permit = committers.clone().acquire_owned().await.expect("committers are never closed");
        settling.spawn(settle(shared.clone(), buffer, permit));
        while settling.try_join_next().is_some() {}
    }
    while settling.join_next().await.is_some() {}
}

/// Commits a batch (retrying transient failures with backoff while the heartbeat
/// keeps its messages invisible), then deletes its messages. A batch that cannot be
/// committed within `release_after` is released to SQS instead.
async fn settle(shared: Arc<Shared>, batch: Vec<Pending>, _committer: OwnedSemaphorePermit) -> Settlement {
    let span = tracing::info_span!("batch", size = batch.len());
    let (receipts, mut rows): (Vec<String>, Vec<Classified>) =
        batch.into_iter().map(|p| (p.receipt_handle, p.row)).unzip();
    let handles: Vec<&str> = receipts.iter().map(String::as_str).collect();
    async {
        match shared.commit(&mut rows).await {
            Some(outcome) => {
                shared.record(&outcome, &rows);
                shared.delete(&handles).await;
                Settlement::Committed(outcome)
            }
            None => {
                shared.release(&handles).await;
                Settlement::Released
            }
        }
    }
    .instrument(span)
    .await
}

impl Shared {
    /// Commits `rows`, retrying transient failures with backoff until `release_after`
    /// has passed since the first attempt; `None` when it gave up.
    async fn commit(&self, rows: &mut [Classified]) -> Option<CommitOutcome> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let attempt = Instant::now();
            let watched = self.processor.commits.attempt();
            let result = self.processor.store.commit_batch(rows).await;
            drop(watched);
            match result {
                Ok(outcome) => {
                    metrics::histogram!("event_processor_commit_seconds").record(attempt.elapsed().as_secs_f64());
                    self.set_healthy(true);
                    return Some(outcome);
                }
                Err(e) => {
                    self.set_healthy(false);
                    Stats::add(&self.stats().commit_retries, 1);
                    if started.elapsed() >= self.settings().release_after {
                        error!(error = %e, held_for = ?started.elapsed(), "commit keeps failing: releasing the batch to SQS");
                        return None;
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %e, attempt = backoff.failures(), retry_in = ?delay, "commit failed; holding the batch");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn record(&self, outcome: &CommitOutcome, batch: &[Classified]) {
        let stats = self.stats();
        Stats::add(&stats.stored, outcome.stored);
        Stats::add(&stats.duplicates, outcome.duplicates);
        let now = chrono::Utc::now().timestamp_micros();
        let lag = metrics::histogram!("event_processor_lag_seconds");
        // Counted per event type once per batch: a labelled counter lookup per message costs.
        let mut accepted: HashMap<&str, u64, foldhash::fast::RandomState> = HashMap::default();
        for item in batch {
            match &item.verdict {
                Verdict::Rejected(r) => Stats::add(&stats.rejected[r.rejection.reason.index()], 1),
                Verdict::Accepted(e) => *accepted.entry(&e.event_type).or_default() += 1,
            }
            if let Some(sent_at) = item.arrival.sent_at {
                lag.record((now - sent_at.timestamp_micros()).max(0) as f64 / 1e6);
            }
        }
        for (event_type, n) in accepted {
            // Event types are registered, so this label's cardinality is bounded.
            metrics::counter!("event_processor_accepted_total", "event_type" => event_type.to_owned()).increment(n);
        }
    }

    /// Deletes committed messages, 10 per call and the calls in parallel, retrying
    /// entries SQS failed. A receipt that expired is only counted: the message was
    /// received again, and that delivery is deduplicated by the keys.
    async fn delete(&self, handles: &[&str]) {
        join_all(handles.chunks(MAX_BATCH).map(|chunk| self.delete_chunk(chunk))).await;
        self.held.let_go(handles.iter().copied());
    }

    async fn delete_chunk(&self, handles: &[&str]) {
        let stats = self.stats();
        // Entries still to delete: the attempt reads it, a partial failure narrows it.
        let pending = std::sync::Mutex::new(handles.to_vec());
        // Retry through a short SQS outage, but not past half the visibility timeout:
        // by then the message may be received again, and its redelivery is deduplicated.
        let give_up = Instant::now() + self.visibility / 2;
        let result = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
            .retry(
                Some(give_up),
                || {
                    let attempt = pending.lock().expect("pending lock").clone();
                    async move {
                        let deadline = CALL_DEADLINE.min(self.visibility / 2);
                        let failures = match within(deadline, self.processor.queue.delete(&attempt)).await {
                            Ok(failures) => failures,
                            Err(e) => {
                                warn!(error = %e, messages = attempt.len(), "delete failed; retrying");
                                return Err(attempt);
                            }
                        };
                        Stats::add(&stats.deleted, (attempt.len() - failures.len()) as u64);
                        let mut retry = Vec::new();
                        for f in failures {
                            if f.receipt_expired() {
                                Stats::add(&stats.expired_receipts, 1);
                                warn!(code = %f.code, "receipt handle expired before delete; the redelivery will be deduplicated");
                            } else if f.sender_fault {
                                Stats::add(&stats.delete_failures, 1);
                                warn!(code = %f.code, message = %f.message, "delete refused");
                            } else if let Some(handle) = attempt.get(f.index) {
                                retry.push(*handle);
                            }
                        }
                        if retry.is_empty() { Ok(()) } else { Err(retry) }
                    }
                },
                |retry: &Vec<&str>, _, _| *pending.lock().expect("pending lock") = retry.clone(),
            )
            .await;
        if let Err(left) = result {
            Stats::add(&stats.delete_failures, left.len() as u64);
            error!(messages = left.len(), "giving up deleting: they will be redelivered and deduplicated");
        }
    }

    /// Hands messages back to SQS at once (visibility 0), for another attempt or, after
    /// `maxReceiveCount` receives, the dead-letter queue.
    pub(super) async fn release(&self, handles: &[&str]) {
        let results = join_all(
            handles
                .chunks(MAX_BATCH)
                .map(|chunk| within(CALL_DEADLINE, self.processor.queue.change_visibility(chunk, Duration::ZERO))),
        )
        .await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            warn!(error = %e, "release failed; those messages reappear when their visibility times out");
        }
        Stats::add(&self.stats().released, handles.len() as u64);
        self.held.let_go(handles.iter().copied());
    }
}
