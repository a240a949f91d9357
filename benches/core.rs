//! Single-instance benchmark: idle memory per connection, and fan-out throughput and
//! server CPU per delivery for one room with many subscribers.
//!
//! Run with `cargo bench --bench core` (release build of the server binary). Options, as
//! environment variables: `BENCH_IDLE_CONNECTIONS` (default 10000),
//! `BENCH_FANOUT_SUBSCRIBERS` (1000), `BENCH_FANOUT_MESSAGES` (2000),
//! `BENCH_PAYLOAD_BYTES` (100). The server runs as a separate process on a loopback
//! port; its memory and CPU time are read from /proc, so the clients' own cost (in this
//! process) is not counted.

mod common;

use common::{ServerProcess, connect, env_or};
use futures_util::StreamExt;
use roomcast::client::Connection;
use roomcast::protocol::{ClientFrame, ServerFrame};
use serde_json::json;
use std::time::{Duration, Instant};

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
    let before = server.rss_kib();
    let connections = connect_many(url, count).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per_connection = (after - before) as f64 / count as f64;
    println!("idle connections:           {count}");
    println!("server RSS before / after:  {before} KiB / {after} KiB");
    println!("idle memory per connection: {per_connection:.2} KiB");
    drop(connections);
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// How the benchmark publishes.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// Pipelined `publish` frames on one WebSocket.
    WebSocket,
    /// `POST /api/v1/publish`, one after the other on a keep-alive connection (these
    /// requests are traced when tracing is on).
    Http,
}

/// Fans messages out; returns server CPU per delivery in microseconds.
async fn fanout(server: &ServerProcess, url: &str, via: Via) -> f64 {
    let subscribers = env_or("BENCH_FANOUT_SUBSCRIBERS", 1_000);
    let messages = env_or("BENCH_FANOUT_MESSAGES", 2_000);
    let payload = "x".repeat(env_or("BENCH_PAYLOAD_BYTES", 100) as usize);
    let mut connections = connect_many(url, subscribers).await;
    for conn in &mut connections {
        conn.send(&ClientFrame::Subscribe {
            id: None,
            room: "fanout".into(),
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
    let mut http = match via {
        Via::Http => Some(http_client(&server.addr).await),
        Via::WebSocket => None,
    };
    let cpu_before = server.cpu_micros();
    let start = Instant::now();
    for n in 0..messages {
        let data = json!({"n": n, "pad": payload});
        match &mut http {
            // Publishes without waiting for each ack (the server answers them in order).
            None => publisher
                .send(&ClientFrame::Publish {
                    id: Some(n),
                    room: "fanout".into(),
                    data,
                    key: None,
                })
                .await
                .unwrap(),
            Some(sender) => {
                let body = json!({"room": "fanout", "data": data}).to_string();
                let request = hyper::Request::post("/api/v1/publish")
                    .header("host", &server.addr)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                sender.ready().await.expect("the connection stays open");
                let response = sender
                    .send_request(request)
                    .await
                    .expect("publish over HTTP");
                assert_eq!(response.status(), 200);
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
        }
    }
    let mut finished = start;
    for reader in readers {
        finished = finished.max(reader.await.unwrap());
    }
    let cpu_after = server.cpu_micros();
    let elapsed = finished - start;
    let deliveries = subscribers * messages;
    let user = cpu_after.0 - cpu_before.0;
    let system = cpu_after.1 - cpu_before.1;
    let via_name = if via == Via::Http {
        "HTTP"
    } else {
        "WebSocket"
    };
    println!(
        "fan-out ({via_name}):{:>width$}{subscribers} subscribers x {messages} messages",
        "",
        width = 15 - via_name.len()
    );
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
    (user + system) as f64 / deliveries as f64
}

/// A keep-alive HTTP/1.1 connection to `addr`.
async fn http_client(
    addr: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// An OTLP/HTTP endpoint that accepts and discards spans, for the tracing-on run.
async fn discarding_collector() -> String {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        ));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/v1/traces")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The bench publisher outpaces one socket on purpose; let queues absorb it. The
        // HTTP publisher is anonymous: lift the rate limits.
        let base = [
            ("ROOMCAST_CONNECTION__OUTBOUND_QUEUE", "100000"),
            ("ROOMCAST_HISTORY__SIZE", "200000"),
            ("ROOMCAST_RATE_LIMITS__USER_WRITES_PER_SECOND", "1000000"),
            ("ROOMCAST_RATE_LIMITS__USER_WRITE_BURST", "1000000"),
        ];
        let mut server = ServerProcess::start(&base).await;
        let url = server.url();
        idle_memory(&server, &url).await;
        println!("-- tracing off");
        let off = [fanout(&server, &url, Via::WebSocket).await, fanout(&server, &url, Via::Http).await];
        let _ = server.child.kill().await;

        // The same fan-outs with tracing exported over OTLP: HTTP publishes are traced
        // (at a production sampling ratio, then every one), WebSocket publishes are not.
        let endpoint = discarding_collector().await;
        for ratio in ["0.1", "1.0"] {
            let mut traced = base.to_vec();
            traced.push(("ROOMCAST_TRACING__OTLP_ENDPOINT", endpoint.as_str()));
            traced.push(("ROOMCAST_TRACING__SAMPLE_RATIO", ratio));
            let mut server = ServerProcess::start(&traced).await;
            let url = server.url();
            println!("-- tracing on, sample ratio {ratio}");
            let on = [fanout(&server, &url, Via::WebSocket).await, fanout(&server, &url, Via::Http).await];
            println!(
                "tracing overhead at {ratio}:    WebSocket publishes {:+.1}%, HTTP publishes {:+.1}% server CPU per delivery",
                (on[0] / off[0] - 1.0) * 100.0,
                (on[1] / off[1] - 1.0) * 100.0
            );
            let _ = server.child.kill().await;
        }
    });
}
