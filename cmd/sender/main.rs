//! `sender`: delivers every stored event to the consumers subscribed to it, until
//! SIGINT/SIGTERM. `sender consumers ...` registers and manages consumers;
//! `sender replay` delivers parked events again or rewinds a cursor.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use event_processor::config::{self, shutdown_on_signals, DatabaseArgs, LogArgs, SenderArgs};
use event_processor::delivery::consumer::{self, Change, ConsumerEntry, Registered};
use event_processor::delivery::{Position, Sender, Start, Subscribed};
use event_processor::telemetry::{self, endpoint};

#[derive(Parser)]
#[command(version, about = "Delivers stored events to subscribed consumers over signed HTTP webhooks.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    sender: SenderArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Register and manage consumers.
    #[command(subcommand)]
    Consumers(ConsumersCommand),
    /// Deliver a consumer's parked events again, or everything from a position on.
    Replay {
        /// The consumer, as CLIENT/NAME.
        #[arg(long, value_parser = consumer::parse_ref)]
        consumer: (String, String),
        /// Deliver its parked events again (ahead of new ones).
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        parked: bool,
        /// Move its cursor back so that this position and everything after it is delivered again.
        #[arg(long)]
        from: Option<Position>,
    },
    /// Benchmark ceiling: post every event of a client to its push consumers with the
    /// same HTTP client, no database and no signing during the run; prints JSON.
    #[command(hide = true)]
    Ceiling {
        #[arg(long)]
        client: String,
    },
}

#[derive(Subcommand)]
enum ConsumersCommand {
    /// Register a consumer; prints its signing secret once when one is generated.
    Add {
        #[arg(long)]
        client: String,
        #[arg(long)]
        name: String,
        /// Where events are POSTed (http or https).
        #[arg(long)]
        endpoint: String,
        /// Event types, each optionally with a version: user-app,transaction-app@2.
        #[arg(long, value_delimiter = ',', required = true)]
        event_types: Vec<Subscribed>,
        /// `whsec_` + base64; generated when absent.
        #[arg(long, env = "CONSUMER_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// beginning, new, or a position XACT.SEQ.
        #[arg(long, default_value = "new")]
        start: Start,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: i32,
        /// Requests in flight at once (1 keeps strict order).
        #[arg(long, default_value_t = 1)]
        max_in_flight: i32,
    },
    /// Every consumer with its state, cursor and parked events.
    List {
        #[arg(long)]
        client: Option<String>,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering to a consumer (its cursor stays).
    Pause { consumer: String },
    /// Deliver again to a paused or disabled consumer.
    Resume { consumer: String },
    /// Move a consumer's cursor.
    Reset {
        consumer: String,
        /// beginning, new, or a position XACT.SEQ.
        #[arg(long)]
        to: Start,
    },
}

/// One runtime thread: a sender mostly waits on HTTP and PostgreSQL.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = config::load();
    telemetry::init(cli.log.log_format);
    config::exit_code(run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = cli.database.open().await?;
    let change = |consumer: &str, change: Change| {
        let store = store.clone();
        let consumer = consumer.to_owned();
        async move {
            let (client, name) = consumer::parse_ref(&consumer).map_err(anyhow::Error::msg)?;
            let conn = store.pool().get().await?;
            if !consumer::change(&**conn, &client, &name, change).await? {
                anyhow::bail!("no consumer {client}/{name} (or nothing to change)");
            }
            println!("ok");
            Ok(())
        }
    };
    match cli.command {
        None => {
            let sender = Sender::new(cli.sender.settings(), store, cli.sender.allowed_networks.clone())?;
            let shutdown = shutdown_on_signals();
            endpoint::spawn(cli.sender.http_addr.0, "SENDER_HTTP_ADDR", sender.probe(), shutdown.clone()).await?;
            sender.run(shutdown).await?;
        }
        Some(Command::Consumers(ConsumersCommand::Add {
            client,
            name,
            endpoint,
            event_types,
            secret,
            start,
            timeout_ms,
            max_in_flight,
        })) => {
            let entry = ConsumerEntry {
                kind: Default::default(),
                client,
                name,
                endpoint,
                secret,
                event_types,
                start: start.to_string(),
                timeout_ms,
                max_in_flight,
            };
            let conn = store.pool().get().await?;
            match consumer::register(&**conn, &entry, true).await? {
                Registered::Created { id, secret: Some(secret) } => {
                    println!("consumer {} created (id {id}); its signing secret, shown only now:\n{secret}", entry.name)
                }
                Registered::Created { id, secret: None } => println!("consumer {} created (id {id})", entry.name),
                other => println!("{other:?}"),
            }
        }
        Some(Command::Consumers(ConsumersCommand::List { client, json })) => {
            let conn = store.pool().get().await?;
            let consumers = consumer::list(&**conn, client.as_deref(), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&consumers)?);
            } else {
                print!("{}", consumer::table(&consumers));
            }
        }
        Some(Command::Consumers(ConsumersCommand::Pause { consumer })) => change(&consumer, Change::Pause).await?,
        Some(Command::Consumers(ConsumersCommand::Resume { consumer })) => change(&consumer, Change::Resume).await?,
        Some(Command::Consumers(ConsumersCommand::Reset { consumer, to })) => {
            change(&consumer, Change::Reset(to)).await?
        }
        Some(Command::Ceiling { client }) => {
            let report =
                event_processor::delivery::ceiling::run(&store, &client, cli.sender.allowed_networks.clone()).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some(Command::Replay { consumer: (client, name), parked, from }) => {
            let reference = format!("{client}/{name}");
            match from {
                Some(p) if !parked => change(&reference, Change::Reset(Start::After(p.just_before()))).await?,
                _ => change(&reference, Change::ReplayParked).await?,
            }
        }
    }
    Ok(())
}
