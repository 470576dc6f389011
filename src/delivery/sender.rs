//! The sender: claims consumers through leases in PostgreSQL (one sender per
//! consumer at a time), runs a [`Worker`](super::worker) for each, renews the
//! leases every third of their length, stops workers whose lease it lost, and on
//! shutdown lets them commit and hands the leases back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::probe::SenderProbe;
use super::webhook::{Networks, Poster};
use super::worker::{LeaseClock, Worker};
use super::Settings;
use crate::store::Store;
use crate::telemetry::Liveness;

/// A consumer this sender serves.
struct Served {
    lease: Arc<LeaseClock>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Served {
    /// A worker never outlives its entry: when the sender stops (or is dropped), its
    /// workers stop too.
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Sender {
    settings: Arc<Settings>,
    store: Store,
    poster: Poster,
    liveness: Arc<Liveness>,
}

impl Sender {
    /// The store must be migrated already.
    pub fn new(settings: Settings, store: Store, networks: Networks) -> anyhow::Result<Sender> {
        Ok(Sender { settings: Arc::new(settings), store, poster: Poster::new(networks)?, liveness: Arc::default() })
    }

    /// What `/healthz`, `/readyz` and `/metrics` report for this sender.
    pub fn probe(&self) -> SenderProbe {
        SenderProbe { store: self.store.clone(), liveness: self.liveness.clone() }
    }

    /// Delivers until `shutdown` is cancelled, then lets every worker commit (within
    /// the shutdown timeout) and releases the leases.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut served: HashMap<i64, Served> = HashMap::new();
        let period = self.settings.lease / 3;
        let gauges = tokio::spawn(super::probe::report_gauges(self.store.clone(), self.settings.clone()));
        info!(instance = %self.settings.instance, lease = ?self.settings.lease, "sender started");
        loop {
            self.liveness.beat();
            let renewing = Instant::now();
            match self.claim().await {
                Ok(held) => self.serve(&mut served, &held, renewing, &shutdown),
                // Leases expire by themselves; workers stop starting requests once
                // theirs could have lapsed, so another sender may take over safely.
                Err(e) => warn!(error = %e, "lease renewal failed"),
            }
            metrics::gauge!("event_sender_leases_held").set(served.len() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        info!(consumers = served.len(), "shutting down: finishing requests in flight");
        for s in served.values() {
            s.cancel.cancel();
        }
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        let mut finished: Vec<i64> = Vec::new();
        let mut aborted = 0;
        for (id, mut s) in served.drain() {
            match tokio::time::timeout_at(deadline, &mut s.task).await {
                Ok(_) => finished.push(id),
                Err(_) => {
                    s.task.abort();
                    aborted += 1;
                }
            }
        }
        if aborted > 0 {
            warn!(aborted, "shutdown timeout reached: those consumers keep their lease until it expires");
        }
        gauges.abort();
        // Only the leases of workers that finished are handed back: an aborted one may
        // still have had a request in flight, so its lease runs out instead.
        if let Ok(conn) = self.store.pool().get().await {
            let _ = conn
                .execute(
                    "UPDATE consumer SET lease_owner = NULL, lease_until = NULL
                     WHERE lease_owner = $1 AND (id = ANY($2) OR state <> 'active')",
                    &[&self.settings.instance, &finished],
                )
                .await;
        }
        info!("sender stopped");
        Ok(())
    }

    /// Renews this sender's leases and claims free or expired ones, up to
    /// `max_consumers`; hands back leases of consumers no longer active. Returns the
    /// consumers it holds now.
    async fn claim(&self) -> anyhow::Result<HashSet<i64>> {
        let conn = self.store.pool().get().await?;
        let instance = &self.settings.instance;
        conn.execute(
            "UPDATE consumer SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND state <> 'active'",
            &[instance],
        )
        .await?;
        let lease = self.settings.lease.as_secs_f64();
        // Renewal waits for row locks (a worker's own commit holds one for a moment):
        // skipping a locked row would look like a lost lease.
        let mut held: HashSet<i64> = conn
            .query(
                "UPDATE consumer SET lease_until = now() + make_interval(secs => $2)
                 WHERE lease_owner = $1 AND state = 'active' AND kind = 'push' RETURNING id",
                &[instance, &lease],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let room = self.settings.max_consumers - held.len() as i64;
        if room > 0 {
            // Taking a consumer over bumps its generation: a worker of the previous
            // owner that still runs can no longer commit its cursor.
            let claimed = conn
                .query(
                    "UPDATE consumer SET lease_owner = $1, lease_until = now() + make_interval(secs => $2),
                            generation = generation + 1
                     WHERE id IN (
                         SELECT id FROM consumer
                         WHERE state = 'active' AND kind = 'push' AND (lease_owner IS NULL OR lease_until < now())
                         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                    &[instance, &lease, &room],
                )
                .await?;
            held.extend(claimed.iter().map(|r| r.get::<_, i64>(0)));
        }
        Ok(held)
    }

    /// Starts workers for newly held consumers (or restarts one that stopped while
    /// its lease is still held), extends the lease clocks of the others, and stops
    /// workers whose lease was lost.
    fn serve(
        &self,
        served: &mut HashMap<i64, Served>,
        held: &HashSet<i64>,
        renewing: Instant,
        shutdown: &CancellationToken,
    ) {
        let until = renewing + self.settings.lease;
        served.retain(|id, s| {
            let keep = held.contains(id) && !s.task.is_finished();
            if !keep {
                s.cancel.cancel();
            }
            keep || !s.task.is_finished()
        });
        for id in held {
            match served.get(id) {
                Some(s) if !s.cancel.is_cancelled() => s.lease.extend(until),
                Some(_) => {} // stopping; started again on a later round
                None => {
                    let lease = Arc::new(LeaseClock::until(until));
                    let cancel = shutdown.child_token();
                    let worker = Worker {
                        consumer_id: *id,
                        settings: self.settings.clone(),
                        store: self.store.clone(),
                        poster: self.poster.clone(),
                        lease: lease.clone(),
                        cancel: cancel.clone(),
                    };
                    let task = tokio::spawn(async move {
                        worker.run().await;
                    });
                    served.insert(*id, Served { lease, cancel, task });
                }
            }
        }
    }
}

/// How long a lease lasts is a setting; this is the shortest that makes sense with
/// request timeouts of seconds.
pub const MIN_LEASE: Duration = Duration::from_secs(3);
