//! Fan-in under a slow Redis: the queues between the broker and the room actors stay
//! within their bounds, what is dropped at a bound is filled from the replay buffer,
//! and rooms start side by side instead of one after another.

use crate::cluster::Watcher;
use crate::support::ledger::Verdict;
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, WAIT, http_get, wait_ready};
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use roomcast::stream::{Epoch, Position};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Keeps Redis busy with back-to-back `DEBUG SLEEP`s: every other command waits for the
/// sleep in progress, so each round trip takes up to `pause`.
struct Staller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Staller {
    async fn start(port: u16, pause: &'static str) -> Staller {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut sleeps = 0;
            while !stopped.load(Ordering::Relaxed) {
                let command = format!("DEBUG SLEEP {pause}\r\n");
                stream
                    .get_mut()
                    .write_all(command.as_bytes())
                    .await
                    .unwrap();
                let mut reply = String::new();
                stream.read_line(&mut reply).await.unwrap();
                assert_eq!(reply, "+OK\r\n", "DEBUG SLEEP refused");
                sleeps += 1;
            }
            sleeps
        });
        Staller { stop, task }
    }

    /// Lets Redis run at full speed again; returns how many sleeps it took.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Redis with `DEBUG` enabled, and one instance on it whose commands wait out the sleeps
/// (a command timeout well above them) with `extra` settings.
async fn slow_redis_node(extra: &[(&str, &str)]) -> (RedisServer, RoomcastProcess) {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]).await;
    let url = redis.url();
    let mut env = vec![
        ("ROOMCAST_REDIS_URL", url.as_str()),
        ("ROOMCAST_REDIS__COMMAND_TIMEOUT_MS", "5000"),
        ("ROOMCAST_REDIS__PROBE_TIMEOUT_MS", "10000"),
        ("ROOMCAST_CONNECTION__MAX_CONNECTIONS_PER_USER", "0"),
    ];
    env.extend_from_slice(extra);
    let node = RoomcastProcess::start(&env).await;
    wait_ready(&node.addr).await;
    (redis, node)
}

/// Subscribes to `room` from an epoch the room never had, over and over, until `stop`:
/// each such resume makes the room actor read the broker's top first, so it keeps
/// waiting on the slow Redis while publications arrive.
async fn resume_from_elsewhere(url: String, room: &'static str, stop: Arc<AtomicBool>) {
    let mut client = TestClient::connect(&url, Encoding::Json).await;
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        client
            .send(ClientFrame::Subscribe {
                id: Some(id),
                room: room.into(),
                since: Some(Position::new(Epoch::new("elsewhere"), 1)),
                presence: false,
                info: None,
                delta: None,
                compress: None,
            })
            .await;
        loop {
            match client.next().await {
                ServerFrame::Subscribed { recovered, .. } => {
                    assert!(!recovered, "another epoch cannot be recovered");
                    break;
                }
                ServerFrame::Message { .. } => {}
                other => panic!("expected subscribed, got {other:?}"),
            }
        }
        client
            .send(ClientFrame::Unsubscribe {
                id: None,
                room: room.into(),
            })
            .await;
        loop {
            match client.next().await {
                ServerFrame::Unsubscribed { .. } => break,
                ServerFrame::Message { .. } => {}
                other => panic!("expected unsubscribed, got {other:?}"),
            }
        }
    }
}

/// A publish burst while Redis is slow and the room actor keeps waiting on it: the
/// room's mailbox never holds more than `rooms.queue_size` publications (the peak gauge
/// says so), publications beyond it are dropped (counted) and filled from the replay
/// buffer, and once Redis recovers every subscriber has every message, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_while_redis_is_slow_stays_within_the_room_bound_and_loses_nothing() {
    const PUBLISHERS: u64 = 32;
    const EACH: u64 = 40;
    const BOUND: f64 = 4.0;
    let (redis, node) = slow_redis_node(&[("ROOMCAST_ROOMS__QUEUE_SIZE", "4")]).await;
    let watchers = [
        Watcher::start(vec![node.url()], &["burst"], Encoding::Json).await,
        Watcher::start(vec![node.url()], &["burst"], Encoding::MsgPack).await,
    ];
    let staller = Staller::start(redis.port, "0.05").await;
    let stop = Arc::new(AtomicBool::new(false));
    let resumers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(resume_from_elsewhere(node.url(), "burst", stop.clone())))
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let url = node.url();
            tokio::spawn(async move {
                let mut client = TestClient::connect(&url, Encoding::MsgPack).await;
                let mut highest = 0;
                for n in 0..EACH {
                    let (ack, _, _) = client.publish("burst", json!({"p": p, "n": n}), None).await;
                    highest = ack.seq.max(highest);
                }
                highest
            })
        })
        .collect();
    let mut highest = 0;
    for publisher in publishers {
        highest = highest.max(publisher.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for resumer in resumers {
        resumer.await.unwrap();
    }
    let sleeps = staller.stop().await;
    assert!(sleeps > 0, "Redis was slowed");
    assert_eq!(highest, PUBLISHERS * EACH, "one epoch, every publish acked");

    for watcher in &watchers {
        let ledger = watcher.wait_for("burst", highest).await;
        assert_eq!(ledger.verdict(1, highest), Verdict::default());
        assert_eq!(ledger.losses, 0, "nothing reported lost");
    }
    let metrics = http_get(&node.addr, "/metrics").await;
    let dropped =
        crate::support::metric(&metrics, r#"roomcast_fanin_dropped_total{queue="rooms"}"#);
    let peak = crate::support::metric(&metrics, r#"roomcast_fanin_queue_peak{queue="rooms"}"#);
    assert!(
        dropped > 0.0,
        "the burst must have overflowed the room's bound for this test to mean anything"
    );
    assert!(
        (1.0..=BOUND).contains(&peak),
        "a room's mailbox held {peak} publications; the bound is {BOUND}"
    );
    assert_eq!(
        crate::support::metric(&metrics, r#"roomcast_fanin_queue_depth{queue="rooms"}"#),
        0.0,
        "nothing left waiting"
    );
}

/// A reconnect storm while Redis is slow: many rooms without an actor are subscribed at
/// once while every Redis round trip waits out a `DEBUG SLEEP` of 0.25 s. Started one
/// after another (two round trips each, plus one SUBSCRIBE each on the Pub/Sub
/// connection) they would take 60 × 3 × 0.25 s, far past the 15-s subscribe timeout;
/// started side by side, each subscribe is answered with `subscribed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rooms_start_side_by_side_while_redis_is_slow() {
    const ROOMS: usize = 60;
    let (redis, node) = slow_redis_node(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..ROOMS {
        clients.push(TestClient::connect(&node.url(), Encoding::Json).await);
    }
    let staller = Staller::start(redis.port, "0.25").await;
    let subscribes: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                client
                    .send(ClientFrame::Subscribe {
                        id: Some(1),
                        room: format!("storm-{i}"),
                        since: None,
                        presence: false,
                        info: None,
                        delta: None,
                        compress: None,
                    })
                    .await;
                let reply = client.conn.next_frame(Duration::from_secs(30)).await;
                (client, reply)
            })
        })
        .collect();
    let mut subscribed = Vec::new();
    let mut failed = Vec::new();
    for (i, subscribe) in subscribes.into_iter().enumerate() {
        match subscribe.await.unwrap() {
            (client, Ok(ServerFrame::Subscribed { room, .. })) => {
                assert_eq!(room, format!("storm-{i}"));
                subscribed.push(client);
            }
            (_, other) => failed.push(format!("storm-{i}: {other:?}")),
        }
    }
    let sleeps = staller.stop().await;
    assert!(sleeps > 0, "Redis was slowed");
    assert!(failed.is_empty(), "subscribes that failed: {failed:?}");
    assert_eq!(subscribed.len(), ROOMS);

    // Every room works: a message to each reaches its subscriber.
    let mut publisher = TestClient::connect(&node.url(), Encoding::Json).await;
    for i in 0..ROOMS {
        publisher
            .publish(&format!("storm-{i}"), json!(i), None)
            .await;
    }
    for (i, client) in subscribed.iter_mut().enumerate() {
        let (room, _, seq, data) = tokio::time::timeout(WAIT, client.message()).await.unwrap();
        assert_eq!((room, seq, data), (format!("storm-{i}"), 1, json!(i)));
    }
}
