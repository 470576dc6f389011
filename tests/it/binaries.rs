//! The `processor` binary as users run it: settings errors, and SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{child_env, eventually, valid_event, TestEnv};

fn processor() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_processor"));
    // Run outside the repository so no `.env` is picked up.
    cmd.current_dir(std::env::temp_dir()).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn a_bad_setting_stops_startup_naming_the_variable_and_what_it_expected() {
    let out =
        processor().env("DATABASE_URL", "postgres://x@127.0.0.1/x").env("PROCESSOR_POLLERS", "many").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PROCESSOR_POLLERS") && stderr.contains("expected a whole number >= 1"), "{stderr}");

    let out = processor().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let out = processor().env("DATABASE_URL", "mysql://nope").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("DATABASE_URL: expected postgres://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_processor_cleanly_with_exit_code_0() {
    let env = TestEnv::new().await;
    let bodies: Vec<String> = (0..200).map(|i| valid_event(&format!("t-{i}"))).collect();
    env.send(&bodies).await;
    let mut child = processor()
        .envs(child_env(&env))
        .env("PROCESSOR_WAIT_TIME_SECS", "20")
        .env("PROCESSOR_SHUTDOWN_TIMEOUT_SECS", "10")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("all stored", Duration::from_secs(30), || async {
        env.count("SELECT count(*) FROM message").await == 200
    })
    .await;

    // The long poll in progress must not delay the exit.
    let started = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(10), "exited in {:?}", started.elapsed());
    assert_eq!(env.depth().await, (0, 0));
}
