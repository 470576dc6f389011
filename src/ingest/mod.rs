//! Ingest: the processor's pipeline, the only part that knows SQS, validation and
//! the store together.
//!
//! ```text
//!  receive (N long polls) --classify--> settle: batch --commit--> delete
//!        ^ paused while the database is down     |
//!        '-- in-flight bound (backpressure)       '-- held messages: kept visible,
//!                                                     released to SQS after a deadline
//! ```
//!
//! - [`receive`]: the pollers, classification, the registry check before a miss.
//! - [`settle`]: batching, the commit, deleting after it, releasing what cannot commit.
//! - [`upkeep`]: keeping held messages invisible, probing the database, refreshing the registry.
//! - [`held`]: the messages held, and the slots that bound them.
//!
//! Delivery rules (`docs/design.md`): a message is deleted only after the transaction
//! holding its row has committed; a transient failure deletes nothing; every message
//! held is either deleted, or released back to SQS, before [`Processor::run`] returns.
//! Every SQS and database call has a deadline, so no call can hold a message past
//! its visibility or a shutdown past its timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::registry::{Registry, SharedRegistry};
use crate::sqs::{MessageQueue, Queue, QueueError, MAX_BATCH};
use crate::store::Store;
use crate::telemetry::{Liveness, Snapshot, Stats};

mod held;
pub mod probe;
mod receive;
pub mod settle;
mod upkeep;

use held::Held;

/// How the pipeline runs; `config::ProcessorArgs` fills it from flags and environment,
/// with [`Settings::default`] as the one source of the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent long-polling receive loops.
    pub pollers: usize,
    /// Long-poll wait per receive (0-20 s).
    pub wait_time: Duration,
    /// Messages received and not yet deleted or released; pollers wait at the bound.
    pub max_in_flight: usize,
    /// Bytes those messages may take (bodies and the payloads kept for the commit); pollers wait at the
    /// bound. Must fit one receive of the largest messages the queue accepts.
    pub max_held_bytes: usize,
    /// How long a received message stays invisible before the heartbeat extends it,
    /// set on every receive; `None`: the queue's own timeout, or 30 s if it is 0.
    pub visibility_timeout: Option<Duration>,
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
            max_held_bytes: 128 << 20,
            visibility_timeout: None,
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

/// The processor: one queue, one store, one registry.
pub struct Processor {
    settings: Settings,
    queue: Arc<dyn MessageQueue>,
    store: Store,
    registry: Arc<SharedRegistry>,
    stats: Arc<Stats>,
    liveness: Arc<Liveness>,
    commits: Arc<CommitWatch>,
}

impl Processor {
    /// Loads the registry; the store must be migrated already.
    pub async fn new(settings: Settings, queue: Queue, store: Store) -> anyhow::Result<Processor> {
        Processor::on(settings, Arc::new(queue), store).await
    }

    /// A processor of any [`MessageQueue`] (tests inject faults through a double).
    pub async fn on(settings: Settings, queue: Arc<dyn MessageQueue>, store: Store) -> anyhow::Result<Processor> {
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
            commits: Arc::default(),
        })
    }

    /// Live counters, for tests and metrics.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// What `/healthz`, `/readyz` and `/metrics` report for this processor.
    pub fn probe(&self) -> probe::ProcessorProbe {
        probe::ProcessorProbe {
            stats: self.stats.clone(),
            liveness: self.liveness.clone(),
            commits: self.commits.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled, then stops receiving, finishes or releases
    /// what it holds within the shutdown timeout, and returns the final counters.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<Snapshot> {
        let attributes = within(CALL_DEADLINE, self.queue.attributes()).await?;
        let visibility = match self.settings.visibility_timeout {
            Some(v) => v,
            None if attributes.visibility_timeout.is_zero() => {
                warn!("the queue's visibility timeout is 0: holding received messages for 30 s instead");
                Duration::from_secs(30)
            }
            None => attributes.visibility_timeout,
        }
        .max(Duration::from_secs(1));
        let mut settings = self.settings.clone();
        // One receive may bring MAX_BATCH messages of the largest size: the budget must fit it.
        let receive_units = MAX_BATCH as u32 * held::cost_units(attributes.max_message_size);
        let budget_units = settings.max_held_bytes / held::UNIT;
        anyhow::ensure!(
            budget_units >= receive_units as usize,
            "PROCESSOR_MAX_HELD_BYTES: expected at least {} bytes (one receive of {MAX_BATCH} messages of the queue's \
             MaximumMessageSize {}), got {}",
            receive_units as usize * held::UNIT,
            attributes.max_message_size,
            settings.max_held_bytes
        );
        if attributes.fifo && settings.committers > 1 {
            // Batches commit in the order they were formed, so a group's messages keep theirs.
            info!("FIFO queue: committing one batch at a time");
            settings.committers = 1;
        }
        let shared = Arc::new(Shared {
            held: Held::new(settings.max_in_flight.max(MAX_BATCH), settings.max_held_bytes),
            receive_units,
            healthy: watch::Sender::new(true),
            visibility,
            settings,
            shutdown: shutdown.clone(),
            processor: self,
        });
        let settings = shared.settings.clone();
        metrics::gauge!("event_processor_polling_paused").set(0.0);

        let mut background = JoinSet::new();
        background.spawn(upkeep::keep_visible(shared.clone()));
        background.spawn(upkeep::probe_database(shared.clone()));
        background.spawn(upkeep::refresh_registry(shared.clone()));
        if let Some(every) = settings.stats_interval.filter(|d| !d.is_zero()) {
            let s = shared.clone();
            background.spawn(async move {
                crate::telemetry::report(&s.processor.stats, every, || s.held.len(), || !*s.healthy.borrow()).await
            });
        }

        // One entry per receive; the in-flight bound is what holds pollers back.
        let (tx, rx) = mpsc::channel(settings.max_in_flight.div_ceil(MAX_BATCH).max(1));
        let mut pollers = JoinSet::new();
        for poller in 0..settings.pollers.max(1) {
            pollers.spawn(receive::poll(shared.clone(), tx.clone()).instrument(tracing::info_span!("poller", poller)));
        }
        drop(tx);
        let mut batcher = tokio::spawn(settle::batch(shared.clone(), rx));
        info!(
            queue = shared.processor.queue.url(),
            visibility_s = visibility.as_secs(),
            ?settings,
            "processor started"
        );

        shutdown.cancelled().await;
        info!(held = shared.held.len(), "shutting down: receiving stopped, finishing held messages");
        let deadline = tokio::time::Instant::now() + settings.shutdown_timeout;
        // A poller stuck in a call (a registry check, a full channel) is cut off: what it
        // holds is released below.
        if tokio::time::timeout_at(deadline, async { while pollers.join_next().await.is_some() {} }).await.is_err() {
            warn!("shutdown timeout reached while receiving: stopping the pollers");
            pollers.abort_all();
        }
        if tokio::time::timeout_at(deadline, &mut batcher).await.is_err() {
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

/// The longest any single SQS call may take outside a long poll; the heartbeat gives
/// its calls less when the margin is smaller.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// `call` within `deadline`, a missed deadline being a failed call.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(QueueError::new(format!("no answer from SQS within {deadline:?}"))))
}

/// Commit attempts in progress, with when each started: an attempt older than its
/// deadline means a committer is stuck, which `/healthz` reports.
#[derive(Default)]
pub struct CommitWatch {
    next: AtomicU64,
    started: Mutex<HashMap<u64, std::time::Instant>>,
}

impl CommitWatch {
    /// Marks an attempt as started until the returned guard is dropped.
    fn attempt(&self) -> impl Drop + '_ {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.started.lock().expect("commit watch lock").insert(id, std::time::Instant::now());
        scopeguard(move || {
            self.started.lock().expect("commit watch lock").remove(&id);
        })
    }

    /// How long the oldest attempt in progress has been running.
    pub fn oldest(&self) -> Option<Duration> {
        self.started.lock().expect("commit watch lock").values().map(|t| t.elapsed()).max()
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

/// State every task of a running processor shares.
struct Shared {
    processor: Processor,
    /// The processor's settings as run (FIFO queues commit one batch at a time).
    settings: Settings,
    held: Held,
    /// Byte-budget units one receive reserves before it knows what it gets.
    receive_units: u32,
    /// False while the database fails: pollers pause, the prober watches for recovery.
    healthy: watch::Sender<bool>,
    /// The queue's visibility timeout.
    visibility: Duration,
    shutdown: CancellationToken,
}

impl Shared {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn stats(&self) -> &Stats {
        &self.processor.stats
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.send_if_modified(|h| std::mem::replace(h, healthy) != healthy) {
            metrics::gauge!("event_processor_polling_paused").set(if healthy { 0.0 } else { 1.0 });
        }
    }
}
