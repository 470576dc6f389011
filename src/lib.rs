//! event-processor: drains multi-tenant JSON events from Amazon SQS, validates each
//! against the schema registered for its tenant and event type, stores it exactly
//! once in PostgreSQL, and deletes the SQS message only after that commit.
//!
//! A tour, in the order a message travels:
//!
//! - [`queue`] — SQS: long-poll receive, batch delete, visibility changes, send.
//! - [`envelope`] — the message body's envelope, parsed without trusting it.
//! - [`registry`] — clients, event types with their compiled JSON Schemas, subscriptions.
//! - [`validation`] — every message becomes one row: accepted, or rejected with a
//!   stable [`rejection::Reason`].
//! - [`store`] — PostgreSQL: migrations, and one idempotent transaction per batch.
//! - [`pipeline`] — the processor: pollers, batching, commit, delete, heartbeats,
//!   backpressure, outage handling, shutdown. The only module that knows all others.
//! - [`replay`] — rejected messages validated again after a registry change.
//! - [`producers`] — load generation and the verifier behind the `producers` binary.
//! - [`ops`] — `/healthz`, `/readyz` and Prometheus `/metrics`.
//! - [`config`], [`telemetry`], [`stats`], [`backoff`] — settings, logs, counters, retries.
//!
//! The binaries in `cmd/` only parse settings and call into this library; the
//! contract they implement is `shared/design.md`, the local services live in
//! `deployments/local/`, and `tests/` drives real LocalStack and PostgreSQL.

pub mod backoff;
pub mod config;
pub mod envelope;
pub mod ops;
pub mod pipeline;
pub mod producers;
pub mod queue;
pub mod registry;
pub mod rejection;
pub mod replay;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod validation;
