//! The `roomcast` binary as users run it: configuration from the environment, refusal of
//! bad configuration, the runtime's threads, and shutdown on SIGTERM.

use crate::support::process::{RoomcastProcess, run_to_exit};
use crate::support::{TestClient, http_get};
use roomcast::protocol::{CloseCode, Encoding, ServerFrame};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_shuts_down_on_sigterm() {
    let mut process = RoomcastProcess::start(&[("ROOMCAST_NODE_ID", "proc-1")]).await;
    let health = http_get(&process.addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"node\":\"proc-1\""), "{health}");

    let mut client = TestClient::connect(&process.url(), Encoding::MsgPack).await;
    client.subscribe("p", None).await;
    client.publish("p", json!("hi"), None).await;

    // SIGTERM drains: a reconnect hint, then close 1012, then a clean exit.
    process.signal("TERM");
    loop {
        match client.next().await {
            ServerFrame::Reconnect { reason, hint } => {
                assert_eq!(reason, "draining");
                assert!(hint.is_empty(), "a lone instance names no other: {hint:?}");
                break;
            }
            ServerFrame::Message { .. } | ServerFrame::Ack { .. } => continue,
            other => panic!("expected a reconnect hint, got {other:?}"),
        }
    }
    assert_eq!(
        client.closed().await,
        Some(CloseCode::ServiceRestart.number())
    );
    assert_eq!(process.wait(Duration::from_secs(15)).await, Some(0));
}

/// Threads of process `pid` named like the runtime's workers.
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "tokio-rt-worker")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_worker_threads_sets_the_number_of_workers() {
    for threads in [1, 3] {
        let value = threads.to_string();
        let process = RoomcastProcess::start(&[("ROOMCAST_RUNTIME__WORKER_THREADS", &value)]).await;
        assert_eq!(worker_threads(process.pid()), threads);
    }
    let (code, stderr) = run_to_exit(&[], &[("ROOMCAST_RUNTIME__WORKER_THREADS", "5000")]).await;
    assert_eq!(code, Some(64));
    assert!(stderr.contains("runtime.worker_threads"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_the_start_and_names_the_key() {
    let (code, stderr) = run_to_exit(&[], &[("ROOMCAST_CONNECTION__MAX_ROOMS", "lots")]).await;
    assert_eq!(code, Some(64));
    assert!(stderr.contains("connection.max_rooms"), "{stderr}");

    let (code, stderr) = run_to_exit(&[], &[("ROOMCAST_HISTORY__SIZ", "1")]).await;
    assert_eq!(code, Some(64));
    assert!(stderr.contains("history.siz"), "{stderr}");

    let path = std::env::temp_dir().join(format!("roomcast-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[rooms]\nlinger_ms = \"soon\"\n").unwrap();
    let (code, stderr) = run_to_exit(&["--config", path.to_str().unwrap()], &[]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("rooms.linger_ms"), "{stderr}");

    let (code, _) = run_to_exit(&["--check-config"], &[]).await;
    assert_eq!(code, Some(0), "the defaults are valid");
}
