//! Resume: exact replay at the seam while others publish, and the explicit
//! `recovered: false` cases.

use crate::support::{TestClient, TestServer};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::protocol::{Encoding, ServerFrame};
use roomcast::stream::{Epoch, Position};
use serde_json::json;
use std::time::Duration;

/// Publishes `count` messages to `room` as fast as acks come back.
fn spawn_publisher(url: String, room: String, count: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publisher = TestClient::connect(&url, Encoding::MsgPack).await;
        for n in 1..=count {
            publisher.publish(&room, json!({ "n": n }), None).await;
        }
    })
}

/// A subscriber disconnects abruptly at random moments while a publisher keeps going,
/// and resumes on a new connection each time. Across all its connections it must see
/// every message after its first subscribe exactly once, in order. Repeated to catch
/// races between the replay and live delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_the_seam_while_publishing_continues() {
    const ROUNDS: usize = 25;
    const MESSAGES: u64 = 300;
    let server = TestServer::start().await;
    for round in 0..ROUNDS {
        let room = format!("seam-{round}");
        let mut client = TestClient::connect(&server.url, Encoding::Json).await;
        let first = client.subscribe(&room, None).await;
        let publisher = spawn_publisher(server.url.clone(), room.clone(), MESSAGES);
        let mut position = first.position.clone();
        let mut seen = Vec::new();
        let mut reconnects = 0;
        while position.seq < MESSAGES {
            // Read a random number of frames, then vanish without a close handshake.
            let budget = rand::random_range(0..40);
            for _ in 0..budget {
                let Some(frame) = client.maybe_next(Duration::from_secs(2)).await else {
                    break;
                };
                match frame {
                    ServerFrame::Message { epoch, seq, .. } => {
                        assert_eq!(epoch, position.epoch);
                        seen.push(seq);
                        position.seq = seq;
                    }
                    other => panic!("unexpected {other:?}"),
                }
                if position.seq == MESSAGES {
                    break;
                }
            }
            if position.seq == MESSAGES {
                break;
            }
            drop(client);
            reconnects += 1;
            client = TestClient::connect(&server.url, Encoding::Json).await;
            let resumed = client.subscribe(&room, Some(position.clone())).await;
            assert!(resumed.recovered, "round {round}: resume must be exact");
            assert_eq!(resumed.position.epoch, position.epoch);
            assert_eq!(resumed.replayed, resumed.position.seq - position.seq);
        }
        publisher.await.unwrap();
        let expected: Vec<u64> = (first.position.seq + 1..=MESSAGES).collect();
        assert_eq!(
            seen, expected,
            "round {round} after {reconnects} reconnects"
        );
    }
    server.stop().await;
}

/// The `subscribed` reply carries the room's position, so a client that received no
/// message at all can still resume exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_saw_no_message_can_resume() {
    let server = TestServer::start().await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    for n in 0..3 {
        publisher.publish("quiet", json!(n), None).await;
    }
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let subscribed = client.subscribe("quiet", None).await;
    assert_eq!(subscribed.position.seq, 3);
    drop(client);
    for n in 3..6 {
        publisher.publish("quiet", json!(n), None).await;
    }
    let mut client = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let resumed = client.subscribe("quiet", Some(subscribed.position)).await;
    assert!(resumed.recovered);
    assert_eq!((resumed.position.seq, resumed.replayed), (6, 3));
    for expected in 4..=6 {
        let (_, _, seq, data) = client.message().await;
        assert_eq!(seq, expected);
        assert_eq!(data, json!(expected - 1));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_epoch_is_not_recovered() {
    let server = TestServer::start().await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("e", json!(1), None).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let resumed = client
        .subscribe("e", Some(Position::new(Epoch::new("gone"), 1)))
        .await;
    assert!(!resumed.recovered);
    assert_eq!(resumed.reason.as_deref(), Some("epoch_changed"));
    assert_eq!((resumed.replayed, resumed.position.seq), (0, 1));
    publisher.publish("e", json!(2), None).await;
    let (_, _, seq, _) = client.message().await;
    assert_eq!(seq, 2, "live delivery continues from the current top");
    server.stop().await;
}

/// The replay buffer (5 messages here) no longer reaches back: no partial replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_beyond_the_buffer_is_not_recovered() {
    let server = TestServer::with(|c| {
        c.history.size = 5;
        c.rooms.cache_size = 5;
    })
    .await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let (first, _, _) = publisher.publish("far", json!(1), None).await;
    for n in 2..=20 {
        publisher.publish("far", json!(n), None).await;
    }
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let resumed = client
        .subscribe("far", Some(Position::new(first.epoch.clone(), 2)))
        .await;
    assert!(!resumed.recovered);
    assert_eq!(resumed.reason.as_deref(), Some("too_far_behind"));
    assert_eq!((resumed.replayed, resumed.position.seq), (0, 20));
    publisher.publish("far", json!(21), None).await;
    let (_, _, seq, _) = client.message().await;
    assert_eq!(seq, 21, "then a clean live stream");

    // The oldest position the buffer still covers resumes exactly.
    let mut exact = TestClient::connect(&server.url, Encoding::Json).await;
    let resumed = exact
        .subscribe("far", Some(Position::new(first.epoch, 16)))
        .await;
    assert!(resumed.recovered);
    assert_eq!(resumed.replayed, 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_the_stream_is_not_recovered() {
    let server = TestServer::start().await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let (ack, _, _) = publisher.publish("ahead", json!(1), None).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let resumed = client
        .subscribe("ahead", Some(Position::new(ack.epoch, 50)))
        .await;
    assert!(!resumed.recovered);
    assert_eq!(resumed.reason.as_deref(), Some("ahead_of_stream"));
    server.stop().await;
}

/// With a room cache smaller than the gap, the replay comes from the broker's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_beyond_the_room_cache_is_served_from_the_broker() {
    let server = TestServer::with(|c| c.rooms.cache_size = 2).await;
    let mut watcher = TestClient::connect(&server.url, Encoding::Json).await;
    watcher.subscribe("deep", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let (first, _, _) = publisher.publish("deep", json!(1), None).await;
    for n in 2..=10 {
        publisher.publish("deep", json!(n), None).await;
    }
    let mut client = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let resumed = client
        .subscribe("deep", Some(Position::new(first.epoch, 3)))
        .await;
    assert!(resumed.recovered);
    assert_eq!(resumed.replayed, 7);
    for expected in 4..=10 {
        let (_, _, seq, data) = client.message().await;
        assert_eq!((seq, data), (expected, json!(expected)));
    }
    server.stop().await;
}

/// The Rust client reconnects and resumes on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_by_itself_after_a_dropped_connection() {
    const MESSAGES: u64 = 200;
    let server = TestServer::start().await;
    let (client, mut events) = Client::start(ClientConfig::new(server.url.clone()));
    let subscription = client.subscribe("auto").await.unwrap();
    assert_eq!(subscription.position.seq, 0);
    let publisher = spawn_publisher(server.url.clone(), "auto".into(), MESSAGES);
    let mut seen = Vec::new();
    let mut drops = 0;
    while seen.last() != Some(&MESSAGES) {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("events keep coming")
            .expect("client alive")
        {
            Event::Message { seq, .. } => {
                seen.push(seq);
                if seq % 37 == 0 {
                    client.drop_connection();
                    drops += 1;
                }
            }
            Event::Subscribed {
                recovered, resumed, ..
            } => assert!(!resumed || recovered, "every resume is exact"),
            Event::Reset { .. } => panic!("no reset expected"),
            _ => {}
        }
    }
    publisher.await.unwrap();
    assert!(drops >= 5);
    assert_eq!(seen, (1..=MESSAGES).collect::<Vec<_>>());
    client.stop().await;
    server.stop().await;
}
