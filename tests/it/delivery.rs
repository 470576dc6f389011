//! The sender against real PostgreSQL and the fake consumers over real HTTP: the log
//! never skips under concurrent commits, every subscribed consumer gets every event
//! in order and signed, failures retry, park and replay, 410 disables, a second
//! sender takes over a dead one's consumers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use event_processor::consumers;
use event_processor::delivery::consumer::{self, Change, ConsumerEntry, Registered};
use event_processor::delivery::log::{self, Position, Selection};
use event_processor::delivery::signature::Secret;
use event_processor::delivery::{Sender, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, TestEnv};

/// Inserts `n` stored events for `client` (user-app v1) in one transaction.
async fn store_events(env: &TestEnv, client: &str, prefix: &str, n: usize) {
    let mut conn = env.store.pool().get().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    insert(&*tx, client, prefix, 0..n).await;
    tx.commit().await.unwrap();
}

async fn insert(db: &impl tokio_postgres::GenericClient, client: &str, prefix: &str, range: std::ops::Range<usize>) {
    let ids: Vec<String> = range.map(|i| format!("{prefix}-{i:05}")).collect();
    db.execute(
        "INSERT INTO message (client_id, event_id, event_type, version, payload, received_at, sqs_message_id)
         SELECT $1, id, 'user-app', 1, to_jsonb('hello ' || id), now(), 'sqs-' || id FROM UNNEST($2::text[]) AS id",
        &[&client, &ids],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_never_skips_while_transactions_commit_out_of_order() {
    let env = TestEnv::new().await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = env.store.clone();
            tokio::spawn(async move {
                for round in 0..6 {
                    let mut conn = store.pool().get().await.unwrap();
                    let tx = conn.transaction().await.unwrap();
                    insert(&*tx, "client-1", &format!("w{w}-r{round}"), 0..25).await;
                    // Writers 0 and 1 hold their transaction open while the others commit.
                    if w < 2 {
                        tokio::time::sleep(Duration::from_millis(700 + 300 * w as u64)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let selection = Selection { client_id: "client-1".into(), event_types: vec!["user-app".into()], versions: vec![0] };
    let conn = env.store.pool().get().await.unwrap();
    let mut cursor = Position::BEGINNING;
    let mut seen: Vec<String> = Vec::new();
    let expected = 4 * 6 * 25;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected {
        assert!(tokio::time::Instant::now() < deadline, "reader stuck at {} of {expected}", seen.len());
        let (events, horizon) = log::read_after(&**conn, &selection, cursor, 7).await.unwrap();
        for e in &events {
            assert!(e.position > cursor, "positions only grow");
            cursor = e.position;
            seen.push(e.event_id.clone());
        }
        if events.len() < 7 {
            cursor = cursor.max(Position { xact: horizon, seq: 0 });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let (rest, _) = log::read_after(&**conn, &selection, cursor, 1000).await.unwrap();
    assert!(rest.is_empty(), "nothing left behind the reader");
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (expected, expected), "every row exactly once");
}

/// The fake consumers, in this process, recording to a file.
struct Consumers {
    addr: SocketAddr,
    record: PathBuf,
    stop: CancellationToken,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Consumers {
    async fn start(names: &[(&str, &str)]) -> Consumers {
        let dir = std::env::temp_dir().join(format!("ep-consumers-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join("received.jsonl");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = consumers::Settings {
            addr,
            consumers: names.iter().map(|(n, s)| (n.to_string(), Secret::parse(s).unwrap())).collect(),
            record: Some(record.clone()),
            tolerance_secs: 300,
            fail_ratio: 0.0,
            delay_ms: 0,
        };
        let stop = CancellationToken::new();
        tokio::spawn(consumers::serve(listener, settings, stop.clone()));
        Consumers { addr, record, stop, _dir: TempDir(dir) }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Event ids each consumer accepted, in arrival order.
    fn received(&self) -> HashMap<String, Vec<String>> {
        let mut by_consumer: HashMap<String, Vec<String>> = HashMap::new();
        for line in std::fs::read_to_string(&self.record).unwrap_or_default().lines() {
            // The last line may be half written while we read.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            by_consumer
                .entry(v["consumer"].as_str().unwrap().to_owned())
                .or_default()
                .push(v["event_id"].as_str().unwrap().to_owned());
        }
        by_consumer
    }

    fn count(&self, name: &str) -> usize {
        self.received().get(name).map_or(0, Vec::len)
    }

    /// `PUT /_control/{name}` with a JSON body.
    async fn control(&self, name: &str, body: serde_json::Value) {
        let body = body.to_string();
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "PUT /_control/{name} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 2"), "control {name}: {answer}");
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn secret() -> String {
    Secret::generate()
}

async fn register(env: &TestEnv, entry: ConsumerEntry) {
    let conn = env.store.pool().get().await.unwrap();
    assert!(matches!(consumer::register(&**conn, &entry, true).await.unwrap(), Registered::Created { .. }));
}

fn entry(client: &str, name: &str, endpoint: String, secret: &str, types: &[&str]) -> ConsumerEntry {
    ConsumerEntry {
        kind: Default::default(),
        client: client.into(),
        name: name.into(),
        endpoint,
        secret: Some(secret.into()),
        event_types: types.iter().map(|t| t.parse().unwrap()).collect(),
        start: "beginning".into(),
        timeout_ms: 2000,
        max_in_flight: 1,
    }
}

fn sender_settings(instance: &str) -> Settings {
    Settings {
        instance: instance.into(),
        lease: Duration::from_secs(3),
        poll_interval: Duration::from_millis(50),
        batch_size: 50,
        schedule: [100, 300, 600, 1000].map(Duration::from_millis).to_vec(),
        shutdown_timeout: Duration::from_secs(5),
        ..Settings::default()
    }
}

fn start_sender(env: &TestEnv, instance: &str) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let sender = Sender::new(sender_settings(instance), env.store.clone(), "127.0.0.0/8".parse().unwrap()).unwrap();
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(sender.run(stop)))
}

/// The positions of a client's events, by event id.
async fn positions(env: &TestEnv) -> HashMap<String, Position> {
    let conn = env.store.pool().get().await.unwrap();
    conn.query("SELECT event_id, xact_id, seq FROM message", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), Position { xact: r.get(1), seq: r.get(2) }))
        .collect()
}

fn assert_in_log_order(ids: &[String], positions: &HashMap<String, Position>, who: &str) {
    let mut first_seen = HashSet::new();
    let firsts: Vec<Position> = ids.iter().filter(|id| first_seen.insert(*id)).map(|id| positions[id]).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{who}: first deliveries out of log order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscribed_consumer_gets_every_event_of_its_client_signed_and_in_order() {
    let env = TestEnv::new().await;
    let (s1, s2, s3) = (secret(), secret(), secret());
    let fake = Consumers::start(&[("one", &s1), ("windowed", &s2), ("other-tenant", &s3)]).await;
    register(&env, entry("client-1", "one", fake.url("one"), &s1, &["user-app"])).await;
    let mut windowed = entry("client-1", "windowed", fake.url("windowed"), &s2, &["user-app@1", "monitor-app"]);
    windowed.max_in_flight = 4;
    register(&env, windowed).await;
    register(&env, entry("client-2", "other-tenant", fake.url("other-tenant"), &s3, &["user-app"])).await;
    store_events(&env, "client-1", "a", 120).await;
    store_events(&env, "client-2", "b", 30).await;

    let (stop, task) = start_sender(&env, "s1");
    store_events(&env, "client-1", "c", 80).await;
    eventually("all deliveries", Duration::from_secs(60), || async {
        fake.count("one") >= 200 && fake.count("windowed") >= 200 && fake.count("other-tenant") >= 30
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let received = fake.received();
    let positions = positions(&env).await;
    for name in ["one", "windowed"] {
        let ids = &received[name];
        assert_eq!(ids.len(), 200, "{name}: each event once");
        assert!(ids.iter().all(|id| !id.starts_with("b-")), "{name} got another tenant's events");
    }
    assert_in_log_order(&received["one"], &positions, "one");
    let other = &received["other-tenant"];
    assert_eq!(other.len(), 30);
    assert!(other.iter().all(|id| id.starts_with("b-")), "client-2's consumer only gets client-2's events");
    assert_eq!(env.count("SELECT count(*) FROM delivery_attempt WHERE status = 204").await, 430);
    // The cursors are durable: a new sender starts where they are and delivers nothing again.
    let (stop, task) = start_sender(&env, "s2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(fake.count("one"), 200, "nothing delivered twice after a clean restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_park_replay_delivers_and_410_disables_only_that_consumer() {
    let env = TestEnv::new().await;
    let (s1, s2, s3) = (secret(), secret(), secret());
    let fake = Consumers::start(&[("flaky", &s1), ("down", &s2), ("gone", &s3)]).await;
    for (name, s) in [("flaky", &s1), ("down", &s2), ("gone", &s3)] {
        register(&env, entry("client-1", name, fake.url(name), s, &["user-app"])).await;
    }
    fake.control("flaky", serde_json::json!({"status_for_secs": {"status": 503, "secs": 1}, "retry_after_secs": 0}))
        .await;
    fake.control("down", serde_json::json!({"fail_ratio": 1.0})).await;
    fake.control("gone", serde_json::json!({"gone": true})).await;
    store_events(&env, "client-1", "e", 5).await;

    let (stop, task) = start_sender(&env, "s1");
    eventually("flaky recovers, down parks everything, gone is disabled", Duration::from_secs(30), || async {
        fake.count("flaky") == 5
            && env.count("SELECT count(*) FROM parked_delivery").await == 5
            && env.count("SELECT count(*) FROM consumer WHERE name = 'gone' AND state = 'disabled'").await == 1
    })
    .await;
    assert_in_log_order(&fake.received()["flaky"], &positions(&env).await, "flaky");
    assert_eq!(
        env.count("SELECT count(*) FROM parked_delivery WHERE attempts = 5 AND last_status = 500").await,
        5,
        "parked after the first attempt and 4 retries, with the last status"
    );
    assert_eq!(fake.count("gone"), 0);
    let conn = env.store.pool().get().await.unwrap();
    let reason: String =
        conn.query_one("SELECT disabled_reason FROM consumer WHERE name = 'gone'", &[]).await.unwrap().get(0);
    assert!(reason.contains("410"), "{reason}");

    // The endpoint is fixed; the operator replays what was parked.
    fake.control("down", serde_json::json!({"fail_ratio": 0.0})).await;
    assert!(consumer::change(&**conn, "client-1", "down", Change::ReplayParked).await.unwrap());
    eventually("parked events delivered on replay", Duration::from_secs(30), || async {
        fake.count("down") == 5 && env.count("SELECT count(*) FROM parked_delivery").await == 0
    })
    .await;
    // New events keep flowing to the recovered consumer after the replay.
    store_events(&env, "client-1", "f", 3).await;
    eventually("new events after replay", Duration::from_secs(30), || async { fake.count("down") == 8 }).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sender_takes_over_when_the_first_dies_and_nothing_is_skipped() {
    let env = TestEnv::new().await;
    let s1 = secret();
    let fake = Consumers::start(&[("audit", &s1)]).await;
    register(&env, entry("client-1", "audit", fake.url("audit"), &s1, &["user-app"])).await;
    fake.control("audit", serde_json::json!({"delay_ms": 5})).await;
    store_events(&env, "client-1", "e", 300).await;

    let (_first_stop, first) = start_sender(&env, "first");
    eventually("the first deliveries", Duration::from_secs(30), || async { fake.count("audit") >= 40 }).await;
    let (second_stop, second) = start_sender(&env, "second");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.count("SELECT count(*) FROM consumer WHERE name = 'audit' AND lease_owner = 'first'").await,
        1,
        "the first sender holds the consumer; the second waits for its lease"
    );
    let before_crash = fake.count("audit");
    // A crash: no shutdown, no lease handed back, no final cursor commit; its workers die with it.
    first.abort();
    let _ = first.await;
    eventually("the second sender finishes", Duration::from_secs(60), || async {
        let ids: HashSet<String> = fake.received().remove("audit").unwrap_or_default().into_iter().collect();
        ids.len() == 300
    })
    .await;
    second_stop.cancel();
    second.await.unwrap().unwrap();
    assert!(before_crash < 300, "the crash came before the end");
    assert_eq!(
        env.count("SELECT count(*) FROM delivery_attempt WHERE event_id = 'e-00299'").await,
        1,
        "the second sender delivered the last event"
    );
    let ids = fake.received().remove("audit").unwrap();
    assert_in_log_order(&ids, &positions(&env).await, "audit");
    let duplicates = ids.len() - 300;
    // At most what the dead sender delivered after its last cursor commit.
    assert!(duplicates <= 60, "{duplicates} delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_outside_the_allowed_networks_are_refused() {
    let env = TestEnv::new().await;
    let s1 = secret();
    let fake = Consumers::start(&[("inside", &s1)]).await;
    register(&env, entry("client-1", "inside", fake.url("inside"), &s1, &["user-app"])).await;
    store_events(&env, "client-1", "e", 1).await;
    // No SENDER_ALLOWED_NETWORKS: loopback is private, so nothing may be posted there.
    let sender = Sender::new(sender_settings("strict"), env.store.clone(), Default::default()).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sender.run(stop.clone()));
    eventually("a refused attempt", Duration::from_secs(20), || async {
        env.count("SELECT count(*) FROM delivery_attempt WHERE error LIKE '%SENDER_ALLOWED_NETWORKS%'").await > 0
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(fake.count("inside"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_round_trip_through_the_registry_file_and_secrets_only_when_asked() {
    let source = TestEnv::new().await;
    let s1 = secret();
    register(&source, entry("client-1", "audit", "http://127.0.0.1:9/audit".into(), &s1, &["user-app@2"])).await;
    let mut pull = entry("client-2", "reader", String::new(), &secret(), &["monitor-app"]);
    pull.kind = consumer::Kind::Pull;
    register(&source, pull).await;
    let conn = source.store.pool().get().await.unwrap();
    let without = event_processor::registry::RegistryFile::export(&**conn, false).await.unwrap();
    assert!(without.consumers.iter().all(|c| c.secret.is_none()), "no secret unless asked");
    assert!(!serde_json::to_string(&without).unwrap().contains("whsec_"));
    let with = event_processor::registry::RegistryFile::export(&**conn, true).await.unwrap();
    assert_eq!(with.consumers.len(), 2);

    // The backup rebuilds the consumers elsewhere, secrets and kinds included.
    let target = TestEnv::new().await;
    let text = serde_json::to_string(&with).unwrap();
    let file: event_processor::registry::RegistryFile = serde_json::from_str(&text).unwrap();
    let report = file.apply(&mut target.store.pool().get().await.unwrap(), false).await.unwrap();
    assert_eq!(report.consumers, 2);
    let rebuilt = event_processor::registry::RegistryFile::export(&**target.store.pool().get().await.unwrap(), true)
        .await
        .unwrap();
    assert_eq!(rebuilt.consumers, with.consumers);
    // Applying it again changes nothing.
    let again = file.apply(&mut target.store.pool().get().await.unwrap(), false).await.unwrap();
    assert_eq!(again.consumers, 0);
}
