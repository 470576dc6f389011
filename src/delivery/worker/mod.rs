//! One consumer's delivery loop, run by the sender that holds its lease: read the
//! next events after the cursor, post them in order with up to `max_in_flight`
//! requests at once, retry each on the schedule, park what runs out of retries, and
//! commit the cursor (with the attempts and parked events) fenced by the lease and
//! the consumer's generation. The cursor only passes an event that was delivered or
//! parked, so a crash or a lost lease delivers again from the cursor, never skips.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::log::{self, LogEvent, Position, Selection, EVENT_COLUMNS};
use super::signature::Secret;
use super::webhook::Poster;
use super::Settings;
use crate::backoff::Backoff;
use crate::store::Store;

mod commit;
mod deliver;

/// Until when this sender may still start a request for a consumer: the lease as
/// last renewed, measured on this machine from before the renewal was sent.
#[derive(Debug)]
pub(super) struct LeaseClock(Mutex<Instant>);

impl LeaseClock {
    pub(super) fn until(until: Instant) -> Self {
        LeaseClock(Mutex::new(until))
    }

    pub(super) fn extend(&self, until: Instant) {
        *self.0.lock().expect("lease lock") = until;
    }

    /// Whether a request that may last `timeout` ends before the lease could lapse,
    /// so two senders never post to one consumer at the same time.
    fn covers(&self, timeout: Duration) -> bool {
        Instant::now() + timeout < *self.0.lock().expect("lease lock")
    }
}

/// Why a worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exit {
    Shutdown,
    /// The lease was lost, or an operator changed the consumer (pause, reset).
    Fenced,
    /// Disabled: `410 Gone`, or failing for too long.
    Disabled(String),
    /// Not active (or gone) when the worker started.
    Inactive,
}

/// What became of one event.
enum Fate {
    Delivered,
    Parked(Parked),
    Disable(String),
    /// Shutdown or the lease ran out mid-retry: not delivered, the cursor stays before it.
    Stopped,
}

struct Parked {
    position: Position,
    event_id: String,
    attempts: i32,
    last_status: Option<i32>,
    last_error: String,
    snippet: Option<String>,
}

struct AttemptRow {
    position: Position,
    event_id: String,
    attempt: i32,
    status: Option<i32>,
    error: Option<String>,
    duration_ms: i32,
    at: DateTime<Utc>,
}

/// The consumer as the worker serves it.
struct Target {
    label: String,
    endpoint: String,
    secret: Secret,
    timeout: Duration,
    window: usize,
    generation: i64,
    selection: Selection,
}

pub(super) struct Worker {
    pub(super) consumer_id: i64,
    pub(super) settings: Arc<Settings>,
    pub(super) store: Store,
    pub(super) poster: Poster,
    pub(super) lease: Arc<LeaseClock>,
    pub(super) cancel: CancellationToken,
}

/// What is done but not yet committed.
#[derive(Default)]
struct Uncommitted {
    attempts: Vec<AttemptRow>,
    parked: Vec<Parked>,
    /// Parked events delivered on replay: their parked rows go.
    unparked: Vec<Position>,
}

/// The metrics every delivery touches, looked up once per worker rather than per event.
struct Meters {
    delivered: metrics::Counter,
    delivered_attempts: metrics::Counter,
    lag: metrics::Histogram,
}

impl Meters {
    fn new() -> Meters {
        Meters {
            delivered: metrics::counter!("event_sender_delivered_total"),
            delivered_attempts: metrics::counter!("event_sender_attempts_total", "outcome" => "2xx"),
            lag: metrics::histogram!("event_sender_delivery_lag_seconds"),
        }
    }
}

/// A commit's content, taken while deliveries go on.
struct Snapshot {
    cursor: Position,
    failing: Option<DateTime<Utc>>,
    work: Uncommitted,
}

/// One consumer's state while its worker runs.
struct Run<'a> {
    worker: &'a Worker,
    target: Target,
    cursor: Position,
    committed: Position,
    /// Since when every attempt failed; shared by the window's concurrent deliveries.
    failing_since: Mutex<Option<DateTime<Utc>>>,
    failing_committed: Option<DateTime<Utc>>,
    pending: Mutex<Uncommitted>,
    last_commit: Instant,
    meters: Meters,
    /// The next page, read while the previous one was delivered: (read after, page).
    prefetched: Option<(Position, (Vec<LogEvent>, i64))>,
}

impl Worker {
    pub(super) async fn run(self) -> Exit {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut run = loop {
            match self.load().await {
                Ok(Some(run)) => break run,
                Ok(None) => return Exit::Inactive,
                Err(e) => {
                    warn!(consumer = self.consumer_id, error = %e, "cannot load the consumer; retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Exit::Shutdown,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        info!(consumer = %run.target.label, cursor = %run.cursor, window = run.target.window, "delivering");
        let exit = run.deliver_until_stopped(&mut backoff).await;
        info!(consumer = %run.target.label, cursor = %run.cursor, ?exit, "stopped delivering");
        exit
    }

    async fn load(&self) -> anyhow::Result<Option<Run<'_>>> {
        let conn = self.store.pool().get().await?;
        let Some(row) = conn
            .query_opt(
                "SELECT client_id, name, endpoint, secret, timeout_ms, max_in_flight, cursor_xact, cursor_seq,
                        generation, failing_since
                 FROM consumer WHERE id = $1 AND state = 'active' AND lease_owner = $2",
                &[&self.consumer_id, &self.settings.instance],
            )
            .await?
        else {
            return Ok(None);
        };
        let subscriptions = conn
            .query(
                "SELECT event_type, coalesce(version, 0) FROM consumer_subscription WHERE consumer_id = $1",
                &[&self.consumer_id],
            )
            .await?;
        let client_id: String = row.get(0);
        let name: String = row.get(1);
        let secret: String = row.get(3);
        let target = Target {
            label: format!("{client_id}/{name}"),
            endpoint: row.get(2),
            secret: Secret::parse(&secret).map_err(|e| anyhow::anyhow!("consumer {client_id}/{name}: secret: {e}"))?,
            // A request must end well inside the lease, or another sender could
            // take the consumer over while it is still in flight.
            timeout: Duration::from_millis(row.get::<_, i32>(4) as u64).min(self.settings.lease / 2),
            window: row.get::<_, i32>(5).max(1) as usize,
            generation: row.get(8),
            selection: Selection {
                client_id,
                event_types: subscriptions.iter().map(|r| r.get(0)).collect(),
                versions: subscriptions.iter().map(|r| r.get(1)).collect(),
            },
        };
        let cursor = Position { xact: row.get(6), seq: row.get(7) };
        let failing_since = row.get(9);
        Ok(Some(Run {
            worker: self,
            target,
            cursor,
            committed: cursor,
            failing_since: Mutex::new(failing_since),
            failing_committed: failing_since,
            pending: Mutex::default(),
            last_commit: Instant::now(),
            meters: Meters::new(),
            prefetched: None,
        }))
    }
}

/// The horizon-only cursor moves of an idle consumer are committed this rarely.
const IDLE_COMMIT: Duration = Duration::from_secs(10);

impl Run<'_> {
    async fn deliver_until_stopped(&mut self, backoff: &mut Backoff) -> Exit {
        loop {
            if self.worker.cancel.is_cancelled() {
                let _ = self.commit(None).await;
                return Exit::Shutdown;
            }
            match self.step().await {
                Ok(None) => backoff.reset(),
                Ok(Some(exit)) => return exit,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(consumer = %self.target.label, error = %e, retry_in = ?delay, "delivery step failed");
                    tokio::select! {
                        _ = self.worker.cancel.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One round: parked events asked for again, else the next events after the
    /// cursor. `Some` when the worker must stop.
    async fn step(&mut self) -> anyhow::Result<Option<Exit>> {
        let replays = self.replays().await?;
        if !replays.is_empty() {
            for event in replays {
                let position = event.position;
                match self.deliver(&event).await {
                    Fate::Delivered => self.pending.lock().expect("pending").unparked.push(position),
                    Fate::Parked(p) => self.pending.lock().expect("pending").parked.push(p),
                    Fate::Disable(reason) => return self.disable(reason).await.map(Some),
                    Fate::Stopped => break,
                }
            }
            return self.commit(None).await.map(|()| None);
        }

        let batch_size = self.worker.settings.batch_size;
        let (events, horizon) = match self.prefetched.take() {
            Some((after, page)) if after == self.cursor => page,
            _ => self.read(self.cursor).await?,
        };
        let complete = (events.len() as i64) < batch_size;
        let idle = events.is_empty();
        // While this page is delivered, the next one is read and what was done before
        // is committed: the database stays off the delivery path.
        let next_after = events.last().map(|e| e.position).filter(|_| !complete);
        let snapshot =
            (self.last_commit.elapsed() >= self.worker.settings.commit_interval).then(|| self.snapshot()).flatten();
        let ((handled, stop), next, written) = {
            let this = &*self;
            tokio::join!(
                this.deliver_in_order(&events),
                async {
                    match next_after {
                        Some(after) => Some(this.read(after).await.map(|page| (after, page))),
                        None => None,
                    }
                },
                async {
                    match &snapshot {
                        Some(s) => Some(this.write(s, None).await),
                        None => None,
                    }
                },
            )
        };
        // What was delivered counts before any commit error is reported: the work is
        // kept for the next commit, and the page is not delivered again.
        if let Some(Ok(page)) = next {
            self.prefetched = Some(page);
        }
        if let Some(last) = handled.checked_sub(1) {
            self.cursor = self.cursor.max(events[last].position);
        }
        if let (Some(snapshot), Some(written)) = (snapshot, written) {
            self.settle(snapshot, written)?;
        }
        match stop {
            Some(reason) if reason.is_empty() => {
                self.commit(None).await?;
                return Ok(Some(if self.worker.cancel.is_cancelled() { Exit::Shutdown } else { Exit::Fenced }));
            }
            Some(reason) => return self.disable(reason).await.map(Some),
            None => {}
        }
        // Every matching event below the horizon was handled: nothing can appear
        // behind (horizon, 0) any more, so the cursor may pass what did not match.
        if complete {
            self.cursor = self.cursor.max(Position { xact: horizon, seq: 0 });
        }
        let worked = !idle;
        let due = if worked { self.worker.settings.commit_interval } else { IDLE_COMMIT };
        if self.last_commit.elapsed() >= due || (worked && complete) {
            self.commit(None).await?;
        }
        if idle {
            tokio::select! {
                _ = self.worker.cancel.cancelled() => {}
                _ = tokio::time::sleep(self.worker.settings.poll_interval) => {}
            }
        }
        Ok(None)
    }

    /// The next page of the consumer's events after `after`, with the read horizon.
    async fn read(&self, after: Position) -> anyhow::Result<(Vec<LogEvent>, i64)> {
        let conn = self.worker.store.pool().get().await?;
        Ok(log::read_after(&**conn, &self.target.selection, after, self.worker.settings.batch_size).await?)
    }

    /// Delivers `events` in order, at most `window` requests at a time. Returns how
    /// many (from the first) were delivered or parked, and why it stopped early: a
    /// reason to disable the consumer, or "" when stopped (shutdown, lease).
    async fn deliver_in_order(&self, events: &[LogEvent]) -> (usize, Option<String>) {
        // Futures do nothing until polled: `buffered` starts them in order, at most
        // `window` at a time, and yields their fates in order.
        let deliveries: Vec<_> = events.iter().map(|e| self.deliver(e)).collect();
        let mut fates = futures::stream::iter(deliveries).buffered(self.target.window);
        let mut handled = 0;
        while let Some(fate) = fates.next().await {
            match fate {
                Fate::Delivered => {}
                Fate::Parked(p) => self.pending.lock().expect("pending").parked.push(p),
                Fate::Disable(reason) => return (handled, Some(reason)),
                Fate::Stopped => return (handled, Some(String::new())),
            }
            handled += 1;
        }
        (handled, None)
    }

    /// Parked events an operator asked to deliver again, in log order.
    async fn replays(&self) -> anyhow::Result<Vec<LogEvent>> {
        let conn = self.worker.store.pool().get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS}
                     FROM parked_delivery p JOIN message m ON m.client_id = p.client_id AND m.event_id = p.event_id
                     WHERE p.consumer_id = $1 AND p.replay
                     ORDER BY p.xact_id, p.seq LIMIT $2"
                ),
                &[&self.worker.consumer_id, &self.worker.settings.batch_size],
            )
            .await?;
        Ok(rows.iter().map(|r| LogEvent::from_row(&self.target.selection.client_id, r)).collect())
    }
}
