//! Shared by the benchmarks: release-built server processes on loopback ports, and
//! readings of their memory and CPU time from /proc.
#![allow(dead_code)] // each benchmark uses a different subset

use roomcast::client::Connection;
use roomcast::protocol::{Encoding, ServerFrame};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A number from the environment, or a default.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running `roomcast` process.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Its listening address.
    pub addr: String,
    /// Its pid.
    pub pid: u32,
}

impl ServerProcess {
    /// Starts the benchmark-built binary with extra environment; waits until it listens.
    pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command
            .env("ROOMCAST_LISTEN", "127.0.0.1:0")
            .env("ROOMCAST_LOG__FORMAT", "json")
            .env("ROOMCAST_LOG__LEVEL", "warn,roomcast::server=info")
            .env_remove("RUST_LOG")
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("server binary starts");
        let pid = child.id().expect("running");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next_line().await.unwrap().expect("server listens");
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if value["message"] == "roomcast listening" {
                break value["addr"].as_str().unwrap().to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess { child, addr, pid }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// User and system CPU time so far, in microseconds.
    pub fn cpu_micros(&self) -> (u64, u64) {
        cpu_micros(self.pid)
    }
}

/// User and system CPU time of a process, in microseconds.
pub fn cpu_micros(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Fields after the command name start at 3 (state); utime is 14, stime 15.
    let ticks = |i: usize| fields[i - 3].parse::<u64>().unwrap();
    let hz = 100; // USER_HZ on Linux
    (ticks(14) * 1_000_000 / hz, ticks(15) * 1_000_000 / hz)
}

/// Opens a connection and reads its `welcome`.
pub async fn connect(url: &str) -> Connection {
    let mut conn = Connection::connect(url, Some(Encoding::MsgPack))
        .await
        .expect("connects");
    match conn.next_frame(Duration::from_secs(30)).await.unwrap() {
        ServerFrame::Welcome { .. } => conn,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Waits until `GET /readyz` answers 200.
pub async fn wait_ready(addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..600 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(request.as_bytes()).await;
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response).await;
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never became ready");
}
