//! `processor`: drains the queue into PostgreSQL until SIGINT/SIGTERM.
//! `processor registry apply|export|list`: manages tenants, event types and schemas.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use event_processor::config::{self, shutdown_on_signals, DatabaseArgs, LogArgs, ProcessorArgs, QueueArgs};
use event_processor::ingest::Processor;
use event_processor::registry::RegistryFile;
use event_processor::store::replay;
use event_processor::telemetry::{self, endpoint};
use event_processor::validation::Reason;

#[derive(Parser)]
#[command(version, about = "Drains multi-tenant events from SQS into PostgreSQL, exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    processor: ProcessorArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the registry of clients, event types (with schemas) and subscriptions.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Apply the database migrations and exit.
    Migrate,
    /// Validate rejected messages again with the current registry; move those now valid.
    Replay {
        /// Only messages rejected for this reason (e.g. unknown_client).
        #[arg(long)]
        reason: Option<Reason>,
        /// Only messages for this client.
        #[arg(long)]
        client: Option<String>,
        /// Only messages received at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Report what would move, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Upsert registry data from a JSON file (idempotent).
    Apply {
        file: PathBuf,
        /// Replace the schema of an existing (event type, version).
        #[arg(long)]
        force: bool,
    },
    /// Print everything registered, as JSON that `apply` takes back.
    Export {
        /// Include consumers' signing secrets (a backup that can rebuild them; keep it safe).
        #[arg(long)]
        with_secrets: bool,
    },
    /// One line per client and event type.
    List,
}

/// One runtime thread: the processor spends most of its time waiting on SQS and
/// PostgreSQL, and handing messages between threads cost more CPU than it saved.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = config::load();
    telemetry::init(cli.log.log_format);
    config::exit_code(run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = cli.database.open().await?;
    match cli.command {
        None => {
            let queue = cli.queue.open().await?;
            let processor = Processor::new(cli.processor.settings(), queue.clone(), store.clone()).await?;
            let shutdown = shutdown_on_signals();
            endpoint::spawn(cli.processor.http_addr.0, "PROCESSOR_HTTP_ADDR", processor.probe(), shutdown.clone())
                .await?;
            // Without its dead-letter queue the processor still runs; the gauge is missing.
            let dead_letters = match cli.queue.open_dead_letters(queue.client().clone()).await {
                Ok(dlq) => Some(dlq),
                Err(e) => {
                    tracing::warn!(error = %e, "dead-letter queue not found: its depth is not reported");
                    None
                }
            };
            let depths = tokio::spawn(event_processor::ingest::probe::report_queue_depths(queue, dead_letters));
            processor.run(shutdown).await?;
            depths.abort();
        }
        Some(Command::Migrate) => tracing::info!("migrations applied"),
        Some(Command::Replay { reason, client, since, dry_run }) => {
            let filter = replay::Filter { reason, client_id: client, since };
            let report = replay::run(&store, &filter, dry_run).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some(Command::Registry(command)) => {
            let mut conn = store.pool().get().await?;
            match command {
                RegistryCommand::Apply { file, force } => {
                    let report = RegistryFile::read(&file)?.apply(&mut conn, force).await?;
                    println!("{report:?}");
                }
                RegistryCommand::Export { with_secrets } => {
                    println!("{}", serde_json::to_string_pretty(&RegistryFile::export(&**conn, with_secrets).await?)?)
                }
                RegistryCommand::List => print!("{}", RegistryFile::export(&**conn, false).await?.listing()),
            }
        }
    }
    Ok(())
}
