//! The delivery check of `producers verify`: every stored event of the manifest must
//! have reached every push consumer subscribed to it (per the fake consumers' record
//! file), or be parked; it counts what arrived more than once and what arrived out of
//! log order.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::manifest::{Entry, Expect};
use crate::delivery::Position;

/// One consumer's deliveries.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConsumerReport {
    pub consumer: String,
    /// `active`, `paused` or `disabled`: what a paused or disabled consumer has not
    /// received yet waits for it (reported, not a failure).
    pub state: String,
    /// Stored events of the manifest it subscribes to, after its start position.
    pub expected: usize,
    pub delivered: usize,
    /// Retries exhausted: kept in `parked_delivery` for replay.
    pub parked: usize,
    pub undelivered: usize,
    /// Extra arrivals of an event it already had (at-least-once delivery after a crash
    /// or a lost lease; consumers deduplicate with `webhook-id`).
    pub delivered_more_than_once: usize,
    /// First arrivals earlier in the log than one before them (checked only for a
    /// window of 1 request in flight, where order is promised).
    pub out_of_order: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DeliveryReport {
    pub consumers: Vec<ConsumerReport>,
}

impl DeliveryReport {
    pub fn ok(&self) -> bool {
        self.consumers.iter().all(|c| (c.undelivered == 0 || c.state != "active") && c.out_of_order == 0)
    }

    /// Events active consumers still wait for.
    pub fn undelivered(&self) -> usize {
        self.consumers.iter().filter(|c| c.state == "active").map(|c| c.undelivered).sum()
    }

    pub fn delivered(&self) -> usize {
        self.consumers.iter().map(|c| c.delivered).sum()
    }
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>8} {:>9} {:>6} {:>11} {:>9} {:>12}",
            "consumer", "expected", "delivered", "parked", "undelivered", "twice+", "out of order"
        )?;
        for c in &self.consumers {
            writeln!(
                f,
                "{:<24} {:>8} {:>9} {:>6} {:>11} {:>9} {:>12}",
                c.consumer,
                c.expected,
                c.delivered,
                c.parked,
                c.undelivered,
                c.delivered_more_than_once,
                c.out_of_order
            )?;
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "OK: every stored event reached every subscribed consumer (or is parked), in order"
            } else {
                "FAILED: deliveries missing or out of order"
            }
        )
    }
}

struct Consumer {
    id: i64,
    label: String,
    /// The fake consumers' name for it: the last segment of its endpoint.
    path_name: String,
    client_id: String,
    start: Position,
    window: i32,
    state: String,
    subscriptions: Vec<(String, i32)>,
}

/// One arrival in the record file.
struct Arrival {
    client_id: String,
    event_id: String,
}

/// Reads the record file: arrivals by the fake consumer's name, in arrival order.
fn arrivals(record: &Path) -> anyhow::Result<HashMap<String, Vec<Arrival>>> {
    let text = match std::fs::read_to_string(record) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", record.display())),
    };
    let mut by_name: HashMap<String, Vec<Arrival>> = HashMap::new();
    for line in text.lines() {
        // A line being written while we read is skipped; the next check sees it.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        by_name
            .entry(field("consumer"))
            .or_default()
            .push(Arrival { client_id: field("client_id"), event_id: field("event_id") });
    }
    Ok(by_name)
}

/// Checks deliveries of the manifest's stored events against the record file.
pub async fn check(db: &impl GenericClient, entries: &[Entry], record: &Path) -> anyhow::Result<DeliveryReport> {
    let mut keys: HashSet<(&str, &str)> = HashSet::new();
    for entry in entries {
        if matches!(entry.expectation().map_err(anyhow::Error::msg)?, Expect::Stored | Expect::Duplicate) {
            if let Some(key) = entry.client_id.as_deref().zip(entry.event_id.as_deref()) {
                keys.insert(key);
            }
        }
    }
    let (clients, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    // Stored events of the manifest with their log positions.
    let events: HashMap<(String, String), (Position, String, i32)> = db
        .query(
            "SELECT m.client_id, m.event_id, m.xact_id, m.seq, m.event_type, m.version
             FROM message m JOIN UNNEST($1::text[], $2::text[]) AS k(c, e) ON m.client_id = k.c AND m.event_id = k.e",
            &[&clients, &ids],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (Position { xact: r.get(2), seq: r.get(3) }, r.get(4), r.get(5))))
        .collect();
    let consumers: Vec<Consumer> = db
        .query(
            "SELECT c.id, c.client_id || '/' || c.name, c.endpoint, c.client_id, c.start_xact, c.start_seq,
                    c.max_in_flight, c.state,
                    coalesce(array_agg(s.event_type) FILTER (WHERE s.event_type IS NOT NULL), '{}'),
                    coalesce(array_agg(coalesce(s.version, 0)) FILTER (WHERE s.event_type IS NOT NULL), '{}')
             FROM consumer c LEFT JOIN consumer_subscription s ON s.consumer_id = c.id
             WHERE c.kind = 'push' GROUP BY c.id ORDER BY 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let endpoint: String = r.get(2);
            let types: Vec<String> = r.get(8);
            let versions: Vec<i32> = r.get(9);
            Consumer {
                id: r.get(0),
                label: r.get(1),
                path_name: endpoint.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned(),
                client_id: r.get(3),
                start: Position { xact: r.get(4), seq: r.get(5) },
                window: r.get(6),
                state: r.get(7),
                subscriptions: types.into_iter().zip(versions).collect(),
            }
        })
        .collect();
    let parked: HashSet<(i64, String)> = db
        .query("SELECT consumer_id, event_id FROM parked_delivery", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let arrivals = arrivals(record)?;

    let mut report = DeliveryReport::default();
    for c in &consumers {
        let selects = |(p, t, v): &(Position, String, i32)| {
            *p > c.start && c.subscriptions.iter().any(|(st, sv)| st == t && (*sv == 0 || sv == v))
        };
        let expected: HashMap<&str, Position> = events
            .iter()
            .filter(|((client, _), e)| *client == c.client_id && selects(e))
            .map(|((_, id), (p, _, _))| (id.as_str(), *p))
            .collect();
        let mut r = ConsumerReport {
            consumer: c.label.clone(),
            state: c.state.clone(),
            expected: expected.len(),
            ..Default::default()
        };
        let mut firsts: HashSet<&str> = HashSet::new();
        let mut latest = Position::BEGINNING;
        for a in arrivals.get(&c.path_name).into_iter().flatten().filter(|a| a.client_id == c.client_id) {
            let Some(position) = expected.get(a.event_id.as_str()) else { continue };
            if !firsts.insert(a.event_id.as_str()) {
                r.delivered_more_than_once += 1;
                continue;
            }
            if c.window == 1 && *position < latest {
                r.out_of_order += 1;
            }
            latest = latest.max(*position);
        }
        r.delivered = firsts.len();
        for id in expected.keys() {
            if !firsts.contains(id) {
                if parked.contains(&(c.id, id.to_string())) {
                    r.parked += 1;
                } else {
                    r.undelivered += 1;
                }
            }
        }
        report.consumers.push(r);
    }
    Ok(report)
}
