//! Counters of what the processor did, shared by its tasks, and the periodic
//! progress line an operator watches.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::validation::Reason;

#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    /// New `rejected_message` rows, by [`Reason::index`].
    pub rejected: [AtomicU64; Reason::ALL.len()],
    pub deleted: AtomicU64,
    /// Deletes that failed for good; the redelivery will be deduplicated.
    pub delete_failures: AtomicU64,
    /// Receipt handles that expired before delete or extension.
    pub expired_receipts: AtomicU64,
    /// Failed commit attempts that were retried.
    pub commit_retries: AtomicU64,
    /// Messages handed back to SQS unfinished (database down too long, or shutdown).
    pub released: AtomicU64,
    /// Visibility extensions of held messages.
    pub extended: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub received: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: [u64; Reason::ALL.len()],
    pub deleted: u64,
    pub delete_failures: u64,
    pub expired_receipts: u64,
    pub commit_retries: u64,
    pub released: u64,
    pub extended: u64,
}

impl Snapshot {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn rejected_for(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()]
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            stored: self.stored.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
            deleted: self.deleted.load(Relaxed),
            delete_failures: self.delete_failures.load(Relaxed),
            expired_receipts: self.expired_receipts.load(Relaxed),
            commit_retries: self.commit_retries.load(Relaxed),
            released: self.released.load(Relaxed),
            extended: self.extended.load(Relaxed),
        }
    }
}

/// Logs one progress line per `every` while `in_flight` reports the messages held.
pub async fn report(stats: &Stats, every: Duration, in_flight: impl Fn() -> usize, paused: impl Fn() -> bool) {
    let mut previous = (stats.snapshot(), Instant::now());
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = (stats.snapshot(), Instant::now());
        let (s, p) = (&now.0, &previous.0);
        let rate = (s.deleted - p.deleted) as f64 / now.1.duration_since(previous.1).as_secs_f64();
        let rejected: Vec<String> = Reason::ALL
            .into_iter()
            .filter(|r| s.rejected_for(*r) > 0)
            .map(|r| format!("{r}={}", s.rejected_for(r)))
            .collect();
        tracing::info!(
            received = s.received,
            stored = s.stored,
            duplicates = s.duplicates,
            rejected = s.rejected_total(),
            by_reason = %rejected.join(","),
            deleted = s.deleted,
            in_flight = in_flight(),
            paused = paused(),
            rate_per_s = format_args!("{rate:.0}"),
            "progress"
        );
        previous = now;
    }
}
