//! roomcast as a separate process: started from the built binary on an ephemeral port,
//! signalled or killed by tests, and always killed when the test ends.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running `roomcast` process.
pub struct RoomcastProcess {
    child: Child,
    /// The bound address, read from the start-up log line.
    pub addr: String,
    logs: mpsc::UnboundedReceiver<String>,
}

impl RoomcastProcess {
    /// Starts the binary with extra environment variables; waits until it listens.
    pub async fn start(env: &[(&str, &str)]) -> RoomcastProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command
            .env("ROOMCAST_LISTEN", "127.0.0.1:0")
            .env("ROOMCAST_LOG__FORMAT", "json")
            .env("ROOMCAST_LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .env("ROOMCAST_DATABASE_URL", super::db::sqlite_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("roomcast binary starts");
        let (tx, mut logs) = mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = logs.recv().await {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && value["message"] == "roomcast listening"
                {
                    return value["addr"].as_str().unwrap().to_owned();
                }
            }
            panic!("roomcast exited before listening");
        })
        .await
        .expect("roomcast starts listening");
        RoomcastProcess { child, addr, logs }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits until a log line contains `needle`; returns the line.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        tokio::time::timeout(timeout, async {
            while let Some(line) = self.logs.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("roomcast exited before logging {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?} within {timeout:?}"))
    }

    /// The log lines received so far and not read yet.
    pub fn drain_logs(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.logs.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("process exits in time")
            .expect("wait works")
            .code()
    }
}

impl Drop for RoomcastProcess {
    /// Ends a process the test left running with two SIGTERMs (a drain, then "exit at
    /// once"), so that it exits normally — coverage profiles and logs are written at
    /// exit — and only then, if it is still there after a second, with SIGKILL
    /// (`kill_on_drop`).
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let Some(pid) = self.child.id() else {
            return;
        };
        let terminate = || {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        };
        terminate();
        std::thread::sleep(Duration::from_millis(20));
        terminate();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs the binary with `args` and `env` to completion; returns (exit code, stderr).
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("ROOMCAST_DATABASE_URL", super::db::sqlite_url())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("exits in time")
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
