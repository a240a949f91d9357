//! Subscriptions with `delta: "fossil"`: consecutive messages arrive as deltas against
//! the previous one; the first message of a subscription, of a resume and of a new
//! epoch arrives whole. Every value rebuilt from deltas equals what was published.

use crate::cluster::FAST_PROBES;
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, WAIT, wait_ready};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::protocol::{ClientFrame, DeltaFormat, Encoding, ServerFrame, fossil};
use roomcast::stream::{Epoch, Position};
use serde_json::{Value, json};
use std::time::Duration;

/// An issue object after `n` edits: one field changes per edit, the rest stays.
fn issue(n: u64) -> Value {
    let statuses = ["open", "in_progress", "in_review", "done"];
    let assignee = ["maria", "jonas", "aiko"][(n % 3) as usize];
    json!({
        "id": 1234,
        "title": "Login page shows a blank screen on Safari 17 after the CSP change",
        "description": "Steps: open /login in Safari 17.2; the page stays white and the console shows a CSP violation for the inline bootstrap script. Chrome and Firefox are fine.",
        "status": statuses[(n % 4) as usize],
        "assignee": assignee,
        "version": n,
        "updated_at": format!("2026-12-06T10:00:{:02}Z", n % 60),
    })
}

/// What a delta subscriber's client keeps: the last message's position and JSON text.
#[derive(Default)]
struct Rebuilt {
    base: Option<(Position, String)>,
}

impl Rebuilt {
    /// Rebuilds the value of a `message` frame; returns it and whether it was a delta.
    fn apply(&mut self, frame: ServerFrame) -> (Position, Value, bool) {
        let ServerFrame::Message {
            epoch,
            seq,
            data,
            delta: Some(is_delta),
            ..
        } = frame
        else {
            panic!("expected a message of a delta subscription, got {frame:?}")
        };
        let Value::String(data) = data else {
            panic!("a delta subscription's data is text")
        };
        let position = Position::new(epoch, seq);
        let text = if is_delta {
            let (base, text) = self.base.as_ref().expect("a delta has a base");
            assert_eq!(base.epoch, position.epoch, "no delta across epochs");
            assert_eq!(base.seq + 1, position.seq, "a delta follows its base");
            let out = fossil::apply(text.as_bytes(), data.as_bytes(), 1 << 20).expect("applies");
            String::from_utf8(out).unwrap()
        } else {
            data
        };
        let value = serde_json::from_str(&text).expect("JSON text");
        self.base = Some((position.clone(), text));
        (position, value, is_delta)
    }
}

async fn subscribe_delta(
    client: &mut TestClient,
    room: &str,
    since: Option<Position>,
) -> ServerFrame {
    client
        .send(ClientFrame::Subscribe {
            id: Some(99),
            room: room.into(),
            since,
            presence: false,
            info: None,
            delta: Some(DeltaFormat::Fossil),
            compress: None,
        })
        .await;
    match client.next().await {
        frame @ ServerFrame::Subscribed {
            delta: Some(DeltaFormat::Fossil),
            ..
        } => frame,
        other => panic!("expected subscribed with delta, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_messages_are_deltas_and_a_resume_starts_whole() {
    let server = crate::support::TestServer::start().await;
    let room = "issue:1234";
    let mut json_sub = TestClient::connect(&server.url, Encoding::Json).await;
    let mut msgpack_sub = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let mut plain = TestClient::connect(&server.url, Encoding::Json).await;
    subscribe_delta(&mut json_sub, room, None).await;
    subscribe_delta(&mut msgpack_sub, room, None).await;
    plain.subscribe(room, None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::MsgPack).await;
    for n in 1..=6 {
        publisher.publish(room, issue(n), None).await;
    }
    let mut rebuilt = [Rebuilt::default(), Rebuilt::default()];
    for (client, rebuilt) in [&mut json_sub, &mut msgpack_sub]
        .into_iter()
        .zip(&mut rebuilt)
    {
        for n in 1..=6 {
            let (position, value, is_delta) = rebuilt.apply(client.next().await);
            assert_eq!(position.seq, n);
            assert_eq!(value, issue(n));
            assert_eq!(
                is_delta,
                n > 1,
                "the first message is whole, the next ones deltas"
            );
        }
    }
    // A subscriber without `delta` sees plain values, as before.
    for n in 1..=6 {
        let (_, _, seq, data) = plain.message().await;
        assert_eq!((seq, data), (n, issue(n)));
    }

    // Resume after a disconnect: the replay starts whole, then deltas again.
    let last = rebuilt[0].base.clone().unwrap().0;
    drop(json_sub);
    for n in 7..=9 {
        publisher.publish(room, issue(n), None).await;
    }
    let mut resumed = TestClient::connect(&server.url, Encoding::Json).await;
    match subscribe_delta(&mut resumed, room, Some(last.clone())).await {
        ServerFrame::Subscribed {
            recovered,
            replayed,
            ..
        } => {
            assert!(recovered);
            assert_eq!(replayed, 3);
        }
        _ => unreachable!(),
    }
    let mut after_resume = Rebuilt::default();
    for n in 7..=9 {
        let (position, value, is_delta) = after_resume.apply(resumed.next().await);
        assert_eq!((position.seq, value), (n, issue(n)));
        assert_eq!(is_delta, n > 7, "no delta across the resume");
    }
    publisher.publish(room, issue(10), None).await;
    let (position, value, is_delta) = after_resume.apply(resumed.next().await);
    assert_eq!((position.seq, value, is_delta), (10, issue(10), true));

    // A fresh subscriber's first live message is whole.
    let mut fresh = TestClient::connect(&server.url, Encoding::Json).await;
    subscribe_delta(&mut fresh, room, None).await;
    publisher.publish(room, issue(11), None).await;
    let (_, value, is_delta) = Rebuilt::default().apply(fresh.next().await);
    assert_eq!((value, is_delta), (issue(11), false));
    server.stop().await;
}

/// Across instances (bodies compressed in Redis) deltas flow as on one instance; when
/// Redis comes back empty, the `reset` is followed by a whole message of the new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_change_is_followed_by_a_whole_message() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let mut nodes = Vec::new();
    for node in ["node-0", "node-1"] {
        let mut env = vec![
            ("ROOMCAST_REDIS_URL", url.as_str()),
            ("ROOMCAST_NODE_ID", node),
            ("ROOMCAST_REDIS__COMPRESS_ABOVE_BYTES", "128"),
        ];
        env.extend(FAST_PROBES);
        let process = RoomcastProcess::start(&env).await;
        wait_ready(&process.addr).await;
        nodes.push(process);
    }
    let room = "issue:77";
    let mut watcher = TestClient::connect(&nodes[1].url(), Encoding::MsgPack).await;
    subscribe_delta(&mut watcher, room, None).await;
    let mut publisher = TestClient::connect(&nodes[0].url(), Encoding::Json).await;
    for n in 1..=4 {
        publisher.publish(room, issue(n), None).await;
    }
    let mut rebuilt = Rebuilt::default();
    let mut old_epoch = Epoch::new("");
    for n in 1..=4 {
        let (position, value, is_delta) = rebuilt.apply(watcher.next().await);
        assert_eq!((position.seq, value, is_delta), (n, issue(n), n > 1));
        old_epoch = position.epoch;
    }
    // The replay buffer holds the bodies compressed: a history read decodes them.
    let history = roomcast::protocol::ClientFrame::History {
        id: Some(5),
        room: room.into(),
        since: None,
        limit: Some(10),
    };
    publisher.send(history).await;
    match publisher.next().await {
        ServerFrame::History { messages, .. } => {
            let values: Vec<Value> = messages.into_iter().map(|m| m.data).collect();
            assert_eq!(values, (1..=4).map(issue).collect::<Vec<_>>());
        }
        other => panic!("expected history, got {other:?}"),
    }

    redis.restart_empty().await;
    crate::cluster::expect_reset(&mut watcher, &old_epoch).await;
    // Publish until Redis takes it again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 100;
    loop {
        publisher
            .send(ClientFrame::Publish {
                id: Some(n),
                room: room.into(),
                data: issue(n),
                key: Some(format!("k{n}")),
            })
            .await;
        match publisher.next().await {
            ServerFrame::Ack { .. } => break,
            ServerFrame::Error { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                n += 1;
            }
            other => panic!("publish after the restart: {other:?}"),
        }
    }
    let (position, value, is_delta) = rebuilt.apply(watcher.next().await);
    assert_ne!(position.epoch, old_epoch);
    assert_eq!((position.seq, value, is_delta), (1, issue(n), false));
    publisher.publish(room, issue(n + 1), None).await;
    let (position, value, is_delta) = rebuilt.apply(watcher.next().await);
    assert_eq!((position.seq, value, is_delta), (2, issue(n + 1), true));
}

/// The Rust client applies deltas: its events carry whole values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_rebuilds_values_from_deltas() {
    let server = crate::support::TestServer::start().await;
    let (client, mut events) = Client::start(ClientConfig::new(server.url.clone()));
    client.subscribe_with_delta("doc:1", None).await.unwrap();
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    for n in 1..=8 {
        publisher.publish("doc:1", issue(n), None).await;
    }
    let mut n = 1;
    while n <= 8 {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message { seq, data, .. } => {
                assert_eq!((seq, data), (n, issue(n)));
                n += 1;
            }
            _ => continue,
        }
    }
    client.stop().await;
    server.stop().await;
}
