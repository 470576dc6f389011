//! Registry data as files: `processor registry apply` upserts a file in one
//! transaction, `registry export` writes what `apply` takes back (the backup).

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::delivery::consumer::{self, ConsumerEntry, Registered};
use crate::validation::Schema;

/// Registry data as kept in files (`deployments/registry.json`), applied with
/// `processor registry apply` and produced by `processor registry export`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    #[serde(default)]
    pub producers: Vec<ProducerEntry>,
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    #[serde(default)]
    pub event_types: Vec<EventTypeEntry>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Who receives the clients' events over HTTP (the sender's consumers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProducerEntry {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventTypeEntry {
    pub name: String,
    pub version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    #[serde(default)]
    pub description: String,
    pub schema: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionEntry {
    pub client: String,
    pub event_type: String,
}

/// What `apply` changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub producers: u64,
    pub clients: u64,
    pub event_types: u64,
    pub subscriptions: u64,
    pub consumers: u64,
}

impl RegistryFile {
    pub fn read(path: &Path) -> anyhow::Result<RegistryFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid registry data", path.display()))
    }

    /// Upserts everything in one transaction; rows already as given are left alone,
    /// so applying the same file twice changes nothing. Every schema is compiled
    /// first; changing the schema of an existing (name, version) is refused unless
    /// `force`, because events already stored were validated against the old one.
    pub async fn apply(&self, db: &mut tokio_postgres::Client, force: bool) -> anyhow::Result<ApplyReport> {
        for t in &self.event_types {
            if t.version < 1 {
                bail!("event type '{}': version must be >= 1, got {}", t.name, t.version);
            }
            Schema::compile(t.schema.clone())
                .with_context(|| format!("event type '{}' version {}", t.name, t.version))?;
        }
        let tx = db.transaction().await?;
        let mut report = ApplyReport::default();
        for p in &self.producers {
            report.producers += tx
                .execute(
                    "INSERT INTO producer (id, name) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE producer.name <> EXCLUDED.name",
                    &[&p.id, &p.name],
                )
                .await?;
        }
        for c in &self.clients {
            report.clients += tx
                .execute(
                    "INSERT INTO client (id, name) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE client.name <> EXCLUDED.name",
                    &[&c.id, &c.name],
                )
                .await?;
        }
        for t in &self.event_types {
            let existing = tx
                .query_opt("SELECT schema FROM event_type WHERE name = $1 AND version = $2", &[&t.name, &t.version])
                .await?;
            if let Some(row) = &existing {
                let stored: Value = row.get(0);
                if stored != t.schema && !force {
                    bail!(
                        "event type '{}' version {} is registered with another schema; register a new version, \
                         or pass --force to replace it",
                        t.name,
                        t.version
                    );
                }
            }
            report.event_types += tx
                .execute(
                    "INSERT INTO event_type (name, version, schema, producer_id, description) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name, version) DO UPDATE
                       SET schema = EXCLUDED.schema, producer_id = EXCLUDED.producer_id,
                           description = EXCLUDED.description, updated_at = now()
                     WHERE (event_type.schema, event_type.producer_id, event_type.description)
                           IS DISTINCT FROM (EXCLUDED.schema, EXCLUDED.producer_id, EXCLUDED.description)",
                    &[&t.name, &t.version, &t.schema, &t.producer, &t.description],
                )
                .await
                .with_context(|| format!("event type '{}' version {}", t.name, t.version))?;
        }
        for s in &self.subscriptions {
            report.subscriptions += tx
                .execute(
                    "INSERT INTO subscription (client_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&s.client, &s.event_type],
                )
                .await
                .with_context(|| format!("subscription of '{}' to '{}'", s.client, s.event_type))?;
        }
        for c in &self.consumers {
            if !matches!(consumer::register(&tx, c, false).await?, Registered::Unchanged { .. }) {
                report.consumers += 1;
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Everything registered, in a form `apply` takes back; consumers' signing
    /// secrets only `with_secrets` (a backup that can rebuild them).
    pub async fn export(db: &impl GenericClient, with_secrets: bool) -> Result<RegistryFile, tokio_postgres::Error> {
        let producers = db
            .query("SELECT id, name FROM producer ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| ProducerEntry { id: r.get(0), name: r.get(1) })
            .collect();
        let clients = db
            .query("SELECT id, name FROM client ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| ClientEntry { id: r.get(0), name: r.get(1) })
            .collect();
        let event_types = db
            .query("SELECT name, version, producer_id, description, schema FROM event_type ORDER BY name, version", &[])
            .await?
            .iter()
            .map(|r| EventTypeEntry {
                name: r.get(0),
                version: r.get(1),
                producer: r.get(2),
                description: r.get(3),
                schema: r.get(4),
            })
            .collect();
        let subscriptions = db
            .query("SELECT client_id, event_type FROM subscription ORDER BY client_id, event_type", &[])
            .await?
            .iter()
            .map(|r| SubscriptionEntry { client: r.get(0), event_type: r.get(1) })
            .collect();
        let consumers = consumer::export(db, with_secrets).await?;
        Ok(RegistryFile { producers, clients, event_types, subscriptions, consumers })
    }

    /// One line per client (with its subscriptions) and per event type, for people.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for c in &self.clients {
            let subscribed: Vec<&str> =
                self.subscriptions.iter().filter(|s| s.client == c.id).map(|s| s.event_type.as_str()).collect();
            out.push_str(&format!("client {:<24} subscribed to {}\n", c.id, subscribed.join(", ")));
        }
        for t in &self.event_types {
            out.push_str(&format!("event type {} v{} {}\n", t.name, t.version, t.description));
        }
        out
    }

    /// The demo registry shipped in `deployments/registry.json`.
    pub fn demo() -> RegistryFile {
        serde_json::from_str(include_str!("../../deployments/registry.json"))
            .expect("deployments/registry.json is valid")
    }
}
