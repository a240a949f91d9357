//! The README's tour as a newcomer runs it: the Python example, run twice in a row
//! against a real server, gets its ack and its message both times and never waits
//! forever (a fixed idempotency key made the second run hang on a duplicate ack).
//! The license files are the ones Cargo.toml names.

use crate::support::TestServer;
use std::time::Duration;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_example_runs_twice_without_hanging() {
    let readme = readme();
    let start = readme.find("```python\n").expect("a Python example") + "```python\n".len();
    let script = &readme[start..start + readme[start..].find("```").unwrap()];
    assert!(script.contains("wait_for"), "every recv has a timeout");

    let server = TestServer::start().await;
    let script = script.replace(
        "ws://127.0.0.1:8080/ws",
        &format!("ws://{}/ws", server.addr()),
    );
    let python = std::env::var("PYTHON_FOR_TESTS").unwrap_or_else(|_| "python3".into());
    for run in 1..=2 {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&python)
                .arg("-c")
                .arg(&script)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the example ends")
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs websockets)"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("'type': 'ack'") && stdout.contains("'duplicate': False"),
            "run {run}:\n{stdout}"
        );
        assert!(stdout.contains("'type': 'message'"), "run {run}:\n{stdout}");
    }
    server.stop().await;
}

#[test]
fn the_license_files_are_the_ones_cargo_toml_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    let mit = std::fs::read_to_string(format!("{root}/LICENSE-MIT")).expect("LICENSE-MIT");
    assert!(mit.starts_with("MIT License") && mit.contains("WITHOUT WARRANTY"));
    let apache = std::fs::read_to_string(format!("{root}/LICENSE-APACHE")).expect("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(readme().contains("LICENSE-MIT") && readme().contains("LICENSE-APACHE"));
}
