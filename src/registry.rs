//! The registry: which clients exist, which event types (and versions) they may
//! receive, and the JSON Schema each payload is validated against.
//!
//! The processor holds a [`Registry`] snapshot with every schema compiled once;
//! [`SharedRegistry`] swaps in a fresh snapshot when the database's
//! `registry_version` (bumped by triggers on every change) moves. It checks
//! periodically, and before it rejects a message for a registry miss, so a
//! registration committed before a message was received always applies to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

use crate::rejection::{Reason, Rejection};

/// A compiled schema for one (event type, version).
pub struct Schema {
    /// The schema document, kept to tell whether a reload changed it.
    pub document: Value,
    pub validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles a schema, after checking it against its meta-schema. Formats
    /// (`date-time`, `email`, `uuid`, ...) are asserted, as producers expect.
    pub fn compile(document: Value) -> anyhow::Result<Schema> {
        jsonschema::meta::validate(&document).map_err(|e| anyhow::anyhow!("not a valid JSON Schema: {e}"))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| anyhow::anyhow!("cannot compile the schema: {e}"))?;
        Ok(Schema { document, validator })
    }
}

/// An immutable snapshot of the registry.
#[derive(Default)]
pub struct Registry {
    /// `registry_version` when this snapshot was read (0 when not from a database).
    version: i64,
    /// Client id -> the event types it is subscribed to.
    clients: HashMap<String, HashSet<String>>,
    /// Event type -> version -> compiled schema.
    event_types: HashMap<String, BTreeMap<i32, Arc<Schema>>>,
}

impl Registry {
    /// The schema an event of this client, type and version must satisfy, or why it
    /// cannot be accepted at all.
    pub fn schema_for(&self, client_id: &str, event_type: &str, version: i32) -> Result<&Schema, Rejection> {
        let Some(subscriptions) = self.clients.get(client_id) else {
            return Err(Rejection::new(Reason::UnknownClient, format!("client '{client_id}' is not registered")));
        };
        let Some(schema) = self.event_types.get(event_type).and_then(|versions| versions.get(&version)) else {
            return Err(Rejection::new(
                Reason::UnknownEventType,
                format!("event type '{event_type}' version {version} is not registered"),
            ));
        };
        if !subscriptions.contains(event_type) {
            return Err(Rejection::new(
                Reason::NotSubscribed,
                format!("client '{client_id}' is not subscribed to '{event_type}'"),
            ));
        }
        Ok(schema)
    }

    /// Builds a snapshot from registry data (tests and benchmarks need no database).
    pub fn from_file(file: &RegistryFile) -> anyhow::Result<Registry> {
        let mut registry = Registry::default();
        for client in &file.clients {
            registry.clients.entry(client.id.clone()).or_default();
        }
        for s in &file.subscriptions {
            registry.clients.entry(s.client.clone()).or_default().insert(s.event_type.clone());
        }
        for t in &file.event_types {
            let schema = Schema::compile(t.schema.clone()).with_context(|| format!("{} v{}", t.name, t.version))?;
            registry.event_types.entry(t.name.clone()).or_default().insert(t.version, Arc::new(schema));
        }
        Ok(registry)
    }

    /// Reads the registry from the database, reusing compiled schemas of `previous`
    /// that did not change. A stored schema that no longer compiles is skipped with an
    /// error log: its events are rejected as `unknown_event_type` rather than stopping
    /// the processor.
    pub async fn load(db: &impl GenericClient, previous: Option<&Registry>) -> Result<Registry, tokio_postgres::Error> {
        // The version first: the data read after it is at least that new.
        let version = db.query_one("SELECT version FROM registry_version", &[]).await?.get(0);
        let mut registry = Registry { version, ..Registry::default() };
        for row in db.query("SELECT id FROM client", &[]).await? {
            registry.clients.insert(row.get(0), HashSet::new());
        }
        for row in db.query("SELECT client_id, event_type FROM subscription", &[]).await? {
            registry.clients.entry(row.get(0)).or_default().insert(row.get(1));
        }
        for row in db.query("SELECT name, version, schema FROM event_type", &[]).await? {
            let (name, version, document): (String, i32, Value) = (row.get(0), row.get(1), row.get(2));
            let unchanged = previous
                .and_then(|p| p.event_types.get(&name))
                .and_then(|versions| versions.get(&version))
                .filter(|schema| schema.document == document)
                .cloned();
            let schema = match unchanged {
                Some(schema) => schema,
                None => match Schema::compile(document) {
                    Ok(schema) => Arc::new(schema),
                    Err(e) => {
                        tracing::error!(event_type = %name, version, error = %e, "stored schema skipped");
                        continue;
                    }
                },
            };
            registry.event_types.entry(name).or_default().insert(version, schema);
        }
        Ok(registry)
    }

    /// Number of (clients, event type versions), for logs.
    pub fn size(&self) -> (usize, usize) {
        (self.clients.len(), self.event_types.values().map(BTreeMap::len).sum())
    }
}

/// The current snapshot, replaced when the database's registry version moves.
pub struct SharedRegistry {
    current: RwLock<Arc<Registry>>,
    /// When the last version check (or load) started: a miss for a message received
    /// before that is authoritative.
    checked_at: Mutex<DateTime<Utc>>,
    /// Serializes checks, so a burst of misses costs one query, not one each.
    checking: tokio::sync::Mutex<()>,
}

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        SharedRegistry {
            current: RwLock::new(Arc::new(registry)),
            checked_at: Mutex::new(DateTime::<Utc>::MIN_UTC),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> Arc<Registry> {
        self.current.read().expect("registry lock").clone()
    }

    /// Whether a check started after `at` already (so a miss for a message received
    /// at `at` is authoritative without asking the database).
    pub fn checked_since(&self, at: DateTime<Utc>) -> bool {
        *self.checked_at.lock().expect("registry lock") > at
    }

    /// Makes sure the snapshot includes every registry change committed before `at`:
    /// one cheap version query, and a reload only when the version moved.
    /// Returns whether the snapshot was replaced.
    pub async fn ensure_current(
        &self,
        db: &impl GenericClient,
        at: DateTime<Utc>,
    ) -> Result<bool, tokio_postgres::Error> {
        let _one_at_a_time = self.checking.lock().await;
        if self.checked_since(at) {
            return Ok(false);
        }
        let started = Utc::now();
        let version: i64 = db.query_one("SELECT version FROM registry_version", &[]).await?.get(0);
        let current = self.snapshot();
        let replaced = version != current.version;
        if replaced {
            let fresh = Registry::load(db, Some(&current)).await?;
            let (clients, event_types) = fresh.size();
            tracing::info!(version = fresh.version, clients, event_types, "registry reloaded");
            *self.current.write().expect("registry lock") = Arc::new(fresh);
        }
        *self.checked_at.lock().expect("registry lock") = started;
        Ok(replaced)
    }
}

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
        tx.commit().await?;
        Ok(report)
    }

    /// Everything registered, in a form `apply` takes back.
    pub async fn export(db: &impl GenericClient) -> Result<RegistryFile, tokio_postgres::Error> {
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
        Ok(RegistryFile { producers, clients, event_types, subscriptions })
    }

    /// The demo registry shipped in `deployments/registry.json`.
    pub fn demo() -> RegistryFile {
        serde_json::from_str(include_str!("../deployments/registry.json")).expect("deployments/registry.json is valid")
    }
}

/// Registry data for `n` extra tenants `client-1..=n`, each subscribed to every event
/// type of `base` (used by the producers' `--clients`).
pub fn tenants(base: &RegistryFile, n: usize) -> RegistryFile {
    let types: std::collections::BTreeSet<&str> = base.event_types.iter().map(|t| t.name.as_str()).collect();
    let known: HashSet<&str> = base.clients.iter().map(|c| c.id.as_str()).collect();
    let mut file = RegistryFile::default();
    for i in 1..=n {
        let id = format!("client-{i}");
        if known.contains(id.as_str()) {
            continue;
        }
        file.clients.push(ClientEntry { id: id.clone(), name: format!("Generated tenant {i}") });
        for t in &types {
            file.subscriptions.push(SubscriptionEntry { client: id.clone(), event_type: (*t).to_owned() });
        }
    }
    file
}

/// A `schema_violation` rejection listing where and why the payload fails.
pub fn violation(schema: &Schema, payload: &Value) -> Option<Rejection> {
    const MAX_ERRORS: usize = 20;
    const MAX_MESSAGE_CHARS: usize = 300;
    let mut errors = schema.validator.iter_errors(payload).peekable();
    errors.peek()?;
    let listed: Vec<Value> = errors
        .take(MAX_ERRORS)
        .map(|e| {
            // Messages quote the offending value, which may be huge: keep them short.
            let mut message = e.to_string();
            if message.len() > MAX_MESSAGE_CHARS {
                let cut = (0..=MAX_MESSAGE_CHARS).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
                message.truncate(cut);
                message.push('…');
            }
            json!({
                "instance_path": e.instance_path().to_string(),
                "schema_path": e.schema_path().to_string(),
                "message": message,
            })
        })
        .collect();
    Some(Rejection { reason: Reason::SchemaViolation, detail: json!({ "errors": listed }) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_registry_compiles_and_answers_each_miss_with_its_reason() {
        let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
        assert!(registry.schema_for("client-1", "monitor-app", 2).is_ok());
        let reason = |c, t, v| registry.schema_for(c, t, v).err().unwrap().reason;
        assert_eq!(reason("client-9", "monitor-app", 1), Reason::UnknownClient);
        assert_eq!(reason("client-1", "monitor-app", 9), Reason::UnknownEventType);
        assert_eq!(reason("client-3", "transaction-app", 2), Reason::NotSubscribed);
    }

    #[test]
    fn violations_list_paths_and_formats_are_asserted() {
        let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
        let schema = registry.schema_for("client-1", "user-app", 2).unwrap();
        let ok = json!({"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"});
        assert!(violation(schema, &ok).is_none());
        let bad = json!({"user_id": "usr-0123abcd", "action": "fly", "at": "not a time"});
        let detail = violation(schema, &bad).unwrap().detail;
        let paths: Vec<&str> =
            detail["errors"].as_array().unwrap().iter().map(|e| e["instance_path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"/action") && paths.contains(&"/at"), "{detail}");
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(Schema::compile(json!({"type": "no-such-type"})).is_err());
        assert!(Schema::compile(json!({"$ref": "https://example.com/remote.json"})).is_err());
    }
}
