//! Consumers: who receives a client's events over HTTP. Registration (from the
//! registry file, the `sender consumers` commands and later the API), listing, and
//! the state changes an operator makes: pause, resume, reset.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::log::{self, Position, Start};
use super::signature::Secret;

mod listing;

pub use listing::{export, list, table, ConsumerView};

/// An event type a consumer subscribes to, with one version or all: `user-app` or `user-app@2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subscribed {
    pub event_type: String,
    pub version: Option<i32>,
}

impl FromStr for Subscribed {
    type Err = String;

    fn from_str(s: &str) -> Result<Subscribed, String> {
        let (event_type, version) = match s.split_once('@') {
            Some((t, v)) => match v.parse::<i32>() {
                Ok(v) if v >= 1 => (t, Some(v)),
                _ => return Err(format!("'{s}': expected EVENT_TYPE or EVENT_TYPE@VERSION with a version >= 1")),
            },
            None => (s, None),
        };
        if event_type.is_empty() {
            return Err(format!("'{s}': the event type is empty"));
        }
        Ok(Subscribed { event_type: event_type.to_owned(), version })
    }
}

impl TryFrom<String> for Subscribed {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Subscribed> for String {
    fn from(s: Subscribed) -> String {
        s.to_string()
    }
}

impl fmt::Display for Subscribed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.event_type),
            None => f.write_str(&self.event_type),
        }
    }
}

/// How a consumer receives events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The sender POSTs each event to its endpoint.
    #[default]
    Push,
    /// It reads through the API (`GET .../events`, `POST .../ack`); no endpoint.
    Pull,
}

impl Kind {
    pub fn is_push(&self) -> bool {
        *self == Kind::Push
    }

    pub fn code(self) -> &'static str {
        match self {
            Kind::Push => "push",
            Kind::Pull => "pull",
        }
    }
}

/// A consumer as registered: what the registry file holds and `consumers add` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerEntry {
    pub client: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Kind::is_push")]
    pub kind: Kind,
    /// Where a push consumer's events are POSTed; empty for a pull consumer.
    #[serde(default)]
    pub endpoint: String,
    /// `whsec_` + base64; generated when absent. Exported only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub event_types: Vec<Subscribed>,
    /// `beginning`, `new` (default) or a position `XACT.SEQ`; applies at creation.
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: i32,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: i32,
}

/// The defaults of a registration, shared with the API's request body.
pub(crate) fn default_start() -> String {
    "new".to_owned()
}
pub(crate) fn default_timeout_ms() -> i32 {
    5000
}
pub(crate) fn default_max_in_flight() -> i32 {
    1
}

impl ConsumerEntry {
    /// Checks what the database would refuse, with messages that say which field.
    pub fn check(&self) -> anyhow::Result<Start> {
        let what = format!("consumer '{}' of client '{}'", self.name, self.client);
        match self.kind {
            Kind::Push => drop(check_endpoint(&self.endpoint).with_context(|| what.clone())?),
            Kind::Pull if !self.endpoint.is_empty() => bail!("{what}: endpoint: a pull consumer has none"),
            Kind::Pull => {}
        }
        if let Some(secret) = &self.secret {
            Secret::parse(secret).map_err(|e| anyhow::anyhow!("{what}: secret: {e}"))?;
        }
        if self.event_types.is_empty() {
            bail!("{what}: event_types: subscribe to at least one event type");
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            bail!("{what}: timeout_ms: expected 100 to 120000, got {}", self.timeout_ms);
        }
        if !(1..=100).contains(&self.max_in_flight) {
            bail!("{what}: max_in_flight: expected 1 to 100, got {}", self.max_in_flight);
        }
        self.start.parse::<Start>().map_err(|e| anyhow::anyhow!("{what}: start: {e}"))
    }
}

/// An endpoint is an absolute `http` or `https` URL with a host. Where it may point is
/// checked on every delivery against the resolved address (see `webhook::Networks`).
pub fn check_endpoint(endpoint: &str) -> anyhow::Result<http::Uri> {
    let uri: http::Uri = endpoint.parse().map_err(|_| anyhow::anyhow!("endpoint: not a URL: '{endpoint}'"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => bail!("endpoint: only http and https URLs are allowed, got '{endpoint}'"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("endpoint: no host in '{endpoint}'");
    }
    Ok(uri)
}

/// How a registration went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new consumer; `secret` is set when it was generated (shown once).
    Created { id: i64, secret: Option<String> },
    /// An existing consumer, updated to match the entry (its cursor is kept).
    Updated { id: i64 },
    /// Already exactly as given.
    Unchanged { id: i64 },
}

/// Registers or updates a consumer (by client and name). A new consumer's cursor is
/// its start position; an existing one keeps its cursor, state and secret unless a
/// secret is given. With `must_be_new`, an existing consumer is an error.
pub async fn register(tx: &impl GenericClient, entry: &ConsumerEntry, must_be_new: bool) -> anyhow::Result<Registered> {
    let start = entry.check()?;
    let existing = tx
        .query_opt("SELECT id FROM consumer WHERE client_id = $1 AND name = $2", &[&entry.client, &entry.name])
        .await?;
    let subscribed = |id: i64| async move {
        let types: Vec<&str> = entry.event_types.iter().map(|s| s.event_type.as_str()).collect();
        let versions: Vec<Option<i32>> = entry.event_types.iter().map(|s| s.version).collect();
        let before: Vec<String> = tx
            .query(
                "SELECT event_type || coalesce('@' || version, '') FROM consumer_subscription
                 WHERE consumer_id = $1 ORDER BY 1",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut after: Vec<String> = entry.event_types.iter().map(ToString::to_string).collect();
        after.sort();
        after.dedup();
        if before == after {
            return Ok::<bool, tokio_postgres::Error>(false);
        }
        tx.execute("DELETE FROM consumer_subscription WHERE consumer_id = $1", &[&id]).await?;
        tx.execute(
            "INSERT INTO consumer_subscription (consumer_id, event_type, version)
             SELECT DISTINCT $1::bigint, t, v FROM UNNEST($2::text[], $3::int4[]) AS u(t, v)",
            &[&id, &types, &versions],
        )
        .await?;
        Ok(true)
    };
    if let Some(row) = existing {
        let id: i64 = row.get(0);
        if must_be_new {
            bail!("consumer '{}' of client '{}' already exists", entry.name, entry.client);
        }
        let changed = tx
            .execute(
                "UPDATE consumer SET endpoint = $2, timeout_ms = $3, max_in_flight = $4,
                        secret = coalesce($5, secret), generation = generation + 1, updated_at = now()
                 WHERE id = $1 AND (endpoint, timeout_ms, max_in_flight, secret)
                       IS DISTINCT FROM ($2, $3, $4, coalesce($5, secret))",
                &[&id, &entry.endpoint, &entry.timeout_ms, &entry.max_in_flight, &entry.secret],
            )
            .await?;
        let resubscribed = subscribed(id).await?;
        if resubscribed && changed == 0 {
            // A sender serving it must stop and read the new subscriptions.
            tx.execute("UPDATE consumer SET generation = generation + 1 WHERE id = $1", &[&id]).await?;
        }
        return Ok(if changed > 0 || resubscribed { Registered::Updated { id } } else { Registered::Unchanged { id } });
    }
    let generated = entry.secret.is_none().then(Secret::generate);
    let secret = entry.secret.clone().or_else(|| generated.clone()).expect("given or generated");
    let cursor = log::resolve(tx, start).await?;
    let row = tx
        .query_one(
            "INSERT INTO consumer (client_id, name, endpoint, secret, timeout_ms, max_in_flight,
                                   start_position, start_xact, start_seq, cursor_xact, cursor_seq, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $9, $10) RETURNING id",
            &[
                &entry.client,
                &entry.name,
                &entry.endpoint,
                &secret,
                &entry.timeout_ms,
                &entry.max_in_flight,
                &start.to_string(),
                &cursor.xact,
                &cursor.seq,
                &entry.kind.code(),
            ],
        )
        .await
        .map_err(|e| match e.code().map(|c| c.code()) {
            Some("23503") => anyhow::anyhow!("consumer '{}': client '{}' is not registered", entry.name, entry.client),
            _ => anyhow::anyhow!("consumer '{}': {}", entry.name, crate::store::describe(&e)),
        })?;
    let id: i64 = row.get(0);
    subscribed(id).await?;
    Ok(Registered::Created { id, secret: generated })
}

/// What an operator does to a consumer.
#[derive(Debug, Clone)]
pub enum Change {
    Pause,
    /// Back to active; a disabled consumer forgets why, and its failure clock restarts.
    Resume,
    /// Moves the cursor (and bumps the generation, so a sender serving it re-reads it).
    Reset(Start),
    /// Delivers its parked events again, ahead of new ones.
    ReplayParked,
}

/// Applies `change` to the consumer `name` of `client`; false when there is none.
pub async fn change(db: &impl GenericClient, client: &str, name: &str, change: Change) -> anyhow::Result<bool> {
    let n = match change {
        Change::Pause => {
            db.execute(
                "UPDATE consumer SET state = 'paused', generation = generation + 1, updated_at = now()
                 WHERE client_id = $1 AND name = $2",
                &[&client, &name],
            )
            .await?
        }
        Change::Resume => {
            db.execute(
                "UPDATE consumer SET state = 'active', disabled_reason = NULL, failing_since = NULL,
                        generation = generation + 1, updated_at = now()
                 WHERE client_id = $1 AND name = $2",
                &[&client, &name],
            )
            .await?
        }
        Change::Reset(start) => {
            let cursor: Position = log::resolve(db, start).await?;
            db.execute(
                "UPDATE consumer SET cursor_xact = $3, cursor_seq = $4, generation = generation + 1, updated_at = now()
                 WHERE client_id = $1 AND name = $2",
                &[&client, &name, &cursor.xact, &cursor.seq],
            )
            .await?
        }
        Change::ReplayParked => {
            db.execute(
                "UPDATE parked_delivery p SET replay = true FROM consumer c
                 WHERE p.consumer_id = c.id AND c.client_id = $1 AND c.name = $2",
                &[&client, &name],
            )
            .await?
        }
    };
    Ok(n > 0)
}

/// A consumer named `CLIENT/NAME` on the command line.
pub fn parse_ref(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((client, name)) if !client.is_empty() && !name.is_empty() => Ok((client.to_owned(), name.to_owned())),
        _ => Err(format!("expected CLIENT/NAME such as client-1/audit, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_with_an_optional_version() {
        assert_eq!("user-app".parse(), Ok(Subscribed { event_type: "user-app".into(), version: None }));
        assert_eq!("user-app@2".parse(), Ok(Subscribed { event_type: "user-app".into(), version: Some(2) }));
        assert!("user-app@0".parse::<Subscribed>().is_err());
        assert!("@2".parse::<Subscribed>().is_err());
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        assert!(check_endpoint("http://127.0.0.1:9300/audit").is_ok());
        assert!(check_endpoint("https://hooks.example.com/x").is_ok());
        for bad in ["ftp://example.com/", "file:///etc/passwd", "/relative", "not a url", "gopher://x"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
