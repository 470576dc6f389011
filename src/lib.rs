//! event-processor: a multi-tenant event platform. Producers put JSON events on
//! Amazon SQS; the processor validates each against the schema registered for its
//! tenant and event type and stores it exactly once in PostgreSQL, deleting the SQS
//! message only after that commit; the sender delivers every stored event to the
//! consumers subscribed to it. The contract is `docs/design.md`.
//!
//! A tour, in the order an event travels:
//!
//! - [`sqs`]: the queue: long-poll receive, batch delete, visibility changes, send;
//!   [`sqs::MessageQueue`], the operations the processor uses, so tests can inject faults.
//! - [`validation`]: envelope, classification, JSON Schema checks and the stable
//!   rejection reasons. Pure: no I/O, nothing from SQS or the store.
//! - [`registry`]: clients, event types with their compiled schemas, subscriptions;
//!   the cached snapshot and the registry file (`apply` / `export`).
//! - [`store`]: PostgreSQL: pool, migrations, one idempotent statement per batch (two more when an event id conflicts), replay.
//! - [`ingest`]: the processor: pollers, batching, commit then delete, heartbeats,
//!   backpressure, outage handling, shutdown. The only part that knows SQS,
//!   validation and the store together.
//! - [`delivery`]: the sender: the commit-safe log, consumers and their cursors,
//!   signed webhooks, retries, parking, leases.
//! - [`api`]: the platform API: registry, keys, ingest, event status, pull consumption.
//! - [`consumers`]: the fake consumer service for local runs and tests.
//! - [`producers`]: load generation and the verifier behind the `producers` binary.
//! - [`telemetry`]: logs, the `/healthz` `/readyz` `/metrics` endpoint, counters, liveness.
//! - [`config`], [`backoff`]: settings (flag, environment, `.env`), retries.
//!
//! The binaries in `cmd/` only parse settings and call into this library; the local
//! services live in `deployments/local/`, and `tests/` drives real LocalStack and
//! PostgreSQL. How it is deployed and watched (compose, Kubernetes, alert rules, the
//! dashboard) is in `deployments/` and the README's "Operating it".

pub mod api;
pub mod backoff;
pub mod config;
pub mod consumers;
pub mod delivery;
pub mod ingest;
pub mod producers;
pub mod registry;
pub mod sqs;
pub mod store;
pub mod telemetry;
pub mod validation;
