//! Single-instance benchmark: idle memory per connection, and fan-out throughput and
//! server CPU per delivery for one room with many subscribers.
//!
//! Run with `cargo bench --bench core` (release build of the server binary). Options, as
//! environment variables: `BENCH_IDLE_CONNECTIONS` (default 10000),
//! `BENCH_FANOUT_SUBSCRIBERS` (1000), `BENCH_FANOUT_MESSAGES` (2000),
//! `BENCH_PAYLOAD_BYTES` (100). The server runs as a separate process on a loopback
//! port; its memory and CPU time are read from /proc, so the clients' own cost (in this
//! process) is not counted.

use futures_util::StreamExt;
use roomcast::client::Connection;
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct ServerProcess {
    child: Child,
    addr: String,
    pid: u32,
}

async fn start_server() -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .env("ROOMCAST_LISTEN", "127.0.0.1:0")
        .env("ROOMCAST_LOG__FORMAT", "json")
        .env("ROOMCAST_LOG__LEVEL", "warn,roomcast::server=info")
        // The bench publisher outpaces one socket on purpose; let queues absorb it.
        .env("ROOMCAST_CONNECTION__OUTBOUND_QUEUE", "100000")
        .env("ROOMCAST_HISTORY__SIZE", "200000")
        .env_remove("RUST_LOG")
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
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

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// User and system CPU time of a process, in microseconds.
fn cpu_micros(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields[i - 3].parse::<u64>().unwrap();
    let hz = 100; // USER_HZ on Linux
    (ticks(14) * 1_000_000 / hz, ticks(15) * 1_000_000 / hz)
}

async fn connect(url: &str) -> Connection {
    let mut conn = Connection::connect(url, Some(Encoding::MsgPack))
        .await
        .expect("connects");
    match conn.next_frame(Duration::from_secs(30)).await.unwrap() {
        ServerFrame::Welcome { .. } => conn,
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn connect_many(url: &str, count: u64) -> Vec<Connection> {
    let connections = futures_util::stream::iter(0..count)
        .map(|_| connect(url))
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(connections.len() as u64, count);
    connections
}

async fn idle_memory(server: &ServerProcess, url: &str) {
    let count = env_or("BENCH_IDLE_CONNECTIONS", 10_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.pid);
    let connections = connect_many(url, count).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid);
    let per_connection = (after - before) as f64 / count as f64;
    println!("idle connections:           {count}");
    println!("server RSS before / after:  {before} KiB / {after} KiB");
    println!("idle memory per connection: {per_connection:.2} KiB");
    drop(connections);
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn fanout(server: &ServerProcess, url: &str) {
    let subscribers = env_or("BENCH_FANOUT_SUBSCRIBERS", 1_000);
    let messages = env_or("BENCH_FANOUT_MESSAGES", 2_000);
    let payload = "x".repeat(env_or("BENCH_PAYLOAD_BYTES", 100) as usize);
    let mut connections = connect_many(url, subscribers).await;
    for conn in &mut connections {
        conn.send(&ClientFrame::Subscribe {
            id: None,
            room: "fanout".into(),
            since: None,
        })
        .await
        .unwrap();
        match conn.next_frame(Duration::from_secs(30)).await.unwrap() {
            ServerFrame::Subscribed { .. } => {}
            other => panic!("expected subscribed, got {other:?}"),
        }
    }
    let readers: Vec<_> = connections
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut received = 0;
                while received < messages {
                    match conn.next_frame(Duration::from_secs(60)).await.unwrap() {
                        ServerFrame::Message { .. } => received += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Instant::now()
            })
        })
        .collect();

    let mut publisher = connect(url).await;
    let cpu_before = cpu_micros(server.pid);
    let start = Instant::now();
    // Publishes without waiting for each ack (the server answers them in order).
    for n in 0..messages {
        publisher
            .send(&ClientFrame::Publish {
                id: Some(n),
                room: "fanout".into(),
                data: json!({"n": n, "pad": payload}),
                key: None,
            })
            .await
            .unwrap();
    }
    let mut finished = start;
    for reader in readers {
        finished = finished.max(reader.await.unwrap());
    }
    let cpu_after = cpu_micros(server.pid);
    let elapsed = finished - start;
    let deliveries = subscribers * messages;
    let user = cpu_after.0 - cpu_before.0;
    let system = cpu_after.1 - cpu_before.1;
    println!("fan-out:                    {subscribers} subscribers x {messages} messages");
    println!("elapsed:                    {:.2} s", elapsed.as_secs_f64());
    println!(
        "deliveries per second:      {:.0}",
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server CPU per delivery:    {:.2} us (user {:.2} us, system {:.2} us)",
        (user + system) as f64 / deliveries as f64,
        user as f64 / deliveries as f64,
        system as f64 / deliveries as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut server = start_server().await;
        let url = format!("ws://{}/ws", server.addr);
        idle_memory(&server, &url).await;
        fanout(&server, &url).await;
        let _ = server.child.kill().await;
    });
}
