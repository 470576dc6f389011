//! Integration tests against real LocalStack (SQS) and PostgreSQL.
//! Start the services first: `deployments/local/start.sh` (the test command does).
//! Set TEST_LOG=1 to see the processor's logs.

mod api;
mod binaries;
mod delivery;
mod hardening;
mod harness;
mod memory_queue;
mod ops;
mod processor;
mod producers;
mod proxy;
mod store;
