//! The pipeline: the only module that knows every other one.
//!
//! ```text
//!  pollers (N long polls) --classify--> batcher --batch--> committers (M) --commit--> delete
//!        ^ paused while the database is down        |
//!        '-- in-flight bound (backpressure)          '-- held messages: visibility kept alive,
//!                                                        released to SQS after a deadline
//! ```
//!
//! Delivery rules (see `shared/design.md`): a message is deleted only after the
//! transaction holding its row has committed; a transient failure deletes nothing;
//! every message held is either deleted, or released back to SQS, before `run`
//! returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::queue::{Queue, Received, MAX_BATCH};
use crate::registry::{Registry, SharedRegistry};
use crate::stats::{Snapshot, Stats};
use crate::store::{CommitOutcome, Store};
use crate::validation::{classify, Classified, Verdict};

/// How the pipeline runs; `config::ProcessorArgs` fills it from flags and environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent long-polling receive loops.
    pub pollers: usize,
    /// Long-poll wait per receive (0-20 s).
    pub wait_time: Duration,
    /// Messages received and not yet deleted or released; pollers wait at the bound.
    pub max_in_flight: usize,
    /// Most messages per committed batch.
    pub batch_size: usize,
    /// Longest a batch waits to fill up.
    pub batch_window: Duration,
    /// Batches committed concurrently.
    pub committers: usize,
    /// While commits fail, how long a batch is held before it is released to SQS.
    pub release_after: Duration,
    /// After shutdown is requested, how long held messages may take to finish.
    pub shutdown_timeout: Duration,
    /// Progress log period; `None` for no progress lines.
    pub stats_interval: Option<Duration>,
    /// How often the registry is reloaded even without a miss.
    pub registry_refresh: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pollers: 4,
            wait_time: Duration::from_secs(20),
            max_in_flight: 1000,
            batch_size: 100,
            batch_window: Duration::from_millis(20),
            committers: 4,
            release_after: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(20),
            stats_interval: Some(Duration::from_secs(5)),
            registry_refresh: Duration::from_secs(5),
        }
    }
}

/// When the processor's loops last showed they are turning, for `/healthz`.
#[derive(Debug)]
pub struct Liveness(std::sync::Mutex<std::time::Instant>);

impl Liveness {
    fn beat(&self) {
        *self.0.lock().expect("liveness lock") = std::time::Instant::now();
    }

    pub fn since_last_beat(&self) -> Duration {
        self.0.lock().expect("liveness lock").elapsed()
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness(std::sync::Mutex::new(std::time::Instant::now()))
    }
}

/// On shutdown, how long a receive already under way may take to answer.
const RECEIVE_GRACE: Duration = Duration::from_millis(500);

/// The processor: one queue, one store, one registry.
pub struct Processor {
    settings: Settings,
    queue: Queue,
    store: Store,
    registry: Arc<SharedRegistry>,
    stats: Arc<Stats>,
    liveness: Arc<Liveness>,
}

impl Processor {
    /// Loads the registry; the store must be migrated already.
    pub async fn new(settings: Settings, queue: Queue, store: Store) -> anyhow::Result<Processor> {
        let conn = store.pool().get().await?;
        let registry = Registry::load(&**conn, None).await?;
        let (clients, event_types) = registry.size();
        info!(clients, event_types, "registry loaded");
        Ok(Processor {
            settings,
            queue,
            store,
            registry: Arc::new(SharedRegistry::new(registry)),
            stats: Arc::default(),
            liveness: Arc::default(),
        })
    }

    /// Live counters, for tests and metrics.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Liveness of the loops, for `/healthz`.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Runs until `shutdown` is cancelled, then stops receiving, finishes or releases
    /// what it holds within the shutdown timeout, and returns the final counters.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<Snapshot> {
        let visibility = self.queue.visibility_timeout().await?;
        let settings = self.settings.clone();
        let shared = Arc::new(Shared {
            held: Held::new(settings.max_in_flight.max(MAX_BATCH)),
            healthy: watch::Sender::new(true),
            visibility,
            shutdown: shutdown.clone(),
            processor: self,
        });

        let mut background = JoinSet::new();
        background.spawn(keep_visible(shared.clone()));
        background.spawn(probe_database(shared.clone()));
        background.spawn(refresh_registry(shared.clone()));
        if let Some(every) = settings.stats_interval.filter(|d| !d.is_zero()) {
            let s = shared.clone();
            background.spawn(async move {
                crate::stats::report(&s.processor.stats, every, || s.held.len(), || !*s.healthy.borrow()).await
            });
        }

        let (tx, rx) = mpsc::channel(settings.max_in_flight.max(MAX_BATCH));
        let mut pollers = JoinSet::new();
        for poller in 0..settings.pollers.max(1) {
            pollers.spawn(poll(shared.clone(), tx.clone()).instrument(tracing::info_span!("poller", poller)));
        }
        drop(tx);
        let mut batcher = tokio::spawn(batch(shared.clone(), rx));
        info!(
            queue = shared.processor.queue.url(),
            visibility_s = visibility.as_secs(),
            ?settings,
            "processor started"
        );

        shutdown.cancelled().await;
        info!(held = shared.held.len(), "shutting down: receiving stopped, finishing held messages");
        while pollers.join_next().await.is_some() {}
        if tokio::time::timeout(settings.shutdown_timeout, &mut batcher).await.is_err() {
            warn!("shutdown timeout reached: releasing unfinished messages to SQS");
            batcher.abort();
            let _ = batcher.await;
        }
        let leftover = shared.held.all();
        if !leftover.is_empty() {
            shared.release(&leftover.iter().map(String::as_str).collect::<Vec<_>>()).await;
        }
        background.abort_all();
        let summary = shared.processor.stats.snapshot();
        info!(?summary, "processor stopped");
        Ok(summary)
    }
}

/// State every task of a running processor shares.
struct Shared {
    processor: Processor,
    held: Held,
    /// False while the database fails: pollers pause, the prober watches for recovery.
    healthy: watch::Sender<bool>,
    /// The queue's visibility timeout.
    visibility: Duration,
    shutdown: CancellationToken,
}

/// Messages received and not yet deleted or released, by receipt handle, with when
/// SQS will make them visible again; and the slots that bound how many there are.
struct Held {
    slots: Arc<Semaphore>,
    visible_until: Mutex<HashMap<String, Instant>>,
}

impl Held {
    fn new(capacity: usize) -> Self {
        Held { slots: Arc::new(Semaphore::new(capacity)), visible_until: Mutex::default() }
    }

    fn len(&self) -> usize {
        self.visible_until.lock().expect("held lock").len()
    }

    fn hold<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>, until: Instant) {
        let mut held = self.visible_until.lock().expect("held lock");
        held.extend(receipt_handles.into_iter().map(|h| (h.to_owned(), until)));
        metrics::gauge!("event_processor_in_flight").set(held.len() as f64);
    }

    /// Forgets messages that were deleted or released, freeing their slots.
    fn let_go<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut held = self.visible_until.lock().expect("held lock");
        let freed = receipt_handles.into_iter().filter(|h| held.remove(*h).is_some()).count();
        metrics::gauge!("event_processor_in_flight").set(held.len() as f64);
        drop(held);
        self.slots.add_permits(freed);
    }

    /// Receipt handles that become visible before `before`, now marked visible until `until`.
    fn due(&self, before: Instant, until: Instant) -> Vec<String> {
        let mut held = self.visible_until.lock().expect("held lock");
        held.iter_mut()
            .filter(|(_, t)| **t < before)
            .map(|(handle, t)| {
                *t = until;
                handle.clone()
            })
            .collect()
    }

    fn all(&self) -> Vec<String> {
        self.visible_until.lock().expect("held lock").keys().cloned().collect()
    }
}

impl Shared {
    fn settings(&self) -> &Settings {
        &self.processor.settings
    }

    fn stats(&self) -> &Stats {
        &self.processor.stats
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.send_if_modified(|h| std::mem::replace(h, healthy) != healthy) {
            metrics::gauge!("event_processor_polling_paused").set(if healthy { 0.0 } else { 1.0 });
        }
    }

    /// Classifies a message. Before rejecting one for a registry miss, makes sure the
    /// registry includes every change committed before the message was received.
    async fn classify(&self, message: &Received, registry: &mut Arc<Registry>) -> Verdict {
        let verdict = classify(&message.body, &message.message_id, registry);
        let registry_miss = verdict.reason().is_some_and(|r| r.is_registry_miss());
        if !registry_miss || self.processor.registry.checked_since(message.received_at) {
            return verdict;
        }
        self.check_registry(message.received_at).await;
        let latest = self.processor.registry.snapshot();
        if Arc::ptr_eq(&latest, registry) {
            return verdict;
        }
        *registry = latest;
        classify(&message.body, &message.message_id, registry)
    }

    /// Brings the registry snapshot up to every change committed before `at`; a failure
    /// is logged and leaves the snapshot as it was.
    async fn check_registry(&self, at: chrono::DateTime<chrono::Utc>) {
        let result = match self.processor.store.pool().get().await {
            Ok(conn) => self.processor.registry.ensure_current(&**conn, at).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            warn!(error = %e, "registry check failed");
        }
    }

    fn record(&self, outcome: &CommitOutcome, batch: &[Classified]) {
        let stats = self.stats();
        Stats::add(&stats.stored, outcome.stored);
        Stats::add(&stats.duplicates, outcome.duplicates);
        let now = chrono::Utc::now();
        let lag = metrics::histogram!("event_processor_lag_seconds");
        // Counted per event type once per batch: a labelled counter lookup per message costs.
        let mut accepted: HashMap<&str, u64> = HashMap::new();
        for item in batch {
            match &item.verdict {
                Verdict::Rejected(r) => Stats::add(&stats.rejected[r.rejection.reason.index()], 1),
                Verdict::Accepted(e) => *accepted.entry(&e.event_type).or_default() += 1,
            }
            if let Some(sent_at) = item.message.sent_at {
                lag.record((now - sent_at).to_std().unwrap_or_default().as_secs_f64());
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
    async fn delete(&self, batch: &[Classified]) {
        let handles: Vec<&str> = batch.iter().map(|c| c.message.receipt_handle.as_str()).collect();
        join_all(handles.chunks(MAX_BATCH).map(|chunk| self.delete_chunk(chunk))).await;
        self.held.let_go(handles);
    }

    async fn delete_chunk(&self, handles: &[&str]) {
        let stats = self.stats();
        let mut pending = handles.to_vec();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        // Retry through a short SQS outage, but not past half the visibility timeout:
        // by then the message may be received again, and its redelivery is deduplicated.
        let give_up = Instant::now() + self.visibility / 2;
        while Instant::now() < give_up {
            match self.processor.queue.delete(&pending).await {
                Ok(failures) => {
                    Stats::add(&stats.deleted, (pending.len() - failures.len()) as u64);
                    let mut retry = Vec::new();
                    for f in failures {
                        if f.receipt_expired() {
                            Stats::add(&stats.expired_receipts, 1);
                            warn!(code = %f.code, "receipt handle expired before delete; the redelivery will be deduplicated");
                        } else if f.sender_fault {
                            Stats::add(&stats.delete_failures, 1);
                            warn!(code = %f.code, message = %f.message, "delete refused");
                        } else if let Some(handle) = pending.get(f.index) {
                            retry.push(*handle);
                        }
                    }
                    if retry.is_empty() {
                        return;
                    }
                    pending = retry;
                }
                Err(e) => warn!(error = %e, messages = pending.len(), "delete failed; retrying"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        Stats::add(&stats.delete_failures, pending.len() as u64);
        error!(messages = pending.len(), "giving up deleting: they will be redelivered and deduplicated");
    }

    /// Hands messages back to SQS at once (visibility 0), for another attempt or, after
    /// `maxReceiveCount` receives, the dead-letter queue.
    async fn release(&self, handles: &[&str]) {
        let results = join_all(
            handles.chunks(MAX_BATCH).map(|chunk| self.processor.queue.change_visibility(chunk, Duration::ZERO)),
        )
        .await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            warn!(error = %e, "release failed; those messages reappear when their visibility times out");
        }
        Stats::add(&self.stats().released, handles.len() as u64);
        self.held.let_go(handles.iter().copied());
    }
}

/// One receive loop: wait for the database and for in-flight room, long-poll,
/// classify, pass on. Errors back off with jitter.
async fn poll(shared: Arc<Shared>, tx: mpsc::Sender<Classified>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(20));
    let mut healthy = shared.healthy.subscribe();
    let cancel = shared.shutdown.clone();
    loop {
        // What is received while the database is down could not be stored: don't.
        tokio::select! {
            _ = cancel.cancelled() => return,
            ok = healthy.wait_for(|h| *h) => if ok.is_err() { return },
        }
        let room = tokio::select! {
            _ = cancel.cancelled() => return,
            permits = shared.held.slots.acquire_many(MAX_BATCH as u32) => permits.expect("slots are never closed"),
        };
        room.forget();
        let receive = shared.processor.queue.receive(MAX_BATCH, shared.settings().wait_time);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            // A receive that is answering lets its messages be finished rather than
            // dropped (they would stay invisible for a whole visibility timeout); one
            // that is only waiting on an empty queue is abandoned.
            _ = cancel.cancelled() => match tokio::time::timeout(RECEIVE_GRACE, &mut receive).await {
                Ok(r) => r,
                Err(_) => {
                    shared.held.slots.add_permits(MAX_BATCH);
                    return;
                }
            },
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                shared.held.slots.add_permits(MAX_BATCH);
                let delay = backoff.next_delay();
                if e.queue_missing || backoff.failures() == 1 || backoff.failures().is_multiple_of(10) {
                    warn!(error = %e, failures = backoff.failures(), retry_in = ?delay, "receive failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if backoff.failures() > 0 {
            info!(after_failures = backoff.failures(), "receiving again");
            backoff.reset();
        }
        shared.held.slots.add_permits(MAX_BATCH - messages.len());
        Stats::add(&shared.stats().received, messages.len() as u64);
        let visible_until = Instant::now() + shared.visibility;
        shared.held.hold(messages.iter().map(|m| m.receipt_handle.as_str()), visible_until);
        let mut registry = shared.processor.registry.snapshot();
        for message in messages {
            let verdict = shared.classify(&message, &mut registry).await;
            if tx.send(Classified { message, verdict }).await.is_err() {
                return; // the batcher is gone: `run` releases what is held
            }
        }
    }
}

/// Groups classified messages into batches (by size, or when the window closes) and
/// hands each to a committer.
async fn batch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Classified>) {
    let settings = shared.settings().clone();
    let committers = Arc::new(Semaphore::new(settings.committers.max(1)));
    let mut settling = JoinSet::new();
    let mut buffer = Vec::with_capacity(settings.batch_size);
    loop {
        if rx.recv_many(&mut buffer, settings.batch_size).await == 0 {
            break; // every poller has stopped
        }
        let window = Instant::now() + settings.batch_window;
        while buffer.len() < settings.batch_size {
            let room = settings.batch_size - buffer.len();
            match tokio::time::timeout_at(window, rx.recv_many(&mut buffer, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let full = std::mem::replace(&mut buffer, Vec::with_capacity(settings.batch_size));
        let permit = committers.clone().acquire_owned().await.expect("committers are never closed");
        settling.spawn(settle(shared.clone(), full, permit));
        while settling.try_join_next().is_some() {}
    }
    while settling.join_next().await.is_some() {}
}

/// Commits a batch (retrying transient failures with backoff while the heartbeat
/// keeps its messages invisible), then deletes its messages. A batch that cannot be
/// committed within `release_after` is released to SQS instead.
async fn settle(shared: Arc<Shared>, mut batch: Vec<Classified>, _committer: OwnedSemaphorePermit) {
    let span = tracing::info_span!("batch", size = batch.len());
    async move {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let attempt = Instant::now();
            match shared.processor.store.commit_batch(&mut batch).await {
                Ok(outcome) => {
                    metrics::histogram!("event_processor_commit_seconds").record(attempt.elapsed().as_secs_f64());
                    shared.set_healthy(true);
                    shared.record(&outcome, &batch);
                    break;
                }
                Err(e) => {
                    shared.set_healthy(false);
                    Stats::add(&shared.stats().commit_retries, 1);
                    if started.elapsed() >= shared.settings().release_after {
                        error!(error = %e, held_for = ?started.elapsed(), "commit keeps failing: releasing the batch to SQS");
                        let handles: Vec<&str> = batch.iter().map(|c| c.message.receipt_handle.as_str()).collect();
                        shared.release(&handles).await;
                        return;
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %e, attempt = backoff.failures(), retry_in = ?delay, "commit failed; holding the batch");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        shared.delete(&batch).await;
    }
    .instrument(span)
    .await
}

/// Extends the visibility of held messages before it runs out, so slow commits or a
/// database outage never let SQS hand them to another consumer.
async fn keep_visible(shared: Arc<Shared>) {
    let v = shared.visibility;
    let period = (v / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::time::sleep(period).await;
        shared.processor.liveness.beat();
        let now = Instant::now();
        let due = shared.held.due(now + v / 3, now + v);
        if due.is_empty() {
            continue;
        }
        let handles: Vec<&str> = due.iter().map(String::as_str).collect();
        let results =
            join_all(handles.chunks(MAX_BATCH).map(|chunk| shared.processor.queue.change_visibility(chunk, v))).await;
        for (chunk, result) in handles.chunks(MAX_BATCH).zip(results) {
            match result {
                Ok(failures) => {
                    Stats::add(&shared.stats().extended, (chunk.len() - failures.len()) as u64);
                    Stats::add(&shared.stats().expired_receipts, failures.len() as u64);
                }
                Err(e) => warn!(error = %e, "visibility extension failed"),
            }
        }
    }
}

/// While the database is marked down, pings it and marks it up again when it answers.
async fn probe_database(shared: Arc<Shared>) {
    let mut healthy = shared.healthy.subscribe();
    loop {
        if healthy.wait_for(|h| !*h).await.is_err() {
            return;
        }
        warn!("database unavailable: receiving paused");
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        while !*healthy.borrow() {
            tokio::time::sleep(backoff.next_delay()).await;
            if shared.processor.store.ping().await.is_ok() {
                shared.set_healthy(true);
            }
        }
        info!("database available: receiving resumed");
    }
}

/// Checks the registry version periodically, so changed schemas apply without a restart.
async fn refresh_registry(shared: Arc<Shared>) {
    let every = shared.settings().registry_refresh.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        shared.check_registry(chrono::Utc::now()).await;
    }
}
