//! The protocol over real sockets: subscribe, publish, ack, delivery, both encodings,
//! ping, history, unsubscribe, idempotent retries and ordering.

use crate::support::{TestClient, TestServer, WAIT};
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_acked_and_delivered_to_subscribers() {
    let server = TestServer::start().await;
    let mut subscriber = TestClient::connect(&server.url, Encoding::Json).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let subscribed = subscriber.subscribe("project:42", None).await;
    assert_eq!(subscribed.position.seq, 0);
    assert!(!subscribed.recovered, "no resume was asked for");

    let (ack, duplicate, _) = publisher
        .publish("project:42", json!({"title": "hello"}), None)
        .await;
    assert_eq!(ack.seq, 1);
    assert!(!duplicate);
    assert_eq!(ack.epoch, subscribed.position.epoch);

    match subscriber.next().await {
        ServerFrame::Message {
            room,
            epoch,
            seq,
            time,
            data,
            delta,
            compressed: false,
        } => {
            assert_eq!(delta, None, "no `delta` field without a delta subscription");
            assert_eq!(room, "project:42");
            assert_eq!(epoch, ack.epoch);
            assert_eq!(seq, 1);
            assert!(
                time > 1_600_000_000_000,
                "publish time in ms since the epoch"
            );
            assert_eq!(data, json!({"title": "hello"}));
        }
        other => panic!("expected message, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_msgpack_clients_share_a_room() {
    let server = TestServer::start().await;
    let mut json_sub = TestClient::connect(&server.url, Encoding::Json).await;
    let mut msgpack_sub = TestClient::connect(&server.url, Encoding::MsgPack).await;
    assert_eq!(msgpack_sub.conn.encoding(), Encoding::MsgPack);
    json_sub.subscribe("mixed", None).await;
    msgpack_sub.subscribe("mixed", None).await;

    let first = json!({"from": "json", "n": [1, 2.5, -3], "nested": {"ok": true}, "none": null});
    let second = json!({"from": "msgpack", "big": u64::MAX, "text": "ü∑"});
    let mut json_pub = TestClient::connect(&server.url, Encoding::Json).await;
    let mut msgpack_pub = TestClient::connect(&server.url, Encoding::MsgPack).await;
    json_pub.publish("mixed", first.clone(), None).await;
    msgpack_pub.publish("mixed", second.clone(), None).await;

    for client in [&mut json_sub, &mut msgpack_sub] {
        let (_, _, seq1, data1) = client.message().await;
        let (_, _, seq2, data2) = client.message().await;
        assert_eq!(
            vec![(seq1, data1), (seq2, data2)],
            vec![(1, first.clone()), (2, second.clone())]
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_subprotocol_speaks_json() {
    let server = TestServer::start().await;
    let mut client = TestClient::connect_offering(&server.url, None).await;
    assert_eq!(client.conn.encoding(), Encoding::Json);
    client.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_history_and_unsubscribe() {
    let server = TestServer::start().await;
    let mut client = TestClient::connect(&server.url, Encoding::MsgPack).await;
    client.ping().await;
    for n in 1..=5 {
        client.publish("log", json!(n), None).await;
    }

    client
        .send(ClientFrame::History {
            id: Some(77),
            room: "log".into(),
            since: None,
            limit: Some(3),
        })
        .await;
    let epoch = match client.next().await {
        ServerFrame::History {
            id,
            seq,
            messages,
            recovered,
            epoch,
            ..
        } => {
            assert_eq!(id, Some(77));
            assert_eq!(seq, 5);
            assert_eq!(recovered, None);
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, vec![3, 4, 5], "the newest three, oldest first");
            assert_eq!(messages[0].data, json!(3));
            epoch
        }
        other => panic!("expected history, got {other:?}"),
    };
    client
        .send(ClientFrame::History {
            id: Some(78),
            room: "log".into(),
            since: Some(roomcast::stream::Position::new(epoch, 1)),
            limit: None,
        })
        .await;
    match client.next().await {
        ServerFrame::History {
            messages,
            recovered,
            ..
        } => {
            assert_eq!(recovered, Some(true));
            assert_eq!(
                messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                vec![2, 3, 4, 5]
            );
        }
        other => panic!("expected history, got {other:?}"),
    }

    client.subscribe("log", None).await;
    client
        .send(ClientFrame::Unsubscribe {
            id: Some(9),
            room: "log".into(),
        })
        .await;
    assert_eq!(
        client.next().await,
        ServerFrame::Unsubscribed {
            id: Some(9),
            room: "log".into()
        }
    );
    let mut other = TestClient::connect(&server.url, Encoding::Json).await;
    other.publish("log", json!("after"), None).await;
    assert_eq!(
        client.maybe_next(Duration::from_millis(300)).await,
        None,
        "nothing arrives after unsubscribing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_gets_the_original_ack_and_is_delivered_once() {
    let server = TestServer::start().await;
    let mut subscriber = TestClient::connect(&server.url, Encoding::Json).await;
    subscriber.subscribe("orders", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let (first, duplicate, _) = publisher
        .publish("orders", json!({"order": 1}), Some("order-1"))
        .await;
    assert!(!duplicate);
    publisher.publish("orders", json!({"order": 2}), None).await;
    // The retry, on a new connection, as after a lost ack.
    let mut retrier = TestClient::connect(&server.url, Encoding::Json).await;
    let (again, duplicate, _) = retrier
        .publish("orders", json!({"order": 1}), Some("order-1"))
        .await;
    assert!(duplicate);
    assert_eq!(again, first, "same epoch and seq as the original");

    let (_, _, seq1, data1) = subscriber.message().await;
    let (_, _, seq2, _) = subscriber.message().await;
    assert_eq!((seq1, seq2), (1, 2));
    assert_eq!(data1, json!({"order": 1}));
    assert_eq!(
        subscriber.maybe_next(Duration::from_millis(300)).await,
        None,
        "the retry is not delivered again"
    );
    server.stop().await;
}

/// Four publishers on their own connections publish concurrently; three subscribers
/// (both encodings) must see one gap-free sequence, identical across subscribers, that
/// keeps each publisher's own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_give_every_subscriber_the_same_order() {
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 150;
    let server = TestServer::start().await;
    let mut subscribers = Vec::new();
    for encoding in [Encoding::Json, Encoding::MsgPack, Encoding::Json] {
        let mut client = TestClient::connect(&server.url, encoding).await;
        client.subscribe("race", None).await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let url = server.url.clone();
        publishers.push(tokio::spawn(async move {
            let mut client = TestClient::connect(&url, Encoding::MsgPack).await;
            for n in 0..EACH {
                client.publish("race", json!({"p": p, "n": n}), None).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut orders = Vec::new();
    for subscriber in &mut subscribers {
        let mut order = Vec::new();
        let mut next_per_publisher: HashMap<u64, u64> = HashMap::new();
        for expected_seq in 1..=PUBLISHERS * EACH {
            let (_, _, seq, data) = subscriber.message().await;
            assert_eq!(seq, expected_seq, "no gap, no duplicate, in order");
            let (p, n) = (data["p"].as_u64().unwrap(), data["n"].as_u64().unwrap());
            let next = next_per_publisher.entry(p).or_default();
            assert_eq!(n, *next, "publisher {p}'s messages keep their order");
            *next += 1;
            order.push((p, n));
        }
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "same order everywhere"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_announces_the_limits() {
    let server = TestServer::with(|c| {
        c.connection.max_rooms = 7;
        c.connection.publish_requires_subscription = true;
    })
    .await;
    let mut conn = roomcast::client::Connection::connect(&server.url, Some(Encoding::Json))
        .await
        .unwrap();
    match conn.next_frame(WAIT).await.unwrap() {
        ServerFrame::Welcome {
            protocol,
            server: node,
            limits,
            session,
            features,
            expires_at,
        } => {
            assert_eq!(protocol, "roomcast.v1");
            assert_eq!(expires_at, None, "anonymous connections do not expire");
            assert!(features.is_empty(), "no flag is on by default");
            assert_eq!(node, "test-node");
            assert!(!session.is_empty());
            assert_eq!(limits.max_rooms, 7);
            assert!(limits.publish_requires_subscription);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    server.stop().await;
}
