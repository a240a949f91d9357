//! A scenario pointed at a server that is not there ends at once with exit status 2 and
//! a message naming the URL, instead of its users retrying until the deadline.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_dead_target_exits_2_within_seconds_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let dir = std::env::temp_dir().join(format!("roomcast-load-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("dead.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"dead\"\ntargets = [\"{url}\"]\nusers = 10\nduration_secs = 60\n\
             [rooms]\ncount = 2\nper_user = 1\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .arg("run")
        .arg(&scenario)
        .arg("--report-dir")
        .arg(dir.join("report"))
        .arg("--quiet")
        .output()
        .expect("roomcast-load runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {url}")) && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}
