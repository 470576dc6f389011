//! The registry: which clients exist, which event types (and versions) they may
//! receive, and the JSON Schema each payload is validated against.
//!
//! The processor holds a [`Registry`] snapshot with every schema compiled once;
//! [`SharedRegistry`] swaps in a fresh snapshot when the database's
//! `registry_version` (bumped by triggers on every change) moves. It checks
//! periodically, and before it rejects a message for a registry miss, so a
//! registration committed before a message was received always applies to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::validation::{Reason, Rejection, Schema};

mod file;
pub use file::*;

/// Looked up three times per message: a fast hash rather than the default SipHash.
type Hasher = foldhash::fast::RandomState;

/// An immutable snapshot of the registry.
#[derive(Default)]
pub struct Registry {
    /// `registry_version` when this snapshot was read (0 when not from a database).
    version: i64,
    /// Client id -> the event types it is subscribed to.
    clients: HashMap<String, HashSet<String, Hasher>, Hasher>,
    /// Event type -> version -> compiled schema.
    event_types: HashMap<String, BTreeMap<i32, Arc<Schema>>, Hasher>,
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
            registry.clients.insert(row.get(0), HashSet::default());
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
}
