//! Upkeep while the processor runs: keeping held messages invisible, probing the
//! database while it is marked down, refreshing the registry.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{within, Shared, CALL_DEADLINE};
use crate::backoff::Backoff;
use crate::sqs::MAX_BATCH;
use crate::telemetry::Stats;

/// Extends the visibility of held messages before it runs out, so slow commits or a
/// database outage never let SQS hand them to another consumer. Extensions SQS did
/// not confirm are retried within half a second.
pub(super) async fn keep_visible(shared: Arc<Shared>) {
    let period = (shared.visibility / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut next = period;
    loop {
        tokio::time::sleep(next).await;
        shared.processor.liveness.beat();
        let unconfirmed = extend_due(&shared).await;
        next = if unconfirmed > 0 { period.min(Duration::from_millis(500)) } else { period };
    }
}

/// Extends every held message with less than half its visibility left; returns how
/// many extensions SQS did not confirm. A new deadline is recorded only for entries
/// SQS confirmed, counted from before the call was made.
pub(super) async fn extend_due(shared: &Shared) -> usize {
    let v = shared.visibility;
    let asked = Instant::now();
    // Extended once less than half the timeout is left: the extension calls for a
    // thousand held messages take time of their own, and must land before expiry.
    let due = shared.held.due(asked + v / 2);
    if due.is_empty() {
        return 0;
    }
    let calls = due.chunks(MAX_BATCH).map(|chunk| async move {
        // Each call gets half of what is left of its earliest message's visibility, so a
        // slow call fails while a retry can still land.
        let margin = chunk.iter().map(|(_, until)| until.saturating_duration_since(asked)).min().unwrap_or_default();
        let deadline = (margin / 2).clamp(Duration::from_millis(100), CALL_DEADLINE);
        let handles: Vec<&str> = chunk.iter().map(|(h, _)| h.as_str()).collect();
        let result = within(deadline, shared.processor.queue.change_visibility(&handles, v)).await;
        (handles, result)
    });
    let mut unconfirmed = 0;
    for (handles, result) in join_all(calls).await {
        match result {
            Ok(failures) => {
                let mut refused = vec![false; handles.len()];
                for f in &failures {
                    let Some(slot) = refused.get_mut(f.index) else { continue };
                    *slot = true;
                    if f.receipt_expired() {
                        // Received again elsewhere: that delivery is deduplicated. Not
                        // extendable any more, so it is not retried either.
                        Stats::add(&shared.stats().expired_receipts, 1);
                        shared.held.extended([handles[f.index]], asked + Duration::from_secs(43_200));
                    } else {
                        unconfirmed += 1;
                        warn!(code = %f.code, message = %f.message, "visibility extension refused; retrying");
                    }
                }
                let confirmed: Vec<&str> =
                    handles.iter().zip(&refused).filter(|(_, refused)| !**refused).map(|(h, _)| *h).collect();
                Stats::add(&shared.stats().extended, confirmed.len() as u64);
                shared.held.extended(confirmed, asked + v);
            }
            Err(e) => {
                unconfirmed += handles.len();
                warn!(error = %e, messages = handles.len(), "visibility extension failed; retrying");
            }
        }
    }
    unconfirmed
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
