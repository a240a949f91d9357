//! Bytes on the wire and the CPU they cost: deltas (`delta: "fossil"`) against whole
//! messages, and compression of 100 B and 10 KiB JSON payloads.
//!
//! Run with `cargo bench --bench wire` (release build of the server binary). Options, as
//! environment variables: `BENCH_EDITS` (default 200, the number of field edits of the
//! issue object), `BENCH_SUBSCRIBERS` (1000, the room size used to spread a shared
//! compression over its deliveries).
//!
//! 1. Deltas: one server; four subscribers of one room (JSON and MessagePack, each with
//!    and without `delta`) receive an issue object edited field by field; the payload
//!    bytes of every `message` frame they receive are summed, plus the WebSocket frame
//!    header (2 bytes below 126, 4 below 64 KiB). The delta subscribers' values are
//!    rebuilt and checked against the whole ones.
//! 2. Compression (in this process, one core): a JSON `message` frame of each size,
//!    DEFLATE (miniz_oxide, levels 1 and 6) and LZ4 (lz4_flex): size, and CPU per
//!    compress and per decompress. Per delivery, a compression made once per room
//!    message and shared costs compress / subscribers; permessage-deflate compresses per
//!    connection, so it costs a whole compress per delivery.
//! 3. Broker envelopes: the same payloads as MessagePack bodies, DEFLATE level 1.
//! 4. Compressed subscriptions, end to end: one server; `BENCH_COMPRESS_SUBSCRIBERS`
//!    (default 200) JSON subscribers of one room, with and without `compress:
//!    "deflate"` (the server's default threshold, 1 KiB), receive `BENCH_MESSAGES` (200)
//!    publications of each payload; bytes on the wire per delivery, server CPU (from
//!    /proc, user + system) per delivery, and the client's inflate per message.

mod common;

use common::{ServerProcess, env_or};
use roomcast::client::Connection;
use roomcast::protocol::{
    ClientFrame, DeltaFormat, Encoded, Encoding, MessageFrameRef, ServerFrame, fossil,
};
use roomcast::protocol::{CompressFormat, compress};
use roomcast::stream::Epoch;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    deltas().await;
    compression();
    compressed_deliveries().await;
}

/// An issue as the tracker broadcasts it, and its successive edits, one field at a time.
fn issue_edits(count: usize) -> Vec<Value> {
    let mut issue = json!({
        "id": 1234,
        "project_id": 42,
        "title": "Login page shows a blank screen on Safari 17 after the CSP change",
        "description": "Steps to reproduce: open /login in Safari 17.2 on macOS 14. The page stays white; the console shows a Content-Security-Policy violation for the inline bootstrap script. Chrome and Firefox are fine. Started with the deploy of 2026-12-01 (the nonce-based CSP). Expected: the login form renders. Workaround: none for users; disabling the CSP header on staging makes it render.",
        "status": "open",
        "priority": "high",
        "assignee": "maria",
        "reporter": "jonas",
        "labels": ["bug", "frontend", "safari"],
        "estimate_hours": 3,
        "comments": 4,
        "version": 1,
        "created_at": "2026-12-01T09:12:44Z",
        "updated_at": "2026-12-06T10:00:00Z",
        "updated_by": "jonas"
    });
    let statuses = ["open", "in_progress", "in_review", "done"];
    let priorities = ["low", "medium", "high", "urgent"];
    let people = ["maria", "jonas", "aiko", "samir", "lena"];
    let mut edits = Vec::with_capacity(count);
    for i in 0..count {
        let field = i % 6;
        match field {
            0 => issue["status"] = json!(statuses[(i / 6) % statuses.len()]),
            1 => issue["priority"] = json!(priorities[(i / 6) % priorities.len()]),
            2 => issue["assignee"] = json!(people[(i / 6) % people.len()]),
            3 => issue["comments"] = json!(4 + i / 6),
            4 => issue["estimate_hours"] = json!(1 + (i * 7) % 13),
            _ => {
                let title = format!(
                    "Login page shows a blank screen on Safari 17 after the CSP change (rev {})",
                    i / 6
                );
                issue["title"] = json!(title);
            }
        }
        issue["version"] = json!(i + 2);
        issue["updated_at"] = json!(format!("2026-12-06T10:{:02}:{:02}Z", (i / 60) % 60, i % 60));
        issue["updated_by"] = json!(people[i % people.len()]);
        edits.push(issue.clone());
    }
    edits
}

/// Payload plus WebSocket frame header, for a server-to-client (unmasked) frame.
fn wire_bytes(frame: &Encoded) -> usize {
    let len = frame.as_bytes().len();
    len + match len {
        0..126 => 2,
        126..65536 => 4,
        _ => 10,
    }
}

async fn connect(url: &str, encoding: Encoding) -> Connection {
    let mut conn = Connection::connect(url, Some(encoding)).await.unwrap();
    match conn.next_frame(WAIT).await.unwrap() {
        ServerFrame::Welcome { .. } => conn,
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn deltas() {
    let edits = issue_edits(env_or("BENCH_EDITS", 200) as usize);
    let server = ServerProcess::start(&[]).await;
    let url = server.url();
    let mut subscribers = Vec::new();
    for encoding in Encoding::ALL {
        for delta in [None, Some(DeltaFormat::Fossil)] {
            let mut conn = connect(&url, encoding).await;
            conn.send(&ClientFrame::Subscribe {
                id: Some(1),
                room: "issue:1234".into(),
                since: None,
                presence: false,
                info: None,
                delta,
                compress: None,
            })
            .await
            .unwrap();
            match conn.next_frame(WAIT).await.unwrap() {
                ServerFrame::Subscribed { .. } => {}
                other => panic!("expected subscribed, got {other:?}"),
            }
            subscribers.push((encoding, delta, conn));
        }
    }
    let mut publisher = connect(&url, Encoding::MsgPack).await;
    for (i, data) in edits.iter().enumerate() {
        publisher
            .send(&ClientFrame::Publish {
                id: Some(i as u64),
                room: "issue:1234".into(),
                data: data.clone(),
                key: None,
            })
            .await
            .unwrap();
        match publisher.next_frame(WAIT).await.unwrap() {
            ServerFrame::Ack { .. } => {}
            other => panic!("expected ack, got {other:?}"),
        }
    }
    println!(
        "## Deltas: an issue object edited field by field, {} edits",
        edits.len()
    );
    println!();
    println!("| encoding | delta | message bytes on the wire | per message | deltas sent |");
    println!("|---|---|---|---|---|");
    let mut whole = [0usize; 2];
    for (encoding, delta, conn) in &mut subscribers {
        let (mut bytes, mut deltas) = (0, 0);
        let mut base = String::new();
        for expected in &edits {
            let raw = conn.next_raw(WAIT).await.unwrap();
            bytes += wire_bytes(&raw);
            let ServerFrame::Message {
                data,
                delta: is_delta,
                ..
            } = encoding.decode_server(&raw).unwrap()
            else {
                panic!("expected a message")
            };
            let value = match (is_delta, data) {
                (None, data) => data,
                (Some(is_delta), Value::String(text)) => {
                    let text = if is_delta {
                        deltas += 1;
                        let out = fossil::apply(base.as_bytes(), text.as_bytes(), 1 << 20);
                        String::from_utf8(out.unwrap()).unwrap()
                    } else {
                        text
                    };
                    base = text;
                    serde_json::from_str(&base).unwrap()
                }
                (_, other) => panic!("a delta message with non-text data {other}"),
            };
            assert_eq!(&value, expected, "rebuilt value differs");
        }
        if delta.is_none() {
            whole[encoding.index()] = bytes;
        }
        let name = delta.map_or("—", DeltaFormat::name);
        let saved = if delta.is_some() {
            let whole = whole[encoding.index()] as f64;
            format!(" ({:.0}% less)", 100.0 * (whole - bytes as f64) / whole)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {}{} | {:.0} | {} |",
            encoding.name(),
            name,
            bytes,
            saved,
            bytes as f64 / edits.len() as f64,
            deltas
        );
    }
    println!();
    // The server makes a delta once per publication (shared by every delta subscriber);
    // each client applies it once.
    let texts: Vec<String> = edits.iter().map(|e| e.to_string()).collect();
    let pairs: Vec<(&[u8], &[u8], Vec<u8>)> = texts
        .windows(2)
        .map(|w| {
            let delta = fossil::create(w[0].as_bytes(), w[1].as_bytes());
            (w[0].as_bytes(), w[1].as_bytes(), delta)
        })
        .collect();
    let mut i = 0;
    let create = micros_per_call(|| {
        let (base, target, _) = &pairs[i % pairs.len()];
        std::hint::black_box(fossil::create(base, target));
        i += 1;
    });
    let apply = micros_per_call(|| {
        let (base, _, delta) = &pairs[i % pairs.len()];
        std::hint::black_box(fossil::apply(base, delta, 1 << 20).unwrap());
        i += 1;
    });
    println!(
        "Fossil delta of the ~{} B issue text (one core): create {create:.2} µs per publication, apply {apply:.2} µs per client.",
        texts[0].len()
    );
    println!();
}

/// CPU time of one call of `f`, in microseconds (averaged over ≥ 200 ms).
fn micros_per_call(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_millis(200) {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

/// JSON payloads of about 100 B and 10 KiB.
fn payloads() -> Vec<(&'static str, Value)> {
    let small = json!({"id": 1234, "status": "in_review", "assignee": "maria", "version": 17, "by": "jonas"});
    let issues = issue_edits(40);
    let list: Vec<Value> = issues
        .iter()
        .enumerate()
        .map(|(i, issue)| {
            json!({
                "id": 1000 + i,
                "title": issue["title"],
                "status": issue["status"],
                "priority": issue["priority"],
                "assignee": issue["assignee"],
                "labels": issue["labels"],
                "comments": issue["comments"],
                "updated_at": issue["updated_at"],
                "summary": &issue["description"].as_str().unwrap()[..(60 + (i * 37) % 120)],
            })
        })
        .collect();
    let mut large = json!({"project_id": 42, "board": "sprint 48", "issues": list});
    while serde_json::to_vec(&large).unwrap().len() > 10 * 1024 {
        large["issues"].as_array_mut().unwrap().pop();
    }
    vec![("100 B", small), ("10 KiB", large)]
}

fn compression() {
    let subscribers = env_or("BENCH_SUBSCRIBERS", 1000) as f64;
    let epoch = Epoch::new("e1");
    println!("## Compression of a JSON `message` frame (one core, in process)");
    println!();
    println!(
        "| payload | frame bytes | method | compressed bytes | compress µs | decompress µs | shared, µs per delivery ({subscribers} subscribers) | per connection (permessage-deflate), µs per delivery |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, data) in payloads() {
        let frame = Encoding::Json.encode(&MessageFrameRef {
            kind: "message",
            room: "project:42",
            epoch: &epoch,
            seq: 1234,
            time: 1_765_000_000_000,
            data: &data,
            delta: None,
            compressed: false,
        });
        let plain = frame.as_bytes().to_vec();
        type Method = (
            &'static str,
            Box<dyn Fn(&[u8]) -> Vec<u8>>,
            Box<dyn Fn(&[u8]) -> Vec<u8>>,
        );
        let methods: Vec<Method> = vec![
            (
                "DEFLATE level 1",
                Box::new(|b| miniz_oxide::deflate::compress_to_vec(b, 1)),
                Box::new(|b| miniz_oxide::inflate::decompress_to_vec(b).unwrap()),
            ),
            (
                "DEFLATE level 6",
                Box::new(|b| miniz_oxide::deflate::compress_to_vec(b, 6)),
                Box::new(|b| miniz_oxide::inflate::decompress_to_vec(b).unwrap()),
            ),
            (
                "LZ4",
                Box::new(lz4_flex::block::compress_prepend_size),
                Box::new(|b| lz4_flex::block::decompress_size_prepended(b).unwrap()),
            ),
        ];
        for (method, compress, decompress) in &methods {
            let packed = compress(&plain);
            assert_eq!(decompress(&packed), plain);
            let c = micros_per_call(|| {
                std::hint::black_box(compress(std::hint::black_box(&plain)));
            });
            let d = micros_per_call(|| {
                std::hint::black_box(decompress(std::hint::black_box(&packed)));
            });
            println!(
                "| {name} | {} | {method} | {} ({:.0}%) | {c:.2} | {d:.2} | {:.4} | {c:.2} |",
                plain.len(),
                packed.len(),
                100.0 * packed.len() as f64 / plain.len() as f64,
                c / subscribers,
            );
        }
    }
    println!();
    println!("## Broker envelopes: the MessagePack body, DEFLATE level 1");
    println!();
    println!("| payload | body bytes | compressed bytes | compress µs | inflate µs |");
    println!("|---|---|---|---|---|");
    for (name, data) in payloads() {
        let body = rmp_serde::to_vec_named(&json!({"id": 7u64, "data": data})).unwrap();
        let packed = miniz_oxide::deflate::compress_to_vec(&body, 1);
        let c = micros_per_call(|| {
            std::hint::black_box(miniz_oxide::deflate::compress_to_vec(&body, 1));
        });
        let d = micros_per_call(|| {
            std::hint::black_box(
                miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, body.len()).unwrap(),
            );
        });
        println!(
            "| {name} | {} | {} ({:.0}%) | {c:.2} | {d:.2} |",
            body.len(),
            packed.len() + 6,
            100.0 * (packed.len() + 6) as f64 / body.len() as f64
        );
    }
}

/// Section 4: what compressed subscriptions cost and save, end to end.
async fn compressed_deliveries() {
    let subscribers = env_or("BENCH_COMPRESS_SUBSCRIBERS", 200) as usize;
    let messages = env_or("BENCH_MESSAGES", 200) as usize;
    println!();
    println!(
        "## Compressed subscriptions: {subscribers} JSON subscribers, {messages} messages, server threshold 1 KiB"
    );
    println!();
    println!(
        "| payload | compress | wire bytes per delivery | server CPU µs per delivery | client inflate µs per message |"
    );
    println!("|---|---|---|---|---|");
    let server = ServerProcess::start(&[]).await;
    let url = server.url();
    for (name, data) in payloads() {
        for asked in [None, Some(CompressFormat::Deflate)] {
            let room = format!("bench:{}:{}", name.replace(' ', ""), asked.is_some());
            let (bytes, cpu) =
                deliver_to_many(&server, &url, &room, &data, asked, (subscribers, messages)).await;
            let deliveries = (subscribers * messages) as f64;
            let json = serde_json::to_string(&data).unwrap();
            let inflate = match compress::pack(&json, 1024) {
                Some(packed) if asked.is_some() => format!(
                    "{:.2}",
                    micros_per_call(|| {
                        std::hint::black_box(compress::unpack(&packed, 1 << 20).unwrap());
                    })
                ),
                _ => "—".to_owned(),
            };
            println!(
                "| {name} | {} | {:.0} | {:.2} | {inflate} |",
                asked.map_or("—", CompressFormat::name),
                bytes as f64 / deliveries,
                cpu as f64 / deliveries,
            );
        }
    }
}

/// Subscribes `counts.0` JSON clients to `room` (with `compress` when asked), publishes
/// `data` `counts.1` times, and waits until every subscriber has every message (each
/// checked to be the value published). Returns the message bytes on the wire and the
/// server's CPU time (µs) from the first publish to the last delivery.
async fn deliver_to_many(
    server: &ServerProcess,
    url: &str,
    room: &str,
    data: &Value,
    compress: Option<CompressFormat>,
    (subscribers, messages): (usize, usize),
) -> (usize, u64) {
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut conn = connect(url, Encoding::Json).await;
        conn.send(&ClientFrame::Subscribe {
            id: Some(1),
            room: room.into(),
            since: None,
            presence: false,
            info: None,
            delta: None,
            compress,
        })
        .await
        .unwrap();
        match conn.next_frame(WAIT).await.unwrap() {
            ServerFrame::Subscribed { .. } => {}
            other => panic!("expected subscribed, got {other:?}"),
        }
        let expected = data.clone();
        readers.push(tokio::spawn(async move {
            let mut bytes = 0;
            for _ in 0..messages {
                let frame = conn.next_raw(WAIT).await.unwrap();
                bytes += wire_bytes(&frame);
                let ServerFrame::Message {
                    data, compressed, ..
                } = Encoding::Json.decode_server(&frame).unwrap()
                else {
                    panic!("a message")
                };
                let value = match (compressed, data) {
                    (true, Value::String(packed)) => {
                        serde_json::from_str(&compress::unpack(&packed, 1 << 20).unwrap()).unwrap()
                    }
                    (false, value) => value,
                    (true, other) => panic!("compressed data that is not text: {other}"),
                };
                assert_eq!(value, expected);
            }
            bytes
        }));
    }
    let mut publisher = connect(url, Encoding::Json).await;
    let (user, system) = server.cpu_micros();
    for i in 0..messages {
        publisher
            .send(&ClientFrame::Publish {
                id: Some(i as u64),
                room: room.into(),
                data: data.clone(),
                key: None,
            })
            .await
            .unwrap();
    }
    let mut bytes = 0;
    for reader in readers {
        bytes += reader.await.unwrap();
    }
    let (user_after, system_after) = server.cpu_micros();
    (bytes, user_after + system_after - user - system)
}
