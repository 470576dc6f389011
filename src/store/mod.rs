//! The PostgreSQL store: migrations, and the one statement per batch (two more when an
//! event id arrives with other content) that makes a message's row durable before the
//! message may leave SQS.
//!
//! Each batch is one set-based statement (`INSERT ... SELECT FROM UNNEST(...) ON
//! CONFLICT DO NOTHING` into both tables), prepared once per connection. A conflict is a duplicate,
//! and a duplicate is a success: that is what makes redeliveries harmless.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

mod batch;
pub mod replay;

pub use batch::{encode_parameters, Arrival, Classified, CommitOutcome};

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
    /// No answer within the store's deadline (a stalled server or a half-open
    /// connection); the connection is dropped, not returned to the pool.
    #[error("no answer from the database within {0:?}")]
    Deadline(Duration),
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
            StoreError::Pool(_) | StoreError::Deadline(_) => false,
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
    deadline: Duration,
}

impl Store {
    /// How long a commit or a probe may take by default before it counts as failed.
    pub const DEADLINE: Duration = Duration::from_secs(30);

    /// A pool of `size` connections to `database_url`. Connects lazily. TCP keepalives
    /// find a dead peer within about a minute even when no call is waiting.
    pub fn connect(database_url: &str, size: usize) -> anyhow::Result<Store> {
        let mut config: tokio_postgres::Config =
            database_url.parse().context("DATABASE_URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
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
        Ok(Store { pool, deadline: Store::DEADLINE })
    }

    /// The same store with another deadline for commits and probes.
    pub fn with_deadline(mut self, deadline: Duration) -> Store {
        self.deadline = deadline;
        self
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `work` on a pooled connection within the deadline. A connection whose call
    /// missed it is closed rather than reused: its state is unknown.
    pub(crate) async fn within_deadline<T>(
        &self,
        work: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = tokio::time::Instant::now();
        let mut conn = tokio::time::timeout(self.deadline, self.pool.get())
            .await
            .map_err(|_| StoreError::Deadline(self.deadline))??;
        match tokio::time::timeout_at(started + self.deadline, work(&mut conn)).await {
            Ok(result) => result,
            Err(_) => {
                drop(deadpool_postgres::Object::take(conn));
                Err(StoreError::Deadline(self.deadline))
            }
        }
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

    /// Whether a batch could commit now: the tables batches write to take an INSERT,
    /// rolled back. A server that answers reads but is read-only (a failover, a
    /// standby, `default_transaction_read_only`) or refuses the insert is not usable,
    /// and its messages must wait rather than be tried, released and dead-lettered.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.within_deadline(async |conn| {
            let tx = conn.transaction().await?;
            tx.batch_execute(
                "INSERT INTO message SELECT * FROM message WHERE false;
                 INSERT INTO rejected_message SELECT * FROM rejected_message WHERE false;",
            )
            .await?;
            tx.rollback().await?;
            Ok(())
        })
        .await
    }
}
