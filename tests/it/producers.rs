//! The producers and the verifier, as binaries, against a processor running in the test.

use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{child_env, eventually, settings, TestEnv};

fn producers(env: &TestEnv, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_producers"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(child_env(env))
        .output()
        .unwrap();
    eprintln!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_nothing_lost_after_a_mixed_run_and_exactly_one_lost_row_after_a_delete() {
    let env = TestEnv::new().await;
    let running = env.start(settings()).await;
    let dir = tempdir();
    let manifest = format!("{dir}/m.jsonl");
    let out = producers(
        &env,
        &[
            "--count",
            "5000",
            "--rate",
            "0",
            "--invalid-ratio",
            "0.05",
            "--duplicate-ratio",
            "0.02",
            "--clients",
            "6",
            "--manifest",
            &manifest,
            "--quiet",
        ],
    );
    assert!(out.status.success());
    let lines = std::fs::read_to_string(&manifest).unwrap().lines().count();
    assert_eq!(lines, 5000, "every event acknowledged and in the manifest");

    eventually("queue drained", Duration::from_secs(60), || async { env.depth().await == (0, 0) }).await;
    let stats = running.stop().await;
    assert_eq!(stats.received, 5000);
    assert!(stats.rejected_total() > 100 && stats.duplicates > 20, "{stats:?}");
    assert!(env.count("SELECT count(DISTINCT client_id) FROM message").await >= 6, "load spread over the tenants");

    let out = producers(&env, &["verify", "--manifest", &manifest, "--json"]);
    assert!(out.status.success(), "verify passes");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64(), report["misclassified"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(report["dead_lettered"].as_u64(), Some(0));
    assert!(report["expected_rejected"].as_u64().unwrap() > 100);

    // Lose one stored row by hand: verify must notice exactly that one.
    let conn = env.store.pool().get().await.unwrap();
    conn.execute("DELETE FROM message WHERE ctid = (SELECT ctid FROM message LIMIT 1)", &[]).await.unwrap();
    let out = producers(&env, &["verify", "--manifest", &manifest, "--json"]);
    assert!(!out.status.success(), "verify fails");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["lost"].as_u64(), report["duplicated"].as_u64()), (Some(1), Some(0)), "{report}");

    // Store a rejected event as if it had been accepted: misclassified and duplicated are caught too.
    conn.execute(
        "INSERT INTO message (client_id, event_id, event_type, version, payload, received_at, sqs_message_id)
         SELECT client_id, event_id, 'user-app', 1, '\"x\"', now(), 'forged' FROM rejected_message
         WHERE reason = 'schema_violation' AND event_id IS NOT NULL LIMIT 1",
        &[],
    )
    .await
    .unwrap();
    let out = producers(&env, &["verify", "--manifest", &manifest, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!((report["lost"].as_u64(), report["duplicated"].as_u64()), (Some(1), Some(1)), "{report}");

    // A stored payload changed, and a row no manifest line explains, sent within the run.
    conn.execute(
        "UPDATE message SET payload = '{\"altered\": true}' WHERE ctid = (SELECT ctid FROM message WHERE sent_at IS NOT NULL LIMIT 1)",
        &[],
    )
    .await
    .unwrap();
    conn.execute(
        "INSERT INTO message (client_id, event_id, event_type, version, payload, sent_at, received_at, sqs_message_id)
         SELECT 'client-1', 'stray', 'user-app', 1, '\"x\"', max(sent_at), now(), 'stray' FROM message",
        &[],
    )
    .await
    .unwrap();
    let out = producers(&env, &["verify", "--manifest", &manifest, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["altered"].as_u64(), report["unexplained"].as_u64()), (Some(1), Some(1)), "{report}");

    // An empty manifest proves nothing: verify refuses it.
    let empty = format!("{}/empty.jsonl", tempdir());
    std::fs::write(&empty, "").unwrap();
    let out = producers(&env, &["verify", "--manifest", &empty]);
    assert!(!out.status.success(), "verify passed an empty manifest");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to verify"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mode_sends_the_original_messages_and_all_are_stored() {
    let env = TestEnv::new().await;
    let running = env.start(settings()).await;
    let dir = tempdir();
    let manifest = format!("{dir}/legacy.jsonl");
    let out = producers(&env, &["--legacy", "--count", "30", "--manifest", &manifest, "--quiet"]);
    assert!(out.status.success());
    eventually("queue drained", Duration::from_secs(30), || async { env.depth().await == (0, 0) }).await;
    running.stop().await;
    assert_eq!(env.count("SELECT count(*) FROM message WHERE version = 1").await, 30);
    assert_eq!(
        env.count("SELECT count(DISTINCT (client_id, event_type)) FROM message").await,
        3,
        "monitor-app/client-1, transaction-app/client-2, user-app/client-3"
    );
    let out = producers(&env, &["verify", "--manifest", &manifest]);
    assert!(out.status.success());
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("ep-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}
