//! `api`: the multi-tenant platform API (registry, keys, ingest, event status, pull
//! consumption) with /healthz, /readyz and /metrics, until SIGINT/SIGTERM.
//! `api openapi`: prints the OpenAPI document (`docs/openapi.json` keeps a copy).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use event_processor::api::{self, ApiArgs, ApiContext};
use event_processor::config::{self, shutdown_on_signals, DatabaseArgs, LogArgs, QueueArgs};
use event_processor::telemetry::{self, endpoint};

#[derive(Parser)]
#[command(version, about = "The platform API: registry, keys, ingest, event status and pull consumption over HTTP.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OpenAPI document and exit (needs no settings).
    Openapi,
}

/// One runtime thread: the API mostly waits on PostgreSQL and SQS.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The document needs no database, queue or key: print it before settings are read.
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        println!("{}", api::openapi::document());
        return ExitCode::SUCCESS;
    }
    let cli: Cli = config::load();
    telemetry::init(cli.log.log_format);
    config::exit_code(run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Openapi) = cli.command {
        println!("{}", api::openapi::document());
        return Ok(());
    }
    let settings = cli.api.settings()?;
    let store = cli.database.open().await?;
    let queue = cli.queue.open().await?;
    let metrics = endpoint::install_recorder()?;
    let ctx = ApiContext::new(store, queue, settings, Some(metrics)).await?;
    let listener = endpoint::bind(cli.api.addr, "API_ADDR").await?;
    api::serve(listener, ctx, shutdown_on_signals()).await
}
