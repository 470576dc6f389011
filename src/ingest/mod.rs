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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::registry::{Registry, SharedRegistry};
use crate::sqs::{Queue, MAX_BATCH};
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

    /// What `/healthz`, `/readyz` and `/metrics` report for this processor.
    pub fn probe(&self) -> probe::ProcessorProbe {
        probe::ProcessorProbe {
            stats: self.stats.clone(),
            liveness: self.liveness.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
        }
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
        background.spawn(upkeep::keep_visible(shared.clone()));
        background.spawn(upkeep::probe_database(shared.clone()));
        background.spawn(upkeep::refresh_registry(shared.clone()));
        if let Some(every) = settings.stats_interval.filter(|d| !d.is_zero()) {
            let s = shared.clone();
            background.spawn(async move {
                crate::telemetry::report(&s.processor.stats, every, || s.held.len(), || !*s.healthy.borrow()).await
            });
        }

        let (tx, rx) = mpsc::channel(settings.max_in_flight.max(MAX_BATCH));
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
}
