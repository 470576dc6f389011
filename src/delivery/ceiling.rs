//! The sender benchmark's ceiling: the same HTTP client posting the same bodies to the
//! same consumers, with no database and no signing during the run (bodies are read and
//! signed before the clock starts). The sender's rate is reported as a share of it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::log::{self, Position, Selection};
use super::signature::{sign, Secret};
use super::webhook::{Attempt, Networks, Poster};
use super::webhook_id;
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct CeilingReport {
    pub consumers: usize,
    pub deliveries: u64,
    pub failed: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// This process's CPU (user + system) during the posting, per delivery.
    pub cpu_us_per_delivery: f64,
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Posts every event of `client_id` to each of its push consumers, one request in
/// flight per consumer (as the sender with a window of 1).
pub async fn run(store: &Store, client_id: &str, networks: Networks) -> anyhow::Result<CeilingReport> {
    let conn = store.pool().get().await?;
    let targets: Vec<(String, String)> = conn
        .query(
            "SELECT endpoint, secret FROM consumer WHERE client_id = $1 AND kind = 'push' ORDER BY name",
            &[&client_id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    anyhow::ensure!(!targets.is_empty(), "client {client_id} has no push consumer");
    let selection = Selection { client_id: client_id.to_owned(), event_types: Vec::new(), versions: Vec::new() };
    let types: Vec<String> = conn
        .query("SELECT DISTINCT event_type FROM message WHERE client_id = $1", &[&client_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let selection = Selection { versions: vec![0; types.len()], event_types: types, ..selection };
    let mut events = Vec::new();
    let mut cursor = Position::BEGINNING;
    loop {
        let (page, _) = log::read_after(&**conn, &selection, cursor, 10_000).await?;
        let Some(last) = page.last() else { break };
        cursor = last.position;
        events.extend(page);
    }
    drop(conn);
    let timestamp = chrono::Utc::now().timestamp();
    let poster = Poster::new(networks)?;
    let mut plans = Vec::new();
    for (endpoint, secret) in &targets {
        let secret = Secret::parse(secret).map_err(|e| anyhow::anyhow!("consumer secret: {e}"))?;
        let uri: http::Uri = endpoint.parse()?;
        let signed: Vec<(String, String, Bytes)> = events
            .iter()
            .map(|e| {
                let id = webhook_id(&e.client_id, &e.event_id);
                let body = Bytes::from(e.body());
                (sign(&secret, &id, timestamp, &body), id, body)
            })
            .collect();
        plans.push((uri, signed));
    }
    let cpu = process_cpu_seconds();
    let started = Instant::now();
    let results = futures::future::join_all(plans.iter().map(|(uri, signed)| {
        let poster = poster.clone();
        async move {
            let mut failed = 0u64;
            for (signature, id, body) in signed {
                let attempt = poster.send(uri.clone(), id, timestamp, signature, body, Duration::from_secs(10)).await;
                if !matches!(attempt, Attempt::Delivered { .. }) {
                    failed += 1;
                }
            }
            failed
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu;
    let deliveries = (events.len() * targets.len()) as u64;
    Ok(CeilingReport {
        consumers: targets.len(),
        deliveries,
        failed: results.iter().sum(),
        seconds,
        per_second: deliveries as f64 / seconds,
        cpu_us_per_delivery: cpu * 1e6 / deliveries.max(1) as f64,
    })
}
