//! Two instances sharing one Redis: cross-instance publish-to-delivery latency,
//! deliveries per second, and what one publish costs Redis.
//!
//! Run with `cargo bench --bench cluster` (needs `redis-server` and `redis-cli` on the
//! PATH). Options, as environment variables: `BENCH_SUBSCRIBERS` (default 5000, half on
//! each instance), `BENCH_RATE` (messages per second in the latency phase, 10),
//! `BENCH_LATENCY_MESSAGES` (200), `BENCH_BURST_MESSAGES` (500). The publisher
//! connects to instance A; latency is measured from the publisher's send time (carried
//! in the message) to the subscriber's receive time, on one clock.

mod common;

use common::{ServerProcess, connect, env_or, wait_ready};
use hdrhistogram::Histogram;
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn start_redis() -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on the PATH");
    for _ in 0..100 {
        if redis_cli(port, &["PING"]).await == "PONG" {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}

async fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli on the PATH");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Calls per command since Redis started, from `INFO commandstats`.
async fn command_calls(port: u16) -> BTreeMap<String, u64> {
    redis_cli(port, &["INFO", "commandstats"])
        .await
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What one subscriber saw.
struct Seen {
    on_b: bool,
    latency: Histogram<u64>,
    burst_done: Instant,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let subscribers = env_or("BENCH_SUBSCRIBERS", 5000);
    let rate = env_or("BENCH_RATE", 10);
    let latency_messages = env_or("BENCH_LATENCY_MESSAGES", 200);
    let burst_messages = env_or("BENCH_BURST_MESSAGES", 500);

    let (_redis, port) = start_redis().await;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let env = [
        ("ROOMCAST_REDIS_URL", redis_url.as_str()),
        ("ROOMCAST_CONNECTION__OUTBOUND_QUEUE", "100000"),
    ];
    let a = ServerProcess::start(&env).await;
    let b = ServerProcess::start(&env).await;
    wait_ready(&a.addr).await;
    wait_ready(&b.addr).await;

    let mut readers = Vec::new();
    for i in 0..subscribers {
        let on_b = i % 2 == 1;
        let mut conn = connect(&if on_b { b.url() } else { a.url() }).await;
        conn.send(&ClientFrame::Subscribe {
            id: None,
            room: "bench".into(),
            since: None,
            presence: false,
            info: None,
            delta: None,
            compress: None,
        })
        .await
        .unwrap();
        match conn.next_frame(Duration::from_secs(30)).await.unwrap() {
            ServerFrame::Subscribed { .. } => {}
            other => panic!("expected subscribed, got {other:?}"),
        }
        let expected = latency_messages + burst_messages;
        // Readers only timestamp and keep the raw frames; decoding waits until the end,
        // so the load generator's own CPU does not inflate the latencies it measures.
        readers.push(tokio::spawn(async move {
            let mut raw = Vec::with_capacity(expected as usize);
            while (raw.len() as u64) < expected {
                let frame = conn.next_raw(Duration::from_secs(60)).await.unwrap();
                raw.push((now_micros(), frame));
            }
            let burst_done = Instant::now();
            let mut latency = Histogram::<u64>::new(3).unwrap();
            for (received, frame) in raw {
                let ServerFrame::Message { data, .. } =
                    Encoding::MsgPack.decode_server(&frame).unwrap()
                else {
                    panic!("unexpected frame");
                };
                if data["phase"] == "latency" {
                    let sent = data["t"].as_u64().unwrap();
                    latency.record(received.saturating_sub(sent)).unwrap();
                }
            }
            Seen {
                on_b,
                latency,
                burst_done,
            }
        }));
    }

    let mut publisher = connect(&a.url()).await;
    // Phase 1: a steady rate, each message stamped with its send time.
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for n in 0..latency_messages {
        tick.tick().await;
        publisher
            .send(&ClientFrame::Publish {
                id: Some(n),
                room: "bench".into(),
                data: json!({"phase": "latency", "t": now_micros()}),
                key: None,
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 2: as fast as acks allow (pipelined), counting Redis commands.
    let calls_before = command_calls(port).await;
    let cpu_before = [a.cpu_micros(), b.cpu_micros()];
    let own_before = common::cpu_micros(std::process::id());
    let start = Instant::now();
    for n in 0..burst_messages {
        publisher
            .send(&ClientFrame::Publish {
                id: Some(latency_messages + n),
                room: "bench".into(),
                data: json!({"phase": "burst", "n": n, "pad": "x".repeat(64)}),
                key: Some(format!("burst-{n}")),
            })
            .await
            .unwrap();
    }
    let mut cross = Histogram::<u64>::new(3).unwrap();
    let mut local = Histogram::<u64>::new(3).unwrap();
    let mut finished = start;
    for reader in readers {
        let seen = reader.await.unwrap();
        finished = finished.max(seen.burst_done);
        if seen.on_b {
            cross.add(&seen.latency).unwrap();
        } else {
            local.add(&seen.latency).unwrap();
        }
    }
    let elapsed = finished - start;
    let cpu_after = [a.cpu_micros(), b.cpu_micros()];
    let own_after = common::cpu_micros(std::process::id());
    let calls_after = command_calls(port).await;

    println!("2 instances + Redis, {subscribers} subscribers in one room (half on each)");
    for (label, histogram) in [
        ("cross-instance (publisher on A, subscriber on B)", &cross),
        ("same instance (publisher and subscriber on A)", &local),
    ] {
        println!(
            "latency {label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms at {rate} msg/s",
            histogram.value_at_quantile(0.50) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.max() as f64 / 1000.0
        );
    }
    let deliveries = subscribers * burst_messages;
    println!(
        "burst: {burst_messages} messages in {:.2} s: {:.0} deliveries/s",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    let user: u64 = (0..2).map(|i| cpu_after[i].0 - cpu_before[i].0).sum();
    let system: u64 = (0..2).map(|i| cpu_after[i].1 - cpu_before[i].1).sum();
    println!(
        "server CPU per delivery (both instances): {:.2} us (user {:.2} us, system {:.2} us)",
        (user + system) as f64 / deliveries as f64,
        user as f64 / deliveries as f64,
        system as f64 / deliveries as f64
    );
    let own = (own_after.0 + own_after.1) - (own_before.0 + own_before.1);
    println!(
        "load generator CPU during the burst: {:.0}% of one core",
        own as f64 / elapsed.as_micros() as f64 * 100.0
    );
    let mut total = 0;
    let mut breakdown = Vec::new();
    for (name, after) in &calls_after {
        let mut delta = after - calls_before.get(name).copied().unwrap_or(0);
        if name == "info" {
            delta -= 1; // one of the two INFO commandstats calls of this benchmark
        }
        if delta > 0 {
            total += delta;
            breakdown.push(format!(
                "{name} {:.2}",
                delta as f64 / burst_messages as f64
            ));
        }
    }
    println!(
        "Redis commands per publish (with an idempotency key): {:.2} ({}); round trips per publish: 1",
        total as f64 / burst_messages as f64,
        breakdown.join(", ")
    );
}
