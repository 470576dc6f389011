//! Upkeep while the processor runs: keeping held messages invisible, probing the
//! database while it is marked down, refreshing the registry.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Shared;
use crate::backoff::Backoff;
use crate::sqs::MAX_BATCH;
use crate::telemetry::Stats;

/// Extends the visibility of held messages before it runs out, so slow commits or a
/// database outage never let SQS hand them to another consumer.
pub(super) async fn keep_visible(shared: Arc<Shared>) {
    let v = shared.visibility;
    let period = (v / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::time::sleep(period).await;
        shared.processor.liveness.beat();
        let now = Instant::now();
        // Extended once less than half the timeout is left: the extension calls for a
        // thousand held messages take time of their own, and must land before expiry.
        let due = shared.held.due(now + v / 2, now + v);
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
pub(super) async fn probe_database(shared: Arc<Shared>) {
    let mut healthy = shared.healthy.subscribe();
    loop {
        if healthy.wait_for(|h| !*h).await.is_err() {
            return;
        }
        warn!("database unavailable: receiving paused");
        // A commit that succeeds meanwhile marks it healthy too: then stop probing.
        let _ = Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
            .retry(
                None,
                || async {
                    if *healthy.borrow() {
                        return Ok(());
                    }
                    shared.processor.store.ping().await.map(|()| shared.set_healthy(true))
                },
                |_, _, _| {},
            )
            .await;
        info!("database available: receiving resumed");
    }
}

/// Checks the registry version periodically, so changed schemas apply without a restart.
pub(super) async fn refresh_registry(shared: Arc<Shared>) {
    let every = shared.settings().registry_refresh.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        shared.check_registry(chrono::Utc::now()).await;
    }
}
