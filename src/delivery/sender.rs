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
        let tasks = futures::future::join_all(served.into_values().map(|s| s.task));
        if tokio::time::timeout(self.settings.shutdown_timeout, tasks).await.is_err() {
            warn!("shutdown timeout reached: some cursors were not committed (those events will be delivered again)");
        }
        gauges.abort();
        if let Ok(conn) = self.store.pool().get().await {
            let _ = conn
                .execute(
                    "UPDATE consumer SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
                    &[&self.settings.instance],
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
        let rows = conn
            .query(
                "UPDATE consumer SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
                 WHERE id IN (
                     SELECT id FROM consumer
                     WHERE state = 'active' AND kind = 'push'
                       AND (lease_owner = $1 OR lease_owner IS NULL OR lease_until < now())
                     ORDER BY lease_owner IS NOT DISTINCT FROM $1 DESC, id
                     LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[instance, &self.settings.lease.as_secs_f64(), &self.settings.max_consumers],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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
