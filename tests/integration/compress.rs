//! Subscriptions with `compress: "deflate"` over WebSocket: message data of at least
//! `connection.compress_above_bytes` arrives deflated (base64, `compressed: true`) when
//! that shrinks it, smaller data and other subscriptions arrive as before, subscribers
//! of one encoding get the same bytes, and the Rust client inflates it by itself.
//! (Over Server-Sent Events: `sse::sse_streams_compressed_deltas_and_resumes_with_them`;
//! compressed publishes and their bound: `bad_input`.)

use crate::support::{TestClient, TestServer};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::protocol::{
    ClientFrame, CompressFormat, DeltaFormat, Encoded, Encoding, ServerFrame, compress, fossil,
};
use serde_json::{Value, json};

/// A board of `n` issue summaries: about 260 bytes of JSON per issue.
pub fn board(n: usize, version: u64) -> Value {
    let issues: Vec<Value> = (0..n)
        .map(|i| {
            let status = ["open", "in_progress", "done"][i % 3];
            let assignee = ["maria", "jonas", "aiko"][(i + version as usize) % 3];
            json!({
                "id": 1000 + i,
                "title": format!("Issue {i}: the login page shows a blank screen after the CSP change"),
                "status": status,
                "assignee": assignee,
                "labels": ["frontend", "safari", "regression"],
                "updated_at": format!("2026-12-06T10:{:02}:00Z", (i as u64 + version) % 60),
                "version": version,
            })
        })
        .collect();
    json!({"board": "sprint 42", "issues": issues})
}

async fn subscribe(
    client: &mut TestClient,
    room: &str,
    delta: Option<DeltaFormat>,
    compress: Option<CompressFormat>,
) -> ServerFrame {
    client
        .send(ClientFrame::Subscribe {
            id: Some(7),
            room: room.into(),
            since: None,
            presence: false,
            info: None,
            delta,
            compress,
        })
        .await;
    match client.next().await {
        frame @ ServerFrame::Subscribed { .. } => frame,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// The value of a `message` frame of a subscription without `delta`, and whether it came
/// compressed.
fn value_of(frame: ServerFrame) -> (Value, bool) {
    let ServerFrame::Message {
        data,
        compressed,
        delta: None,
        ..
    } = frame
    else {
        panic!("expected a message, got {frame:?}")
    };
    if !compressed {
        return (data, false);
    }
    let Value::String(packed) = data else {
        panic!("compressed data is a base64 string")
    };
    let text = compress::unpack(&packed, 1 << 20).expect("inflates");
    (serde_json::from_str(&text).expect("JSON text"), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_arrive_deflated_to_subscriptions_that_ask() {
    let server = TestServer::start().await;
    let room = "board:42";
    let mut json_sub = TestClient::connect(&server.url, Encoding::Json).await;
    let mut json_twin = TestClient::connect(&server.url, Encoding::Json).await;
    let mut msgpack_sub = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let mut plain = TestClient::connect(&server.url, Encoding::Json).await;
    for client in [&mut json_sub, &mut json_twin, &mut msgpack_sub] {
        match subscribe(client, room, None, Some(CompressFormat::Deflate)).await {
            ServerFrame::Subscribed { compress, .. } => {
                assert_eq!(compress, Some(CompressFormat::Deflate), "echoed")
            }
            _ => unreachable!(),
        }
    }
    plain.subscribe(room, None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let large = board(24, 1);
    let small = json!({"id": 1, "status": "done", "note": "a hundred bytes or so of JSON, well below the threshold"});
    assert!(large.to_string().len() > 5_000 && small.to_string().len() < 1024);
    publisher.publish(room, large.clone(), None).await;
    publisher.publish(room, small.clone(), None).await;

    for client in [&mut json_sub, &mut msgpack_sub] {
        let (value, compressed) = value_of(client.next().await);
        assert_eq!((value, compressed), (large.clone(), true));
        let (value, compressed) = value_of(client.next().await);
        assert_eq!(
            (value, compressed),
            (small.clone(), false),
            "below the threshold"
        );
    }
    // Subscribers of one encoding get the same bytes (made once, shared).
    let first = json_twin.conn.next_raw(crate::support::WAIT).await.unwrap();
    let Encoded::Text(text) = &first else {
        panic!("a JSON frame")
    };
    assert!(
        text.as_str().contains(r#""compressed":true"#),
        "{}",
        text.as_str()
    );
    assert!(
        text.as_bytes().len() < large.to_string().len() / 4,
        "{} bytes for {} of JSON",
        text.as_bytes().len(),
        large.to_string().len()
    );
    let (value, compressed) = value_of(Encoding::Json.decode_server(&first).unwrap());
    assert_eq!((value, compressed), (large.clone(), true));
    // A subscription that did not ask gets the value as always.
    for expected in [large, small] {
        let (value, compressed) = value_of(plain.next().await);
        assert_eq!((value, compressed), (expected, false));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_and_whole_texts_compress_alike_and_a_server_without_compression_says_so() {
    let server = TestServer::start().await;
    let room = "board:7";
    let mut sub = TestClient::connect(&server.url, Encoding::Json).await;
    subscribe(
        &mut sub,
        room,
        Some(DeltaFormat::Fossil),
        Some(CompressFormat::Deflate),
    )
    .await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish(room, board(24, 1), None).await;
    publisher.publish(room, board(24, 2), None).await;
    // The first message: the whole text, compressed.
    let ServerFrame::Message {
        data: Value::String(packed),
        delta: Some(false),
        compressed: true,
        ..
    } = sub.next().await
    else {
        panic!("a whole, compressed text")
    };
    let text = compress::unpack(&packed, 1 << 20).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), board(24, 1));
    // The second: a delta against it (compressed too when it is large enough).
    let ServerFrame::Message {
        data: Value::String(data),
        delta: Some(true),
        compressed,
        ..
    } = sub.next().await
    else {
        panic!("a delta")
    };
    let delta = if compressed {
        compress::unpack(&data, 1 << 20).unwrap()
    } else {
        data
    };
    let next = fossil::apply(text.as_bytes(), delta.as_bytes(), 1 << 20).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&next).unwrap(),
        board(24, 2)
    );
    server.stop().await;

    let off = TestServer::with(|c| c.connection.compress_above_bytes = 0).await;
    let mut sub = TestClient::connect(&off.url, Encoding::Json).await;
    match subscribe(&mut sub, room, None, Some(CompressFormat::Deflate)).await {
        ServerFrame::Subscribed { compress, .. } => assert_eq!(compress, None, "not in force"),
        _ => unreachable!(),
    }
    let mut publisher = TestClient::connect(&off.url, Encoding::Json).await;
    publisher.publish(room, board(24, 1), None).await;
    assert_eq!(value_of(sub.next().await), (board(24, 1), false));
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_negotiates_and_inflates() {
    let server = TestServer::start().await;
    let room = "board:9";
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let mut config = ClientConfig::new(server.url.clone());
        config.encoding = encoding;
        let (client, mut events) = Client::start(config);
        client
            .subscribe_with_forms(room, None, true, true)
            .await
            .unwrap();
        let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
        let values = [
            board(24, 1),
            board(24, 2),
            json!({"small": true}),
            board(3, 4),
        ];
        for value in &values {
            publisher.publish(room, value.clone(), None).await;
        }
        let mut received = Vec::new();
        while received.len() < values.len() {
            let event = tokio::time::timeout(crate::support::WAIT, events.recv())
                .await
                .expect("an event in time")
                .expect("the client runs");
            if let Event::Message { data, .. } = event {
                received.push(data);
            }
        }
        assert_eq!(received, values, "{encoding:?}");
        client.stop().await;
    }
    server.stop().await;
}
