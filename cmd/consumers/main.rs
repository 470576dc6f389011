//! `consumers`: fake webhook endpoints for local runs and tests. Each checks the
//! Standard Webhooks signature, records what it accepts, and fails on demand; see
//! `event_processor::consumers` for the routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use event_processor::config::{self, shutdown_on_signals};
use event_processor::consumers::{self, Settings};
use event_processor::telemetry;

#[derive(Parser)]
#[command(version, about = "Fake webhook consumers: verify signatures, record deliveries, fail on demand.")]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "CONSUMERS_ADDR", value_name = "CONSUMERS_ADDR", default_value = "127.0.0.1:9300")]
    addr: SocketAddr,
    /// A consumer, NAME=whsec_...: deliveries to /NAME must be signed with that secret.
    /// Repeat the flag, or separate them with commas in the environment.
    // Read as text and parsed after clap: clap's own errors would quote the secret.
    #[arg(
        long = "consumer",
        env = "CONSUMERS",
        value_name = "CONSUMERS",
        value_delimiter = ',',
        hide_env_values = true,
        required_unless_present = "registry"
    )]
    consumers: Vec<String>,
    /// Serve every consumer of this registry file that has a secret (for example
    /// `processor registry export --with-secrets`), at the last segment of its endpoint.
    #[arg(long, env = "CONSUMERS_REGISTRY", value_name = "CONSUMERS_REGISTRY")]
    registry: Option<PathBuf>,
    /// Append one JSON line per accepted delivery to this file.
    #[arg(long, env = "CONSUMERS_RECORD", value_name = "CONSUMERS_RECORD")]
    record: Option<PathBuf>,
    /// Share of deliveries each consumer answers 500 at start, 0 to 1 (then PUT /_control/NAME).
    #[arg(
        long,
        env = "CONSUMERS_FAIL_RATIO",
        value_name = "CONSUMERS_FAIL_RATIO",
        default_value_t = 0.0,
        value_parser = config::ratio
    )]
    fail_ratio: f64,
    /// Milliseconds each consumer waits before answering at start.
    #[arg(long, env = "CONSUMERS_DELAY_MS", value_name = "CONSUMERS_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// Largest accepted age (or skew) of webhook-timestamp, in seconds.
    #[arg(
        long,
        env = "CONSUMERS_TOLERANCE_SECS",
        value_name = "CONSUMERS_TOLERANCE_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    tolerance_secs: i64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = config::load();
    telemetry::init(config::LogFormat::Text);
    config::exit_code(run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut endpoints = cli
        .consumers
        .iter()
        .map(String::as_str)
        .map(consumers::parse_consumer)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--consumer <CONSUMERS>: {e}"))?;
    if let Some(path) = &cli.registry {
        endpoints.extend(consumers::from_registry(path)?);
    }
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("CONSUMERS_ADDR: cannot listen on {}", cli.addr))?;
    let settings = Settings {
        addr: cli.addr,
        consumers: endpoints,
        record: cli.record,
        tolerance_secs: cli.tolerance_secs,
        fail_ratio: cli.fail_ratio,
        delay_ms: cli.delay_ms,
    };
    consumers::serve(listener, settings, shutdown_on_signals()).await
}
