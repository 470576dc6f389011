//! Test harness: every test gets its own PostgreSQL database (migrated, with the demo
//! registry) and its own SQS queue with a dead-letter queue, on the real local
//! services, so tests run in parallel without seeing each other.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use event_processor::ingest::{Processor, Settings};
use event_processor::registry::RegistryFile;
use event_processor::sqs::Queue;
use event_processor::store::Store;
use event_processor::telemetry::{Snapshot, Stats};
use tokio_util::sync::CancellationToken;

pub const START: &str = "start them with: deployments/local/start.sh";

/// The services' addresses: the usual environment variables, else the local defaults.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

pub fn server_url() -> String {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/event_processor".into());
    url[..url.rfind('/').expect("DATABASE_URL has a database")].to_owned()
}

/// PostgreSQL's `HOST:PORT`, from [`server_url`].
pub fn pg_addr() -> String {
    let url = server_url();
    url.rsplit('@').next().unwrap().trim_start_matches("postgres://").to_owned()
}

/// A connection to the server's `postgres` database, for statements about databases.
pub async fn admin() -> tokio_postgres::Client {
    connect(&format!("{}/postgres", server_url())).await
}

/// Environment for child processes (the binaries) pointing at a test's queue and database.
pub fn child_env(env: &TestEnv) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", env.database_url.clone()),
        ("SQS_QUEUE_URL", env.queue.url().to_owned()),
        ("SQS_DLQ_NAME", env.dlq_name.clone()),
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("RUST_LOG", "info".into()),
        ("PROCESSOR_HTTP_ADDR", "127.0.0.1:0".into()),
    ]
}

pub fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::v2026_01_12())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub struct QueueOptions {
    pub visibility_timeout_secs: u32,
    pub max_receive_count: u32,
    /// A FIFO queue pair (`.fifo` names, no content-based deduplication).
    pub fifo: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { visibility_timeout_secs: 30, max_receive_count: 5, fifo: false }
    }
}

pub struct TestEnv {
    pub database_url: String,
    pub db_name: String,
    pub store: Store,
    pub queue: Queue,
    pub dlq: Queue,
    pub dlq_name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static LOGS: Once = Once::new();

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::with(QueueOptions::default()).await
    }

    pub async fn with(options: QueueOptions) -> TestEnv {
        LOGS.call_once(|| {
            if std::env::var_os("TEST_LOG").is_some() {
                tracing_subscriber::fmt().with_env_filter("info,refinery_core=warn").with_test_writer().init();
            }
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let db_name = format!("ep_test_{}_{n}", std::process::id());
        let admin = connect(&format!("{}/postgres", server_url())).await;
        admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await.expect("create test database");
        let database_url = format!("{}/{db_name}", server_url());
        let store = Store::connect(&database_url, 8).unwrap();
        store.migrate().await.expect("migrations");
        // The demo registry without its consumers: tests register the consumers they serve.
        let demo = RegistryFile { consumers: Vec::new(), ..RegistryFile::demo() };
        demo.apply(&mut store.pool().get().await.unwrap(), false).await.expect("demo registry");

        let client = sqs_client();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let fifo = if options.fifo { ".fifo" } else { "" };
        let fifo_attribute = options.fifo.then(|| "true".to_owned());
        let dlq_name = format!("ep-test-{suffix}-dlq{fifo}");
        let dlq_url = client
            .create_queue()
            .queue_name(&dlq_name)
            .set_attributes(fifo_attribute.clone().map(|v| [(QueueAttributeName::FifoQueue, v)].into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("LocalStack does not answer at {}: {e}; {START}", endpoint()))
            .queue_url
            .unwrap();
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.max_receive_count.to_string()});
        let url = client
            .create_queue()
            .queue_name(format!("ep-test-{suffix}{fifo}"))
            .set_attributes(fifo_attribute.map(|v| [(QueueAttributeName::FifoQueue, v)].into()))
            .attributes(QueueAttributeName::VisibilityTimeout, options.visibility_timeout_secs.to_string())
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        TestEnv {
            database_url,
            db_name,
            store,
            queue: Queue::new(client.clone(), url),
            dlq: Queue::new(client, dlq_url),
            dlq_name,
        }
    }

    /// Sends bodies (in batches of 10); returns their SQS message ids in order.
    pub async fn send(&self, bodies: &[String]) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in bodies.chunks(10) {
            for result in self.queue.send(chunk).await.expect("send") {
                ids.push(result.expect("SQS accepted the message"));
            }
        }
        ids
    }

    /// On a connection of its own, so a test that ends the database's sessions can count.
    pub async fn count(&self, sql: &str) -> i64 {
        connect(&self.database_url).await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Messages on the queue: (visible, in flight).
    pub async fn depth(&self) -> (u64, u64) {
        self.queue.depth().await.unwrap()
    }

    pub async fn start(&self, settings: Settings) -> Running {
        self.start_on(settings, std::sync::Arc::new(self.queue.clone())).await
    }

    /// A processor of this database and another queue (an in-memory double).
    pub async fn start_on(
        &self,
        settings: Settings,
        queue: std::sync::Arc<dyn event_processor::sqs::MessageQueue>,
    ) -> Running {
        let processor = Processor::on(settings, queue, self.store.clone()).await.unwrap();
        let stats = processor.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(processor.run(shutdown.clone()));
        Running { stats, shutdown, task }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (db_name, queues) = (self.db_name.clone(), [self.queue.url().to_owned(), self.dlq.url().to_owned()]);
        // Drop is synchronous: clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{}/postgres", server_url()), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
                }
                let sqs = sqs_client();
                for url in queues {
                    let _ = sqs.delete_queue().queue_url(url).send().await;
                }
            })
        })
        .join();
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL does not answer at {url}: {e}; {START}"));
    tokio::spawn(conn);
    client
}

/// Settings for tests: short long polls so shutdown is quick, no progress lines.
pub fn settings() -> Settings {
    Settings {
        wait_time: Duration::from_secs(1),
        batch_window: Duration::from_millis(10),
        shutdown_timeout: Duration::from_secs(10),
        stats_interval: None,
        ..Settings::default()
    }
}

/// A processor running inside the test.
pub struct Running {
    pub stats: std::sync::Arc<Stats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Snapshot>>,
}

impl Running {
    pub async fn stop(self) -> Snapshot {
        self.shutdown.cancel();
        self.task.await.expect("processor task").expect("processor run")
    }
}

/// Polls `condition` until it holds, or fails the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A valid v2 event body for client-1.
pub fn valid_event(event_id: &str) -> String {
    serde_json::json!({
        "event_id": event_id,
        "client_id": "client-1",
        "event_type": "user-app",
        "version": 2,
        "payload": {"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"}
    })
    .to_string()
}
