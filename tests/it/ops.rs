//! Operating it: replay after a registration, the HTTP endpoint, secrets kept out of logs.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use event_processor::registry::{ClientEntry, RegistryFile, SubscriptionEntry};
use event_processor::store::replay::{self, Filter};
use event_processor::validation::Reason;

use crate::harness::{child_env, eventually, settings, valid_event, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_events_rejected_before_their_client_was_registered() {
    let env = TestEnv::new().await;
    let mut bodies: Vec<String> =
        (0..3).map(|i| valid_event(&format!("late-{i}")).replace("client-1", "client-late")).collect();
    bodies.push(valid_event("broken").replace("\"login\"", "\"fly\""));
    env.send(&bodies).await;
    let running = env.start(settings()).await;
    eventually("all rejected", Duration::from_secs(30), || async {
        env.count("SELECT count(*) FROM rejected_message").await == 4
    })
    .await;
    running.stop().await;

    let mut file = RegistryFile::default();
    file.clients.push(ClientEntry { id: "client-late".into(), name: String::new() });
    file.subscriptions.push(SubscriptionEntry { client: "client-late".into(), event_type: "user-app".into() });
    file.apply(&mut env.store.pool().get().await.unwrap(), false).await.unwrap();

    let only_unknown = Filter { reason: Some(Reason::UnknownClient), ..Filter::default() };
    let dry = replay::run(&env.store, &only_unknown, true).await.unwrap();
    assert_eq!((dry.examined, dry.moved), (3, 3));
    assert_eq!(env.count("SELECT count(*) FROM message").await, 0, "a dry run changes nothing");

    let out = Command::new(env!("CARGO_BIN_EXE_processor")).arg("replay").envs(child_env(&env)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["examined"].as_u64(), report["moved"].as_u64()), (Some(4), Some(3)), "{report}");
    assert_eq!(report["still_rejected"]["schema_violation"].as_u64(), Some(1));
    assert_eq!(env.count("SELECT count(*) FROM message WHERE client_id = 'client-late'").await, 3);
    assert_eq!(env.count("SELECT count(*) FROM rejected_message").await, 1);

    let again = replay::run(&env.store, &Filter::default(), false).await.unwrap();
    assert_eq!((again.examined, again.moved), (1, 0), "replay is idempotent");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP GET: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_readiness_follows_the_database() {
    let env = TestEnv::new().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_processor"))
        .envs(child_env(&env))
        .env("PROCESSOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("endpoint up", Duration::from_secs(20), || async {
        get(port, "/healthz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(get(port, "/readyz").unwrap().0, 200);

    let mut bodies: Vec<String> = (0..20).map(|i| valid_event(&format!("m-{i}"))).collect();
    bodies.push("Hello World".into());
    env.send(&bodies).await;
    eventually("counters moved", Duration::from_secs(30), || async {
        get(port, "/metrics").is_some_and(|(_, body)| {
            body.contains("event_processor_received_total 21")
                && body.contains("event_processor_stored_total 20")
                && body.contains("event_processor_rejected_total{reason=\"malformed_json\"} 1")
        })
    })
    .await;
    let (_, body) = get(port, "/metrics").unwrap();
    for name in [
        "event_processor_commit_seconds_bucket",
        "event_processor_lag_seconds_count",
        "event_processor_in_flight",
        "event_processor_accepted_total{event_type=\"user-app\"} 20",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }

    // The database "goes away" (its table does): not ready; back: ready again.
    let admin = env.store.pool().get().await.unwrap();
    admin.batch_execute("ALTER TABLE message RENAME TO message_away").await.unwrap();
    eventually("not ready", Duration::from_secs(10), || async { get(port, "/readyz").is_some_and(|(s, _)| s == 503) })
        .await;
    admin.batch_execute("ALTER TABLE message_away RENAME TO message").await.unwrap();
    eventually("ready again", Duration::from_secs(10), || async {
        get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_database_password_never_appears_in_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_processor"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", "postgres://app:s3cr3t-pw@127.0.0.1:1/nowhere")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("DATABASE_URL"), "the error names the setting: {all}");
    assert!(!all.contains("s3cr3t-pw"), "password leaked: {all}");
}
