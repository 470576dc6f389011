//! The failure paths of the processor that the happy fault suite never drives, each
//! injected directly: through the in-memory SQS double (failed visibility changes and
//! deletes, a receive that never answers), and against the real services (a read-only
//! database, a connection that stops answering, a FIFO queue, the largest bodies).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use event_processor::ingest::Settings;
use event_processor::sqs::{MessageQueue, Outbound};
use event_processor::store::{Arrival, Classified};
use event_processor::validation::{Event, Verdict};
use serde_json::json;

use crate::harness::{eventually, settings, valid_event, QueueOptions, TestEnv};
use crate::memory_queue::MemoryQueue;
use crate::proxy::Proxy;

const WAIT: Duration = Duration::from_secs(60);

fn double() -> Arc<MemoryQueue> {
    Arc::new(MemoryQueue::default())
}

fn with_visibility(secs: u64) -> Settings {
    Settings { visibility_timeout: Some(Duration::from_secs(secs)), ..settings() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_visibility_extension_is_retried_before_the_message_expires() {
    let env = TestEnv::new().await;
    let queue = double();
    for i in 0..30 {
        queue.send(valid_event(&format!("extend-{i}")));
    }
    // Commits wait on a lock for three visibility timeouts, so the heartbeat must work.
    let locker = env.store.pool().get().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE message IN ACCESS EXCLUSIVE MODE").await.unwrap();
    // The first extension round (three calls of ten) fails as a whole.
    queue.fail_visibility_calls.store(3, SeqCst);
    // 4 s of visibility: the retry has 2 s to land even on a loaded machine.
    let running = env.start_on(with_visibility(4), queue.clone()).await;
    eventually("all held", WAIT, || async { running.stats.snapshot().received == 30 }).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    eventually("all deleted", WAIT, || async { queue.remaining() == 0 }).await;
    let stats = running.stop().await;
    assert_eq!(queue.fail_visibility_calls.load(SeqCst), 0, "the injected failures happened");
    assert_eq!(queue.redeliveries.load(SeqCst), 0, "no message expired while held: {stats:?}");
    assert_eq!((stats.stored, stats.duplicates), (30, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_go_out_as_full_as_the_receives_came() {
    let env = TestEnv::new().await;
    let queue = double();
    // One message in ten is from a client the registry does not know: classifying it
    // waits on the database (the registry check before a miss), half-way through a receive.
    for i in 0..487 {
        let body = valid_event(&format!("full-deletes-{i}"));
        queue.send(if i % 10 == 4 { body.replace("client-1", "client-unknown") } else { body });
    }
    // No window: a batch is what has been handed on when the batcher looks. Only whole
    // receives in a batch keep its deletes in calls of ten.
    let running = env.start_on(Settings { batch_window: Duration::ZERO, ..settings() }, queue.clone()).await;
    eventually("all deleted", WAIT, || async { queue.remaining() == 0 }).await;
    let stats = running.stop().await;
    assert_eq!(queue.redeliveries.load(SeqCst), 0, "{stats:?}");
    assert_eq!(env.count("SELECT count(*) FROM message").await, 438);
    assert_eq!(env.count("SELECT count(*) FROM rejected_message").await, 49);
    let receives = queue.receive_sizes.lock().unwrap().clone();
    let deletes = queue.delete_sizes.lock().unwrap().clone();
    assert_eq!(deletes.iter().sum::<usize>(), 487);
    assert!(
        deletes.len() <= receives.len(),
        "{} delete calls for {} receives: {deletes:?}",
        deletes.len(),
        receives.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_whose_delete_failed_stays_rejected_when_the_registry_changes() {
    let env = TestEnv::new().await;
    let queue = double();
    let body = json!({"event_id": "late-client-1", "client_id": "client-late", "event_type": "user-app", "version": 2,
                      "payload": {"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"}});
    let id = queue.send(body.to_string());
    // Every delete fails until the processor gives up (half the visibility timeout).
    queue.fail_deletes.store(1_000, SeqCst);
    let running = env.start_on(with_visibility(2), queue.clone()).await;
    eventually("rejected", WAIT, || async { env.count("SELECT count(*) FROM rejected_message").await == 1 }).await;
    eventually("the delete given up", WAIT, || async { running.stats.snapshot().delete_failures >= 1 }).await;
    // The client arrives; SQS redelivers the message, which is now valid.
    env.store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO client (id) VALUES ('client-late');
             INSERT INTO subscription (client_id, event_type) VALUES ('client-late', 'user-app');",
        )
        .await
        .unwrap();
    queue.fail_deletes.store(0, SeqCst);
    eventually("redelivered and deleted", WAIT, || async { queue.remaining() == 0 }).await;
    let stats = running.stop().await;
    assert!(queue.redeliveries.load(SeqCst) >= 1, "the message came back");
    let in_message = env.count(&format!("SELECT count(*) FROM message WHERE sqs_message_id = '{id}'")).await;
    let in_rejected = env.count(&format!("SELECT count(*) FROM rejected_message WHERE sqs_message_id = '{id}'")).await;
    assert_eq!((in_message, in_rejected), (0, 1), "one table, the first verdict's: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_judged_rejected_on_redelivery_stays_stored() {
    let env = TestEnv::new().await;
    let arrival = Arrival {
        message_id: "sqs-accepted-first".into(),
        body: valid_event("accepted-first"),
        receive_count: 1,
        sent_at: None,
        received_at: chrono::Utc::now(),
    };
    let registry =
        event_processor::registry::Registry::from_file(&event_processor::registry::RegistryFile::demo()).unwrap();
    let accepted = event_processor::validation::classify(&arrival.body, &arrival.message_id, &registry);
    assert!(matches!(accepted, Verdict::Accepted(_)));
    env.store.commit_batch(&mut [Classified { arrival: arrival.clone(), verdict: accepted }]).await.unwrap();
    // The redelivery meets a registry without the client.
    let empty = event_processor::registry::Registry::from_file(&Default::default()).unwrap();
    let rejected = event_processor::validation::classify(&arrival.body, &arrival.message_id, &empty);
    assert!(matches!(rejected, Verdict::Rejected(_)));
    env.store.commit_batch(&mut [Classified { arrival, verdict: rejected }]).await.unwrap();
    assert_eq!(env.count("SELECT count(*) FROM message").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM rejected_message").await, 0, "one table, the first verdict's");
}

fn accepted(message_id: &str, event_id: &str, payload: serde_json::Value) -> Classified {
    let event = Event {
        client_id: "client-1".into(),
        event_type: "user-app".into(),
        version: 2,
        event_id: event_id.into(),
        occurred_at: None,
        payload: payload.to_string().into(),
    };
    let arrival = Arrival {
        message_id: message_id.into(),
        body: String::new(),
        receive_count: 1,
        sent_at: None,
        received_at: chrono::Utc::now(),
    };
    Classified { arrival, verdict: Verdict::Accepted(event) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_with_other_content_is_kept_as_a_conflicting_duplicate() {
    let env = TestEnv::new().await;
    let first = json!({"user_id": "usr-1", "action": "login", "at": "2026-11-22T10:00:00Z"});
    let same_reordered = json!({"at": "2026-11-22T10:00:00Z", "action": "login", "user_id": "usr-1"});
    let other = json!({"user_id": "usr-2", "action": "logout", "at": "2026-11-22T10:00:00Z"});
    // In one batch: the original, a true retry, and a reuse of the id with other content.
    let mut batch = [accepted("m-1", "reused", first), accepted("m-2", "reused", same_reordered.clone())];
    let outcome = env.store.commit_batch(&mut batch).await.unwrap();
    assert_eq!((outcome.stored, outcome.duplicates, outcome.conflicting), (1, 1, 0));
    let mut batch = [accepted("m-3", "reused", other), accepted("m-4", "reused", same_reordered)];
    let outcome = env.store.commit_batch(&mut batch).await.unwrap();
    assert_eq!((outcome.stored, outcome.duplicates, outcome.conflicting, outcome.rejected), (0, 1, 1, 1));
    let Verdict::Rejected(r) = &batch[0].verdict else { panic!("the reuse is rejected") };
    assert_eq!(r.rejection.reason.code(), "conflicting_duplicate");

    let conn = env.store.pool().get().await.unwrap();
    let row = conn
        .query_one("SELECT sqs_message_id, reason, detail, client_id, event_id FROM rejected_message", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "m-3");
    assert_eq!(row.get::<_, &str>(1), "conflicting_duplicate");
    assert_eq!(row.get::<_, serde_json::Value>(2)["stored"]["sqs_message_id"], "m-1");
    assert_eq!((row.get::<_, &str>(3), row.get::<_, &str>(4)), ("client-1", "reused"));
    assert_eq!(env.count("SELECT count(*) FROM message").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_at_is_when_the_row_was_written_not_when_its_transaction_began() {
    let env = TestEnv::new().await;
    let locker = env.store.pool().get().await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE message IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let started = chrono::Utc::now();
    let store = env.store.clone();
    let commit = tokio::spawn(async move {
        let mut batch = [accepted("late-1", "late-1", json!({"user_id": "usr-1", "action": "login", "at": "x"}))];
        store.commit_batch(&mut batch).await.unwrap()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(commit.await.unwrap().stored, 1);
    let conn = env.store.pool().get().await.unwrap();
    let stored_at: chrono::DateTime<chrono::Utc> =
        conn.query_one("SELECT stored_at FROM message", &[]).await.unwrap().get(0);
    assert!(
        stored_at - started >= chrono::Duration::milliseconds(1_900),
        "stored_at {stored_at} is the transaction's start, not the write ({started} + 2 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_pauses_the_processor_and_dead_letters_nothing() {
    let env =
        TestEnv::with(QueueOptions { visibility_timeout_secs: 30, max_receive_count: 2, ..QueueOptions::default() })
            .await;
    let bodies: Vec<String> = (0..20).map(|i| valid_event(&format!("ro-{i}"))).collect();
    let read_only = |on: bool| {
        let db = env.db_name.clone();
        async move {
            let admin = crate::harness::admin().await;
            admin
                .batch_execute(&format!("ALTER DATABASE {db} SET default_transaction_read_only = {on}"))
                .await
                .unwrap();
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .unwrap();
        }
    };
    let running = env.start(Settings { release_after: Duration::from_secs(2), ..settings() }).await;
    read_only(true).await;
    env.send(&bodies).await;
    eventually("commits refused", WAIT, || async { running.stats.snapshot().commit_retries > 0 }).await;
    eventually("held batches released", WAIT, || async { running.stats.snapshot().released > 0 }).await;
    // A read probe would call this database healthy and receive again, each receive
    // taking a message nearer the dead-letter queue. The write probe keeps it paused.
    let before = running.stats.snapshot().received;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(running.stats.snapshot().received, before, "paused while the database refuses writes");
    read_only(false).await;
    eventually("all stored", WAIT, || async { env.count("SELECT count(*) FROM message").await == 20 }).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    running.stop().await;
    assert_eq!(env.dlq.depth().await.unwrap(), (0, 0), "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_connection_that_stops_answering_is_cut_off_and_nothing_is_lost() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start(crate::harness::pg_addr()).await;
    let url = env.database_url.replacen(&crate::harness::pg_addr(), &proxy.addr().to_string(), 1);
    let store = event_processor::store::Store::connect(&url, 4).unwrap().with_deadline(Duration::from_secs(2));
    let processor = event_processor::ingest::Processor::new(settings(), env.queue.clone(), store).await.unwrap();
    let stats = processor.stats();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));

    env.send(&(0..20).map(|i| valid_event(&format!("bh-a-{i}"))).collect::<Vec<_>>()).await;
    eventually("first events stored", WAIT, || async { stats.snapshot().stored == 20 }).await;
    // Packets vanish: no error, no close, no answer.
    proxy.blackhole(true);
    env.send(&(0..20).map(|i| valid_event(&format!("bh-b-{i}"))).collect::<Vec<_>>()).await;
    eventually("a commit cut off at its deadline", WAIT, || async { stats.snapshot().commit_retries > 0 }).await;
    proxy.blackhole(false);
    eventually("all stored", WAIT, || async { env.count("SELECT count(*) FROM message").await == 40 }).await;
    eventually("queue drained", WAIT, || async { env.depth().await == (0, 0) }).await;
    shutdown.cancel();
    let summary =
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("shutdown in time").unwrap().unwrap();
    assert_eq!(summary.stored + summary.duplicates, 40, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_time_when_a_receive_never_answers() {
    let env = TestEnv::new().await;
    let queue = double();
    queue.hang_receives.store(true, SeqCst);
    let running = env.start_on(Settings { shutdown_timeout: Duration::from_secs(2), ..settings() }, queue).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.stop()).await;
    assert!(stopped.is_ok(), "shutdown hung on a receive that never answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_below_one_receive_of_the_largest_messages_stops_startup() {
    let env = TestEnv::new().await;
    let processor = event_processor::ingest::Processor::new(
        Settings { max_held_bytes: 1 << 20, ..settings() },
        env.queue.clone(),
        env.store.clone(),
    )
    .await
    .unwrap();
    let error = processor.run(tokio_util::sync::CancellationToken::new()).await.unwrap_err().to_string();
    assert!(error.contains("PROCESSOR_MAX_HELD_BYTES") && error.contains("MaximumMessageSize"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_the_largest_size_are_settled_within_the_byte_budget() {
    let env = TestEnv::new().await;
    // Legacy events just under the largest size the queue accepts (read, not assumed).
    let max = env.queue.attributes().await.unwrap().max_message_size;
    let filler = "x".repeat(max - 1024);
    let bodies: Vec<String> = (0..25)
        .map(|i| {
            json!({"event_type": "transaction-app", "client_id": "client-2", "message": format!("{i:02}{filler}")})
                .to_string()
        })
        .collect();
    for body in &bodies {
        assert!(body.len() <= max);
        env.send(std::slice::from_ref(body)).await;
    }
    // Room for one receive of ten maximal messages: the pollers take turns.
    let budget = 10 * (4 * max + 1024);
    let running = env.start(Settings { max_held_bytes: budget, ..settings() }).await;
    eventually("all settled and deleted", WAIT, || async { running.stats.snapshot().deleted == 25 }).await;
    let stats = running.stop().await;
    // Stored, or kept as a rejection if the legacy schema limits the length: either way
    // each one once.
    assert_eq!(stats.stored + stats.duplicates + stats.rejected_total(), 25, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    let rows = env.count("SELECT (SELECT count(*) FROM message) + (SELECT count(*) FROM rejected_message)").await;
    assert_eq!(rows, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_stores_each_group_in_send_order() {
    let env = TestEnv::with(QueueOptions { fifo: true, ..QueueOptions::default() }).await;
    let clients = ["client-1", "client-2", "client-3"];
    let mut sent = Vec::new();
    for i in 0..60 {
        let client = clients[i % 3];
        let event_id = format!("fifo-{i:03}");
        let body = json!({"event_id": event_id, "client_id": client, "event_type": "user-app", "version": 2,
                          "payload": {"user_id": "usr-0123abcd", "action": "login", "at": "2026-11-22T10:00:00Z"}});
        sent.push((client, event_id, body.to_string()));
    }
    for chunk in sent.chunks(10) {
        let messages: Vec<Outbound<'_>> = chunk
            .iter()
            .map(|(client, event_id, body)| Outbound { body, group: Some(client), dedup: Some(event_id) })
            .collect();
        for result in env.queue.send_messages(&messages).await.unwrap() {
            result.expect("SQS took the FIFO message");
        }
    }
    assert!(env.queue.attributes().await.unwrap().fifo);
    // Small batches, so one receive's messages span several commits.
    let running = env.start(Settings { batch_size: 3, ..settings() }).await;
    eventually("all stored", WAIT, || async { env.count("SELECT count(*) FROM message").await == 60 }).await;
    running.stop().await;
    let conn = env.store.pool().get().await.unwrap();
    for client in clients {
        let stored: Vec<String> = conn
            .query("SELECT event_id FROM message WHERE client_id = $1 ORDER BY xact_id, seq", &[&client])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<String> = sent.iter().filter(|(c, ..)| *c == client).map(|(_, e, _)| e.clone()).collect();
        assert_eq!(stored, expected, "{client}'s events in the log's order");
    }
}
