//! Supervision: a room actor that panics is restarted and its subscribers miss nothing;
//! a connection actor that panics closes only its own socket.

use crate::support::{TestClient, TestServer, eventually};
use roomcast::protocol::{CloseCode, Encoding};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_panics_mid_stream_is_restarted_and_its_subscribers_miss_nothing() {
    const MESSAGES: u64 = 400;
    let server = TestServer::with(|c| c.rooms.max_restarts = 10).await;
    let mut subscribers = Vec::new();
    for encoding in [Encoding::Json, Encoding::MsgPack, Encoding::Json] {
        let mut client = TestClient::connect(&server.url, encoding).await;
        client.subscribe("fragile", None).await;
        subscribers.push(client);
    }
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let url = server.url.clone();
        let published = published.clone();
        tokio::spawn(async move {
            let mut client = TestClient::connect(&url, Encoding::MsgPack).await;
            for n in 1..=MESSAGES {
                client.publish("fragile", json!(n), None).await;
                published.store(n, Ordering::Relaxed);
            }
        })
    };
    let mut crashes = 0;
    for threshold in [50, 150, 250, 350] {
        eventually("publishing progresses", || {
            published.load(Ordering::Relaxed) >= threshold
        })
        .await;
        if server.server().rooms().inject_panic("fragile") {
            crashes += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.await.unwrap();
    assert!(crashes >= 3, "the room actor was crashed repeatedly");
    for subscriber in &mut subscribers {
        for expected in 1..=MESSAGES {
            let (_, _, seq, data) = subscriber.message().await;
            assert_eq!(seq, expected);
            assert_eq!(data, json!(expected));
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_keeps_failing_closes_its_connections_which_then_resume() {
    let server = TestServer::with(|c| c.rooms.max_restarts = 1).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let subscribed = client.subscribe("doomed", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("doomed", json!(1), None).await;
    let (_, epoch, seq, _) = client.message().await;
    assert!(server.server().rooms().inject_panic("doomed"));
    // The first failure is restarted; keep failing the (restarted) room until the
    // supervisor gives up and closes the connection.
    let code = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.server().rooms().inject_panic("doomed");
        if let Ok(code) = client.conn.closed(Duration::from_millis(300)).await {
            break code;
        }
    };
    assert_eq!(code, Some(CloseCode::InternalError.number()));

    publisher.publish("doomed", json!(2), None).await;
    let mut again = TestClient::connect(&server.url, Encoding::Json).await;
    let resumed = again
        .subscribe(
            "doomed",
            Some(roomcast::stream::Position::new(epoch.clone(), seq)),
        )
        .await;
    assert_eq!(resumed.position.epoch, subscribed.position.epoch);
    assert!(resumed.recovered);
    let (_, _, seq, data) = again.message().await;
    assert_eq!((seq, data), (2, json!(2)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_actor_that_panics_closes_only_its_socket() {
    let server = TestServer::start().await;
    let mut victim = TestClient::connect(&server.url, Encoding::Json).await;
    let mut neighbour = TestClient::connect(&server.url, Encoding::MsgPack).await;
    victim.subscribe("shared", None).await;
    neighbour.subscribe("shared", None).await;
    assert!(server.server().connections().inject_panic(&victim.session));
    assert_eq!(
        victim.closed().await,
        Some(CloseCode::InternalError.number())
    );

    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("shared", json!("after"), None).await;
    let (_, _, seq, data) = neighbour.message().await;
    assert_eq!((seq, data), (1, json!("after")));
    eventually("the dead connection is gone", || {
        server.server().connections().count() == 2
    })
    .await;
    server.stop().await;
}
