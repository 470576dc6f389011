//! What the sender's `/healthz`, `/readyz` and `/metrics` report: its loops are
//! turning, PostgreSQL answers, and gauges read from the database every few seconds
//! (consumers by state, each served consumer's cursor distance to the head of its
//! client's log, parked events).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Settings;
use crate::store::Store;
use crate::telemetry::{ready_within, Liveness, Probe};

pub struct SenderProbe {
    pub store: Store,
    pub liveness: Arc<Liveness>,
}

impl Probe for SenderProbe {
    fn live(&self) -> Result<(), String> {
        self.liveness.check("sender lease loop")
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async {
            ready_within(Duration::from_secs(3), async {
                let conn = self.store.pool().get().await.map_err(|e| e.to_string())?;
                conn.simple_query("SELECT 1 FROM consumer LIMIT 1").await.map_err(|e| crate::store::describe(&e))?;
                Ok::<(), String>(())
            })
            .await
            .map_err(|e| format!("database {e}"))
        })
    }
}

/// Most events counted behind a cursor (the count stops there).
const LAG_COUNT_LIMIT: i64 = 1_000_000;

/// Refreshes the gauges every 5 s until aborted.
pub(super) async fn report_gauges(store: Store, settings: Arc<Settings>) {
    loop {
        if let Err(e) = gauges(&store, &settings).await {
            tracing::debug!(error = %e, "gauges not refreshed");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn gauges(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    let conn = store.pool().get().await?;
    let by_state = conn
        .query(
            "SELECT s.state, count(c.id) FROM UNNEST(ARRAY['active', 'paused', 'disabled']) AS s(state)
             LEFT JOIN consumer c ON c.state = s.state GROUP BY s.state",
            &[],
        )
        .await?;
    for row in by_state {
        let state: String = row.get(0);
        metrics::gauge!("event_sender_consumers", "state" => state).set(row.get::<_, i64>(1) as f64);
    }
    let served = conn
        .query(
            "SELECT c.client_id || '/' || c.name,
                    (SELECT count(*) FROM (SELECT 1 FROM message m WHERE m.client_id = c.client_id
                        AND (m.xact_id, m.seq) > (c.cursor_xact, c.cursor_seq) LIMIT $2) behind),
                    (SELECT count(*) FROM parked_delivery p WHERE p.consumer_id = c.id)
             FROM consumer c WHERE c.lease_owner = $1",
            &[&settings.instance, &LAG_COUNT_LIMIT],
        )
        .await?;
    for row in served {
        let consumer: String = row.get(0);
        metrics::gauge!("event_sender_cursor_lag_events", "consumer" => consumer.clone())
            .set(row.get::<_, i64>(1) as f64);
        metrics::gauge!("event_sender_parked", "consumer" => consumer).set(row.get::<_, i64>(2) as f64);
    }
    Ok(())
}
