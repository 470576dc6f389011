//! The raw drain: receive and delete, nothing else. It is the ceiling the processor is
//! measured against in the end-to-end benchmark: same SDK, same number of long polls,
//! the same receive requests (20 s wait, the queue's visibility timeout set explicitly,
//! the same attributes), deletes pipelined like the processor's.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::sqs::{MessageQueue, Queue, MAX_BATCH};

#[derive(Debug, Clone, Serialize)]
pub struct DrainSummary {
    pub deleted: u64,
    /// From the first message received to the last one deleted.
    pub seconds: f64,
    pub per_second: f64,
}

/// Drains until `count` messages are deleted, or the queue stays empty for `idle`
/// (noticed after a long poll, so within 20 s of it).
pub async fn run(queue: Queue, pollers: usize, count: Option<u64>, idle: Duration) -> anyhow::Result<DrainSummary> {
    // As the processor asks: LocalStack answers a 20 s long poll more cheaply than a 1 s one.
    let attributes = MessageQueue::attributes(&queue).await?;
    let visibility = Some(attributes.visibility_timeout.max(Duration::from_secs(1)));
    let wait = Duration::from_secs(20);
    let deleted = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    let last = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let in_flight = Arc::new(Semaphore::new(1000));
    // Cancelled once `count` messages are deleted, ending the long polls still waiting.
    let counted = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..pollers.max(1) {
        let (queue, deleted, first, last, in_flight, counted) =
            (queue.clone(), deleted.clone(), first.clone(), last.clone(), in_flight.clone(), counted.clone());
        tasks.spawn(async move {
            let mut deletes = tokio::task::JoinSet::new();
            let mut idle_since = Instant::now();
            loop {
                if count.is_some_and(|c| deleted.load(Relaxed) >= c) || idle_since.elapsed() >= idle {
                    break;
                }
                let permits = in_flight.clone().acquire_many_owned(MAX_BATCH as u32).await?;
                let messages = tokio::select! {
                    _ = counted.cancelled() => break,
                    received = queue.receive_with(MAX_BATCH, wait, visibility) => received?,
                };
                if messages.is_empty() {
                    continue;
                }
                idle_since = Instant::now();
                first.get_or_init(Instant::now);
                let (queue, deleted, last, counted) = (queue.clone(), deleted.clone(), last.clone(), counted.clone());
                deletes.spawn(async move {
                    let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
                    let failures = queue.delete(&handles).await?;
                    let done = (handles.len() - failures.len()) as u64;
                    let total = deleted.fetch_add(done, Relaxed) + done;
                    *last.lock().expect("lock") = Some(Instant::now());
                    if count.is_some_and(|c| total >= c) {
                        counted.cancel();
                    }
                    drop(permits);
                    anyhow::Ok(())
                });
                while let Some(done) = deletes.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = deletes.join_next().await {
                done??;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let deleted = deleted.load(Relaxed);
    let seconds = match (first.get(), *last.lock().expect("lock")) {
        (Some(first), Some(last)) => last.duration_since(*first).as_secs_f64(),
        _ => 0.0,
    };
    Ok(DrainSummary { deleted, seconds, per_second: deleted as f64 / seconds.max(1e-9) })
}
