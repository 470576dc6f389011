//! `producers`: sends realistic multi-tenant load to the queue.
//! `producers verify`: checks that every acknowledged event is stored exactly once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use event_processor::config::{self, parse_duration, ratio, DatabaseArgs, LogArgs, QueueArgs};
use event_processor::ingest::Settings;
use event_processor::producers::api_sink::ApiSink;
use event_processor::producers::generator::{Generator, Mix};
use event_processor::producers::load::{self, Destination, LoadSettings};
use event_processor::producers::templates::EventsFile;
use event_processor::producers::tenants;
use event_processor::producers::{manifest, verify};
use event_processor::registry::RegistryFile;
use event_processor::telemetry;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Generates realistic event load, and verifies nothing was lost.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    send: SendArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check the database against a manifest: lost, duplicated, misclassified.
    Verify(VerifyArgs),
    /// Receive and delete without processing: the raw drain rate, a benchmark's ceiling.
    Drain(DrainArgs),
}

#[derive(Args)]
struct DrainArgs {
    /// Concurrent long polls (as many as the processor's default).
    #[arg(long, default_value_t = Settings::default().pollers)]
    pollers: usize,
    /// Stop after deleting this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when the queue stayed empty this many seconds.
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
}

#[derive(Args)]
struct SendArgs {
    /// Event templates.
    #[arg(long, default_value = "deployments/events.json")]
    events_file: PathBuf,
    /// Events per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Stop after this many events (default: until Ctrl-C or --duration).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long, e.g. 30s, 5m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Concurrent SendMessageBatch calls.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spread load over client-1..N, registering the missing ones (needs DATABASE_URL).
    #[arg(long)]
    clients: Option<usize>,
    /// Share of bad input (not JSON, missing fields, unknown client/type, not subscribed,
    /// schema violations, \u0000, oversized).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    invalid_ratio: f64,
    /// Share of re-sends of an already sent event_id.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    duplicate_ratio: f64,
    /// Send exactly the original producers' messages every 100 ms.
    #[arg(long)]
    legacy: bool,
    /// Write one JSON line per acknowledged event, for `verify`.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Seed for a reproducible mix.
    #[arg(long)]
    seed: Option<u64>,
    /// Send through the platform API at this URL (e.g. http://127.0.0.1:8080) instead of
    /// straight to SQS; events it refuses are checked against the expected reason.
    #[arg(long, env = "PRODUCERS_API_URL", value_name = "PRODUCERS_API_URL")]
    api_url: Option<String>,
    /// The key for --api-url (a producer key, or the admin key).
    #[arg(
        long,
        env = "PRODUCERS_API_KEY",
        value_name = "PRODUCERS_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    api_key: String,
    /// With --api-url: up to 10 events per POST /v1/events/batch instead of one request each.
    #[arg(long)]
    api_batch: bool,
    /// No progress bar or progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[arg(long)]
    manifest: PathBuf,
    /// Keep checking for up to this many seconds until nothing is missing (the
    /// processor may still be draining).
    #[arg(long, default_value_t = 0)]
    wait_secs: u64,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
    /// The fake consumers' record file: also check that every stored event reached every
    /// subscribed push consumer, in order.
    #[arg(long, env = "CONSUMERS_RECORD", value_name = "CONSUMERS_RECORD")]
    consumers_record: Option<PathBuf>,
    /// Do not wait for the source queue to drain (the database alone is checked).
    #[arg(long)]
    no_queue: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::load();
    telemetry::init(cli.log.log_format);
    let result = match cli.command {
        Some(Command::Verify(args)) => verify(args, &cli.queue).await,
        Some(Command::Drain(args)) => drain(args, &cli.queue).await,
        None => send(cli.send, &cli.queue).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn send(args: SendArgs, queue: &QueueArgs) -> anyhow::Result<ExitCode> {
    let events = EventsFile::read(&args.events_file)?;
    if let Some(n) = args.clients {
        let database = DatabaseArgs::try_from_env()?;
        let store = database.open().await?;
        let mut conn = store.pool().get().await?;
        // Subscribed to every event type registered, so any templates file works.
        let registered = RegistryFile::export(&**conn, false).await?;
        let report = tenants(&registered, n).apply(&mut conn, false).await?;
        tracing::info!(clients = report.clients, "tenants registered");
    }
    let mix = Mix { invalid_ratio: args.invalid_ratio, duplicate_ratio: args.duplicate_ratio };
    let generator = Generator::new(events, mix, args.clients, args.seed);
    let manifest = args.manifest.as_deref().map(manifest::Writer::create).transpose()?;
    let settings = LoadSettings {
        rate: args.rate,
        count: args.count,
        duration: args.duration,
        concurrency: args.concurrency,
        legacy: args.legacy,
        progress: !args.quiet,
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    let destination = match &args.api_url {
        Some(url) => {
            let key = if args.api_key.is_empty() {
                std::env::var("API_ADMIN_KEY").unwrap_or_default()
            } else {
                args.api_key.clone()
            };
            Destination::Api(ApiSink::new(url, &key, args.api_batch))
        }
        None => Destination::Queue(queue.open().await?),
    };
    let summary = load::run(destination, generator, settings, manifest, stop).await?;
    println!(
        "sent {} events in {:.1}s ({:.0}/s), {} failed; by expected outcome: {:?}",
        summary.acknowledged,
        summary.elapsed.as_secs_f64(),
        summary.rate(),
        summary.failed,
        summary.by_expect
    );
    if args.api_url.is_some() {
        println!(
            "refused by the API: {:?}, {} of them for another reason than expected",
            summary.refused, summary.refused_unexpectedly
        );
    }
    Ok(if summary.failed == 0 && summary.refused_unexpectedly == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn verify(args: VerifyArgs, queue: &QueueArgs) -> anyhow::Result<ExitCode> {
    let entries = manifest::read(&args.manifest)?;
    let store = event_processor::store::Store::connect(&args.database.database_url, 1)?;
    // The verdict waits for the source queue to drain (a late duplicate would come
    // from there); without SQS at hand, the database alone is checked.
    let source = if args.no_queue { None } else { queue.open().await.ok() };
    let mut report = verify::until_complete(
        &store,
        &entries,
        args.consumers_record.as_deref(),
        source.as_ref(),
        Duration::from_secs(args.wait_secs),
    )
    .await?;
    if let Ok(client) = event_processor::sqs::sdk_client().await {
        if let Ok(dlq) = queue.open_dead_letters(client).await {
            report.dead_lettered = dlq.depth().await.ok().map(|(visible, in_flight)| visible + in_flight);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn drain(args: DrainArgs, queue: &QueueArgs) -> anyhow::Result<ExitCode> {
    let summary = event_processor::producers::drain::run(
        queue.open().await?,
        args.pollers,
        args.count,
        Duration::from_secs(args.idle_secs),
    )
    .await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}
