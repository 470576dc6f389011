//! The processor against real SQS and PostgreSQL: each rejection reason, idempotency,
//! redelivery, poison rows, concurrent processors, shutdown and database failures.

use std::time::Duration;

use event_processor::sqs::MAX_BATCH;
use event_processor::store::{Arrival, Classified};
use event_processor::validation::classify;
use event_processor::validation::Reason;

use crate::harness::{eventually, settings, valid_event, QueueOptions, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_is_stored_with_its_code_and_deleted() {
    let env = TestEnv::new().await;
    let cases = [
        (r#"{"client_id":"client-1","payload":{}}"#.to_owned(), Reason::InvalidEnvelope),
        (r#"{"client_id":"nobody","event_type":"user-app","message":"x"}"#.to_owned(), Reason::UnknownClient),
        (
            r#"{"client_id":"client-1","event_type":"user-app","version":9,"message":"x"}"#.to_owned(),
            Reason::UnknownEventType,
        ),
        (r#"{"client_id":"client-3","event_type":"transaction-app","message":"x"}"#.to_owned(), Reason::NotSubscribed),
        (
            r#"{"client_id":"client-1","event_type":"user-app","version":2,"payload":{"action":"fly"}}"#.to_owned(),
            Reason::SchemaViolation,
        ),
        (
            r#"{"client_id":"client-1","event_type":"user-app","message":"nul \u0000 here"}"#.to_owned(),
            Reason::Unstorable,
        ),
    ];
    let bodies: Vec<String> = cases.iter().map(|(b, _)| b.clone()).collect();
    let mut ids = env.send(&bodies).await;
    // The original project's hand-sent message, sent the way users do it.
    let out = std::process::Command::new("deployments/local/awslocal")
        .args([
            "sqs",
            "send-message",
            "--queue-url",
            env.queue.url(),
            "--message-body",
            "Hello World",
            "--output",
            "text",
            "--query",
            "MessageId",
        ])
        .env("AWS_ENDPOINT_URL", crate::harness::endpoint())
        .output()
        .expect("deployments/local/awslocal runs");
    assert!(out.status.success(), "awslocal failed: {}", String::from_utf8_lossy(&out.stderr));
    ids.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());

    let running = env.start(settings()).await;
    eventually("all rejected", WAIT, || async { env.count("SELECT count(*) FROM rejected_message").await == 7 }).await;
    eventually("queue empty", WAIT, || async { env.depth().await == (0, 0) }).await;
    let stats = running.stop().await;

    let conn = env.store.pool().get().await.unwrap();
    let expected = cases.iter().map(|(_, r)| *r).chain([Reason::MalformedJson]);
    for (id, reason) in ids.iter().zip(expected) {
        let row = conn
            .query_one("SELECT reason, detail, body FROM rejected_message WHERE sqs_message_id = $1", &[id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), reason.code(), "message {id}");
        let detail: serde_json::Value = row.get(1);
        assert!(detail.get("error").or(detail.get("errors")).is_some(), "{reason}: detail {detail}");
    }
    let violation: serde_json::Value = conn
        .query_one("SELECT detail FROM rejected_message WHERE reason = 'schema_violation'", &[])
        .await
        .unwrap()
        .get(0);
    let paths: Vec<&str> =
        violation["errors"].as_array().unwrap().iter().filter_map(|e| e["instance_path"].as_str()).collect();
    assert!(paths.contains(&"/action"), "instance paths listed: {violation}");
    assert_eq!(env.count("SELECT count(*) FROM message").await, 0);
    assert_eq!((stats.received, stats.deleted, stats.rejected_total()), (7, 7, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_sent_twice_gives_one_row() {
    let env = TestEnv::new().await;
    env.send(&[valid_event("evt-1"), valid_event("evt-1"), valid_event("evt-2")]).await;
    env.send(&[valid_event("evt-1")]).await;
    let running = env.start(settings()).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    let stats = running.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM message").await, 2);
    assert_eq!((stats.stored, stats.duplicates, stats.deleted), (2, 2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_message_redelivered_by_sqs_gives_one_row() {
    let env =
        TestEnv::with(QueueOptions { visibility_timeout_secs: 1, max_receive_count: 10, ..QueueOptions::default() })
            .await;
    let legacy = r#"{"event_type":"transaction-app","client_id":"client-2","message":"a new transaction"}"#.to_owned();
    let ids = env.send(&[legacy]).await;

    // A consumer commits the message and dies before deleting it.
    let received = env.queue.receive(MAX_BATCH, Duration::from_secs(5)).await.unwrap();
    assert_eq!(received.len(), 1);
    let registry =
        event_processor::registry::Registry::from_file(&event_processor::registry::RegistryFile::demo()).unwrap();
    let m = received.into_iter().next().unwrap();
    let verdict = classify(&m.body, &m.message_id, &registry);
    let arrival = Arrival {
        message_id: m.message_id,
        body: m.body,
        receive_count: m.receive_count,
        sent_at: m.sent_at,
        received_at: m.received_at,
    };
    let outcome = env.store.commit_batch(&mut [Classified { arrival, verdict }]).await.unwrap();
    assert_eq!(outcome.stored, 1);

    // SQS redelivers it once the visibility timeout passes; the processor absorbs it.
    let running = env.start(settings()).await;
    eventually("redelivery deleted", WAIT, || async { running.stats.snapshot().deleted == 1 }).await;
    let stats = running.stop().await;
    assert_eq!((stats.stored, stats.duplicates), (0, 1));
    let conn = env.store.pool().get().await.unwrap();
    let row = conn.query_one("SELECT event_id, version, payload FROM message", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), ids[0], "the SQS message id is the key");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, serde_json::Value>(2), serde_json::json!("a new transaction"));
    assert_eq!(env.depth().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_payload_in_a_batch_of_valid_ones_rejects_only_itself() {
    let env = TestEnv::new().await;
    let mut bodies: Vec<String> = (0..9).map(|i| valid_event(&format!("ok-{i}"))).collect();
    bodies.insert(4, valid_event("poison").replace("login", "log\\u0000in"));
    env.send(&bodies).await;
    let running = env.start(settings()).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    running.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM message").await, 9);
    assert_eq!(
        env.count("SELECT count(*) FROM rejected_message WHERE reason = 'unstorable' AND event_id = 'poison'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_on_one_queue_store_every_message_exactly_once() {
    let env = TestEnv::new().await;
    let bodies: Vec<String> = (0..1000).map(|i| valid_event(&format!("e-{i}"))).collect();
    env.send(&bodies).await;
    let mut small = settings();
    small.batch_size = 10;
    let (a, b) = (env.start(small.clone()).await, env.start(small).await);
    eventually("all stored", WAIT, || async { env.count("SELECT count(*) FROM message").await == 1000 }).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    let (sa, sb) = (a.stop().await, b.stop().await);
    assert_eq!(sa.stored + sb.stored, 1000);
    assert!(sa.received > 0 && sb.received > 0, "both processors took part: {} / {}", sa.received, sb.received);
    assert_eq!(sa.deleted + sb.deleted, sa.received + sb.received);
    assert_eq!(env.count("SELECT count(DISTINCT event_id) FROM message").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_messages_in_flight_puts_every_unfinished_message_back_on_the_queue() {
    let env = TestEnv::new().await;
    let bodies: Vec<String> = (0..50).map(|i| valid_event(&format!("s-{i}"))).collect();
    env.send(&bodies).await;

    // Hold a lock so every commit hangs: the processor holds all 50 messages.
    let locker = env.store.pool().get().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE message IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let mut quick = settings();
    quick.shutdown_timeout = Duration::from_secs(1);
    let running = env.start(quick).await;
    eventually("all 50 held", WAIT, || async { running.stats.snapshot().received == 50 }).await;
    let started = std::time::Instant::now();
    let stats = running.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert_eq!((stats.deleted, stats.released), (0, 50));
    locker.batch_execute("ROLLBACK").await.unwrap();

    // Released means visible again at once, not after the 30 s visibility timeout.
    eventually("all 50 back on the queue", Duration::from_secs(5), || async { env.depth().await.0 == 50 }).await;
    assert_eq!(env.count("SELECT count(*) FROM message").await, 0);

    // A later run stores each exactly once.
    let running = env.start(settings()).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    running.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM message").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_mid_stream_leaves_each_message_stored_and_deleted_or_on_the_queue() {
    let env = TestEnv::new().await;
    let bodies: Vec<String> = (0..1000).map(|i| valid_event(&format!("g-{i}"))).collect();
    env.send(&bodies).await;
    let mut slow = settings();
    slow.batch_size = 10;
    slow.committers = 1;
    let running = env.start(slow).await;
    eventually("some stored", WAIT, || async { running.stats.snapshot().deleted >= 50 }).await;
    let stats = running.stop().await;
    assert_eq!(stats.released, 0, "nothing had to be abandoned");
    assert_eq!(stats.deleted, stats.received, "everything received was finished");
    let stored = env.count("SELECT count(*) FROM message").await as u64;
    assert_eq!(stored, stats.stored);
    eventually("the rest visible", Duration::from_secs(5), || async { env.depth().await == (1000 - stored, 0) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_keeps_messages_invisible_so_none_is_processed_twice() {
    let env =
        TestEnv::with(QueueOptions { visibility_timeout_secs: 2, max_receive_count: 10, ..QueueOptions::default() })
            .await;
    let bodies: Vec<String> = (0..30).map(|i| valid_event(&format!("slow-{i}"))).collect();
    env.send(&bodies).await;
    let locker = env.store.pool().get().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE message IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let running = env.start(settings()).await;
    eventually("all held", WAIT, || async { running.stats.snapshot().received == 30 }).await;
    // Three visibility timeouts pass while the commits wait on the lock.
    tokio::time::sleep(Duration::from_secs(6)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    let stats = running.stop().await;
    assert!(stats.extended >= 30, "visibility was extended: {stats:?}");
    assert_eq!((stats.received, stats.stored, stats.duplicates), (30, 30, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_pauses_receiving_releases_after_the_deadline_and_recovers() {
    let env =
        TestEnv::with(QueueOptions { visibility_timeout_secs: 30, max_receive_count: 100, ..QueueOptions::default() })
            .await;
    let bodies: Vec<String> = (0..40).map(|i| valid_event(&format!("down-{i}"))).collect();
    env.send(&bodies).await;
    let admin = env.store.pool().get().await.unwrap();
    admin.batch_execute("ALTER TABLE message RENAME TO message_away").await.unwrap();

    let mut s = settings();
    s.release_after = Duration::from_secs(2);
    let running = env.start(s).await;
    eventually("commits failing", WAIT, || async { running.stats.snapshot().commit_retries > 0 }).await;
    eventually("held batches released", WAIT, || async { running.stats.snapshot().released > 0 }).await;
    // Paused: nothing more is received while the database fails.
    let before = running.stats.snapshot().received;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running.stats.snapshot().received, before, "receiving is paused while the database is down");
    assert!(env.depth().await.0 > 0, "released messages are visible again");

    admin.batch_execute("ALTER TABLE message_away RENAME TO message").await.unwrap();
    eventually("all stored after recovery", WAIT, || async { env.count("SELECT count(*) FROM message").await == 40 })
        .await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    running.stop().await;
    assert_eq!(env.dlq.depth().await.unwrap(), (0, 0), "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registered_while_running_is_accepted_without_restart() {
    let env = TestEnv::new().await;
    let running = env.start(settings()).await;
    let body = valid_event("new-tenant").replace("client-1", "client-new");
    let mut file = event_processor::registry::RegistryFile::default();
    file.clients.push(event_processor::registry::ClientEntry { id: "client-new".into(), name: String::new() });
    file.subscriptions.push(event_processor::registry::SubscriptionEntry {
        client: "client-new".into(),
        event_type: "user-app".into(),
    });
    file.apply(&mut env.store.pool().get().await.unwrap(), false).await.unwrap();
    env.send(&[body]).await;
    eventually("stored", WAIT, || async { env.count("SELECT count(*) FROM message").await == 1 }).await;
    running.stop().await;
}
