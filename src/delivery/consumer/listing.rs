//! Consumers as operators see them (`sender consumers list`, never a secret) and as
//! `registry export` writes them back (secrets only when asked).

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{ConsumerEntry, Kind};

/// A consumer as the sender and `consumers list` see it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerView {
    pub id: i64,
    pub client: String,
    pub name: String,
    /// `push` or `pull`.
    pub kind: String,
    pub endpoint: String,
    pub event_types: Vec<String>,
    pub state: String,
    pub disabled_reason: Option<String>,
    pub timeout_ms: i32,
    pub max_in_flight: i32,
    pub start: String,
    pub cursor: String,
    pub lease_owner: Option<String>,
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    pub parked: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Every consumer, by client and name; optionally one client's, or one consumer.
pub async fn list(
    db: &impl GenericClient,
    client: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<ConsumerView>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT c.id, c.client_id, c.name, c.kind, c.endpoint,
                    coalesce((SELECT array_agg(s.event_type || coalesce('@' || s.version, '') ORDER BY 1)
                              FROM consumer_subscription s WHERE s.consumer_id = c.id), '{}'),
                    c.state, c.disabled_reason, c.timeout_ms, c.max_in_flight, c.start_position,
                    c.cursor_xact || '.' || c.cursor_seq,
                    CASE WHEN c.lease_until > now() THEN c.lease_owner END, c.failing_since,
                    (SELECT count(*) FROM parked_delivery p WHERE p.consumer_id = c.id), c.created_at
             FROM consumer c WHERE ($1::text IS NULL OR c.client_id = $1) AND ($2::text IS NULL OR c.name = $2)
             ORDER BY c.client_id, c.name",
            &[&client, &name],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ConsumerView {
            id: r.get(0),
            client: r.get(1),
            name: r.get(2),
            kind: r.get(3),
            endpoint: r.get(4),
            event_types: r.get(5),
            state: r.get(6),
            disabled_reason: r.get(7),
            timeout_ms: r.get(8),
            max_in_flight: r.get(9),
            start: r.get(10),
            cursor: r.get(11),
            lease_owner: r.get(12),
            failing_since: r.get(13),
            parked: r.get(14),
            created_at: r.get(15),
        })
        .collect())
}

/// `consumers list` for people: one line per consumer.
pub fn table(consumers: &[ConsumerView]) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:<16} {:>7} {:<28} {}\n",
        "CONSUMER", "STATE", "CURSOR", "PARKED", "EVENT TYPES", "ENDPOINT"
    );
    for c in consumers {
        out.push_str(&format!(
            "{:<28} {:<9} {:<16} {:>7} {:<28} {}\n",
            format!("{}/{}", c.client, c.name),
            c.state,
            c.cursor,
            c.parked,
            c.event_types.join(","),
            c.endpoint
        ));
        if let Some(reason) = &c.disabled_reason {
            out.push_str(&format!("    disabled: {reason}\n"));
        }
    }
    out
}

/// The entries `registry export` writes; secrets only `with_secrets`.
pub async fn export(db: &impl GenericClient, with_secrets: bool) -> Result<Vec<ConsumerEntry>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT c.client_id, c.name, c.endpoint, c.secret,
                    coalesce((SELECT array_agg(s.event_type || coalesce('@' || s.version, '') ORDER BY 1)
                              FROM consumer_subscription s WHERE s.consumer_id = c.id), '{}'),
                    c.start_position, c.timeout_ms, c.max_in_flight, c.kind
             FROM consumer c ORDER BY c.client_id, c.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ConsumerEntry {
            client: r.get(0),
            name: r.get(1),
            kind: if r.get::<_, &str>(8) == "pull" { Kind::Pull } else { Kind::Push },
            endpoint: r.get(2),
            secret: with_secrets.then(|| r.get(3)),
            event_types: r.get::<_, Vec<String>>(4).iter().filter_map(|s| s.parse().ok()).collect(),
            start: r.get(5),
            timeout_ms: r.get(6),
            max_in_flight: r.get(7),
        })
        .collect())
}
