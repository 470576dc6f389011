//! Settings shared by the binaries. Each comes from a command-line flag, else the
//! environment (after `.env`), else a default; `.env-template` lists them all.
//!
//! Every value name is the environment variable itself, so a bad value reads e.g.
//! `invalid value 'x' for '--pollers <PROCESSOR_POLLERS>': expected a whole number >= 1`.

use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::delivery::{self, webhook::Networks};
use crate::ingest::Settings;
use crate::sqs::{self as queue, Queue};
use crate::store::Store;

/// Loads `.env` when present, then parses the command line and environment into `C`
/// (clap prints the error and exits on a bad setting). A malformed `.env` stops
/// startup rather than being half-applied.
pub fn load<C: clap::Parser>() -> C {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => {
            eprintln!("error: .env: {e}");
            std::process::exit(2);
        }
    }
    C::parse()
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", value_name = "DATABASE_POOL_SIZE", default_value_t = 8, value_parser = at_least_one)]
    pub database_pool_size: usize,
    /// Seconds a commit or a health probe may take before it counts as failed (its
    /// connection is then closed: a half-open connection cannot hang a commit).
    #[arg(long, env = "DATABASE_TIMEOUT_SECS", value_name = "DATABASE_TIMEOUT_SECS", default_value_t = Store::DEADLINE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_timeout_secs: u64,
}

impl DatabaseArgs {
    /// A migrated store.
    pub async fn open(&self) -> anyhow::Result<Store> {
        let store = Store::connect(&self.database_url, self.database_pool_size)?
            .with_deadline(Duration::from_secs(self.database_timeout_secs));
        store.migrate().await?;
        Ok(store)
    }
}

#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    /// Name of the queue producers send to.
    #[arg(long, env = "SQS_QUEUE_NAME", value_name = "SQS_QUEUE_NAME", default_value = "events")]
    pub queue_name: String,
    /// Full queue URL; when set, it is used instead of looking the name up.
    #[arg(long, env = "SQS_QUEUE_URL", value_name = "SQS_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Name of the dead-letter queue (reported by `producers verify`).
    #[arg(long, env = "SQS_DLQ_NAME", value_name = "SQS_DLQ_NAME", default_value = "events-dlq")]
    pub dlq_name: String,
}

impl QueueArgs {
    pub async fn open(&self) -> anyhow::Result<Queue> {
        let client = queue::sdk_client().await?;
        match &self.queue_url {
            Some(url) => Ok(Queue::new(client, url)),
            None => Queue::named(client, &self.queue_name).await.map_err(|e| {
                anyhow::anyhow!(
                    "SQS_QUEUE_NAME: cannot find queue '{}' ({e}); for local runs start it with deployments/local/start.sh",
                    self.queue_name
                )
            }),
        }
    }

    pub async fn open_dead_letters(&self, client: aws_sdk_sqs::Client) -> anyhow::Result<Queue> {
        Queue::named(client, &self.dlq_name)
            .await
            .map_err(|e| anyhow::anyhow!("SQS_DLQ_NAME: cannot find queue '{}' ({e})", self.dlq_name))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProcessorArgs {
    /// Concurrent long-polling receive loops.
    #[arg(long, env = "PROCESSOR_POLLERS", value_name = "PROCESSOR_POLLERS", default_value_t = Settings::default().pollers, value_parser = at_least_one)]
    pub pollers: usize,
    /// Long-poll wait of each receive, 0-20 seconds.
    #[arg(long, env = "PROCESSOR_WAIT_TIME_SECS", value_name = "PROCESSOR_WAIT_TIME_SECS", default_value_t = Settings::default().wait_time.as_secs(), value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_time_secs: u64,
    /// Messages received and not yet deleted; pollers wait at this bound.
    #[arg(long, env = "PROCESSOR_MAX_IN_FLIGHT", value_name = "PROCESSOR_MAX_IN_FLIGHT", default_value_t = Settings::default().max_in_flight, value_parser = at_least_one)]
    pub max_in_flight: usize,
    /// Bytes held messages may take (bodies and the payloads kept for the commit); pollers wait at this
    /// bound. At least one receive of 10 messages of the queue's MaximumMessageSize.
    #[arg(long, env = "PROCESSOR_MAX_HELD_BYTES", value_name = "PROCESSOR_MAX_HELD_BYTES", default_value_t = Settings::default().max_held_bytes, value_parser = at_least_one)]
    pub max_held_bytes: usize,
    /// Seconds a received message stays invisible before the heartbeat extends it, set
    /// on every receive; 0 uses the queue's own visibility timeout (30 s if that is 0).
    #[arg(long, env = "PROCESSOR_VISIBILITY_TIMEOUT_SECS", value_name = "PROCESSOR_VISIBILITY_TIMEOUT_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=43_200))]
    pub visibility_timeout_secs: u64,
    /// Most messages per committed batch.
    #[arg(long, env = "PROCESSOR_BATCH_SIZE", value_name = "PROCESSOR_BATCH_SIZE", default_value_t = Settings::default().batch_size, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Longest a batch waits to fill up, in milliseconds.
    #[arg(long, env = "PROCESSOR_BATCH_WINDOW_MS", value_name = "PROCESSOR_BATCH_WINDOW_MS", default_value_t = Settings::default().batch_window.as_millis() as u64)]
    pub batch_window_ms: u64,
    /// Batches committed concurrently.
    #[arg(long, env = "PROCESSOR_COMMITTERS", value_name = "PROCESSOR_COMMITTERS", default_value_t = Settings::default().committers, value_parser = at_least_one)]
    pub committers: usize,
    /// While commits fail, seconds before held messages are released to SQS.
    #[arg(
        long,
        env = "PROCESSOR_RELEASE_AFTER_SECS",
        value_name = "PROCESSOR_RELEASE_AFTER_SECS",
        default_value_t = Settings::default().release_after.as_secs()
    )]
    pub release_after_secs: u64,
    /// Seconds to finish held messages after SIGINT/SIGTERM.
    #[arg(
        long,
        env = "PROCESSOR_SHUTDOWN_TIMEOUT_SECS",
        value_name = "PROCESSOR_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = Settings::default().shutdown_timeout.as_secs()
    )]
    pub shutdown_timeout_secs: u64,
    /// Seconds between progress log lines; 0 for none.
    #[arg(
        long,
        env = "PROCESSOR_STATS_INTERVAL_SECS",
        value_name = "PROCESSOR_STATS_INTERVAL_SECS",
        default_value_t = Settings::default().stats_interval.map_or(0, |d| d.as_secs())
    )]
    pub stats_interval_secs: u64,
    /// Seconds between registry reloads (a miss also reloads it).
    #[arg(long, env = "PROCESSOR_REGISTRY_REFRESH_SECS", value_name = "PROCESSOR_REGISTRY_REFRESH_SECS", default_value_t = Settings::default().registry_refresh.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub registry_refresh_secs: u64,
    /// Address of /healthz, /readyz and /metrics; `off` disables the endpoint.
    #[arg(long, env = "PROCESSOR_HTTP_ADDR", value_name = "PROCESSOR_HTTP_ADDR", default_value = "127.0.0.1:9090", value_parser = http_addr)]
    pub http_addr: HttpAddr,
}

/// Where the operator endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy)]
pub struct HttpAddr(pub Option<std::net::SocketAddr>);

pub fn http_addr(s: &str) -> Result<HttpAddr, String> {
    match s.trim() {
        "off" | "" => Ok(HttpAddr(None)),
        a => a
            .parse()
            .map(|a| HttpAddr(Some(a)))
            .map_err(|_| "expected HOST:PORT such as 0.0.0.0:9090, or off".to_owned()),
    }
}

impl ProcessorArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            pollers: self.pollers,
            wait_time: Duration::from_secs(self.wait_time_secs),
            max_in_flight: self.max_in_flight,
            max_held_bytes: self.max_held_bytes,
            visibility_timeout: (self.visibility_timeout_secs > 0)
                .then(|| Duration::from_secs(self.visibility_timeout_secs)),
            batch_size: self.batch_size,
            batch_window: Duration::from_millis(self.batch_window_ms),
            committers: self.committers,
            release_after: Duration::from_secs(self.release_after_secs),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            stats_interval: (self.stats_interval_secs > 0).then(|| Duration::from_secs(self.stats_interval_secs)),
            registry_refresh: Duration::from_secs(self.registry_refresh_secs),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SenderArgs {
    /// Seconds a consumer's lease lasts without renewal (a dead sender's consumers are
    /// taken over after it).
    #[arg(long, env = "SENDER_LEASE_SECS", value_name = "SENDER_LEASE_SECS", default_value_t = delivery::Settings::default().lease.as_secs(), value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
    /// Most consumers this sender serves at once.
    #[arg(long, env = "SENDER_MAX_CONSUMERS", value_name = "SENDER_MAX_CONSUMERS", default_value_t = delivery::Settings::default().max_consumers, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_consumers: i64,
    /// Events read per query.
    #[arg(long, env = "SENDER_BATCH_SIZE", value_name = "SENDER_BATCH_SIZE", default_value_t = delivery::Settings::default().batch_size, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,
    /// Milliseconds an idle consumer waits before reading again.
    #[arg(long, env = "SENDER_POLL_INTERVAL_MS", value_name = "SENDER_POLL_INTERVAL_MS", default_value_t = delivery::Settings::default().poll_interval.as_millis() as u64)]
    pub poll_interval_ms: u64,
    /// Milliseconds a cursor may stay uncommitted while deliveries succeed.
    #[arg(long, env = "SENDER_COMMIT_INTERVAL_MS", value_name = "SENDER_COMMIT_INTERVAL_MS", default_value_t = delivery::Settings::default().commit_interval.as_millis() as u64)]
    pub commit_interval_ms: u64,
    /// Delays before each retry, e.g. 5s,5m,30m,2h,5h,10h,10h; then the event is parked.
    #[arg(long, env = "SENDER_RETRY_SCHEDULE", value_name = "SENDER_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = delivery::parse_schedule)]
    pub retry_schedule: Schedule,
    /// Seconds of nothing but failures after which a consumer is disabled.
    #[arg(long, env = "SENDER_DISABLE_AFTER_SECS", value_name = "SENDER_DISABLE_AFTER_SECS", default_value_t = delivery::Settings::default().disable_after.as_secs())]
    pub disable_after_secs: u64,
    /// Networks consumers may be in besides public addresses, e.g. 127.0.0.0/8,::1/128.
    #[arg(long, env = "SENDER_ALLOWED_NETWORKS", value_name = "SENDER_ALLOWED_NETWORKS", default_value = "")]
    pub allowed_networks: Networks,
    /// Seconds to finish requests in flight after SIGINT/SIGTERM.
    #[arg(long, env = "SENDER_SHUTDOWN_TIMEOUT_SECS", value_name = "SENDER_SHUTDOWN_TIMEOUT_SECS", default_value_t = delivery::Settings::default().shutdown_timeout.as_secs())]
    pub shutdown_timeout_secs: u64,
    /// Address of /healthz, /readyz and /metrics; `off` disables the endpoint.
    #[arg(long, env = "SENDER_HTTP_ADDR", value_name = "SENDER_HTTP_ADDR", default_value = "127.0.0.1:9091", value_parser = http_addr)]
    pub http_addr: HttpAddr,
}

/// A retry schedule, as a type clap can hold.
pub type Schedule = Vec<Duration>;

impl SenderArgs {
    pub fn settings(&self) -> delivery::Settings {
        delivery::Settings {
            lease: Duration::from_secs(self.lease_secs),
            max_consumers: self.max_consumers,
            batch_size: self.batch_size,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            schedule: self.retry_schedule.clone(),
            disable_after: Duration::from_secs(self.disable_after_secs),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            ..delivery::Settings::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number >= 1".to_owned()),
    }
}

impl DatabaseArgs {
    /// Database settings from the environment alone, for commands that need the
    /// database only for some options.
    pub fn try_from_env() -> anyhow::Result<DatabaseArgs> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            database: DatabaseArgs,
        }
        use clap::Parser;
        Ok(Only::try_parse_from(["database"]).map_err(|e| anyhow::anyhow!("{e}"))?.database)
    }
}

/// A share, 0 to 1.
pub fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0 to 1".to_owned()),
    }
}

/// A duration such as `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = number.parse().map_err(|_| format!("expected a duration such as 30s or 5m, got '{s}'"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("expected a duration such as 30s or 5m, got '{s}'")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A binary's exit code for the result of its run: the error, with its causes, on
/// stderr.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancelled on the first SIGINT or SIGTERM; a second one exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        for signals in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if signals > 0 {
                eprintln!("second signal: exiting at once");
                std::process::exit(130);
            }
            tracing::info!("signal received: shutting down (send another to exit at once)");
            cancel.cancel();
        }
    });
    token
}
