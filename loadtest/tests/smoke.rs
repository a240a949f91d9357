//! The load tester end to end: the shipped smoke scenario (a few hundred users on two
//! instances + Redis, the publishing instance killed with SIGKILL mid-run) must pass on
//! the tool's own exit status, and a run that misses a threshold must fail it.
//!
//! The scenario starts the `roomcast` binary next to `roomcast-load` (both are built by
//! `cargo test --workspace`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

fn run(scenario: &Path, report_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .arg("run")
        .arg(scenario)
        .arg("--report-dir")
        .arg(report_dir)
        .arg("--quiet")
        .output()
        .expect("roomcast-load runs")
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_failover_under_load_loses_nothing() {
    let dir = scratch("smoke");
    let output = run(&scenario("smoke-failover.toml"), &dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = report(&dir);
    assert_eq!(report["verdict"]["passed"], true);
    for fault in ["missing", "duplicated", "out_of_order", "foreign_epoch"] {
        assert_eq!(report["accounting"][fault], 0, "{fault}\n{stdout}");
    }
    let received = report["accounting"]["received"].as_u64().unwrap();
    let acked = report["publishes"]["acked"].as_u64().unwrap();
    assert!(acked > 0 && received >= acked, "{stdout}");
    let per_call = report["publishes_per_redis_call"].as_f64();
    assert!(
        per_call.is_some_and(|per_call| per_call > 0.5),
        "publishes per Redis call: {per_call:?}\n{stdout}"
    );
    assert!(
        report["resume_ms"]["count"].as_u64().unwrap() > 0,
        "users of the killed instance resumed elsewhere\n{stdout}"
    );
    assert_eq!(report["actions"][0]["exit_code"], 0);
    // Each instance's runtime threads are named in the report (Redis has none).
    for server in report["servers"].as_array().unwrap() {
        let threads = &server["runtime_threads"];
        if server["name"].as_str().unwrap().starts_with("instance") {
            assert!(threads.as_u64().is_some_and(|n| n >= 1), "{server}");
        } else {
            assert!(threads.is_null(), "{server}");
        }
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("kill -9 instance-0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missed_threshold_fails_the_run() {
    let dir = scratch("threshold");
    let text = std::fs::read_to_string(scenario("smoke-failover.toml"))
        .unwrap()
        .replace("users = 300", "users = 20")
        .replace("duration_secs = 5", "duration_secs = 2")
        .replace("resume_p99_ms = 5000", "p99_ms = 0.001");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strict.toml");
    std::fs::write(&path, text).unwrap();
    let output = run(&path, &dir);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report = report(&dir);
    let failures = report["verdict"]["failures"].to_string();
    assert!(failures.contains("latency p99"), "{failures}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scenario_that_cannot_run_exits_2() {
    let dir = scratch("unusable");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "name = \"bad\"\nusers = 0\n").unwrap();
    let output = run(&path, &dir);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}
