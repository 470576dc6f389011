//! The PostgreSQL store: migrations, and the one transaction per batch that makes a
//! message's row durable before the message may leave SQS.
//!
//! Each batch is two set-based statements (`INSERT ... SELECT FROM UNNEST(...) ON
//! CONFLICT DO NOTHING`), prepared once per connection. A conflict is a duplicate,
//! and a duplicate is a success: that is what makes redeliveries harmless.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

mod batch;
pub mod replay;

pub use batch::{Arrival, Classified, CommitOutcome};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A failed commit. Nothing of the batch was stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

impl StoreError {
    /// PostgreSQL refused the data itself (SQLSTATE classes 22 "data exception" and
    /// 23 "integrity constraint violation"): retrying the same rows cannot succeed.
    /// Everything else (connection loss, timeouts, deadlocks, shutdown) is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Postgres(e) => {
                e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
            }
            StoreError::Pool(_) => false,
        }
    }
}

/// A tokio-postgres error with the server's message, which its `Display` leaves out.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.message(), db.code().code(), db.detail().unwrap_or_default()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// A pool of `size` connections to `database_url`. Connects lazily.
    pub fn connect(database_url: &str, size: usize) -> anyhow::Result<Store> {
        let mut config: tokio_postgres::Config =
            database_url.parse().context("DATABASE_URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("event-processor");
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("DATABASE_POOL_SIZE: cannot build the connection pool")?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the embedded migrations. An advisory lock lets replicas start together.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await.context("cannot connect to DATABASE_URL")?;
        let client: &mut tokio_postgres::Client = &mut conn;
        client.execute("SELECT pg_advisory_lock(7351001)", &[]).await?;
        let result = embedded::migrations::runner().run_async(client).await;
        client.execute("SELECT pg_advisory_unlock(7351001)", &[]).await?;
        result.context("migrations failed")?;
        Ok(())
    }

    /// A round trip through the table batches write to, to tell whether the database
    /// is usable again (a server that answers but cannot serve the table is not).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.get().await?.simple_query("SELECT 1 FROM message LIMIT 1").await?;
        Ok(())
    }
}
