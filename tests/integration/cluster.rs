//! Several roomcast processes sharing one Redis (or a Redis Cluster): cross-instance
//! delivery and order, `kill -9` of an instance under load, a retried publish after a
//! lost ack, and Redis faults (pause, empty restart, restore of an older snapshot).

use crate::support::ledger::{Ledger, Verdict};
use crate::support::process::RoomcastProcess;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::{TestClient, WAIT, http_get, wait_ready};
use roomcast::client::{Client, ClientConfig, Connection, Event};
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use roomcast::stream::Position;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Fast failure detection for tests.
pub(crate) const FAST_PROBES: [(&str, &str); 3] = [
    ("ROOMCAST_REDIS__PROBE_INTERVAL_MS", "200"),
    ("ROOMCAST_REDIS__PROBE_TIMEOUT_MS", "1000"),
    ("ROOMCAST_REDIS__RECONNECT_MAX_MS", "500"),
];

/// Starts `count` instances on `redis_url`, ready to serve.
async fn instances(redis_url: &str, count: usize) -> Vec<RoomcastProcess> {
    let mut started = Vec::new();
    for i in 0..count {
        let node = format!("node-{i}");
        let mut env = vec![
            ("ROOMCAST_REDIS_URL", redis_url),
            ("ROOMCAST_NODE_ID", node.as_str()),
        ];
        env.extend(FAST_PROBES);
        let process = RoomcastProcess::start(&env).await;
        wait_ready(&process.addr).await;
        started.push(process);
    }
    started
}

/// One step of a client's connection history.
#[derive(Debug, Clone)]
pub(crate) enum Hop {
    /// Connected to the instance with this id (from `welcome`).
    Connected {
        server: String,
        at: std::time::Instant,
    },
    /// Lost the connection, with the server's close code if it sent one.
    Lost {
        code: Option<u16>,
        at: std::time::Instant,
    },
}

/// Where a client connected and when it lost its connections, in order.
pub(crate) type Hops = Arc<std::sync::Mutex<Vec<Hop>>>;

/// Appends `event` to `hops` when it is a connection or a lost connection.
pub(crate) fn record_hop(hops: &Hops, event: &Event) {
    let at = std::time::Instant::now();
    let hop = match event {
        Event::Connected { server, .. } => Hop::Connected {
            server: server.clone(),
            at,
        },
        Event::Disconnected { code } => Hop::Lost { code: *code, at },
        _ => return,
    };
    hops.lock().unwrap().push(hop);
}

/// A resilient client over `urls`, its events fed into a ledger per room.
pub(crate) struct Watcher {
    /// Kept alive for the test's duration (dropping it stops the client).
    _client: Client,
    ledgers: Arc<std::sync::Mutex<HashMap<String, Ledger>>>,
    pub(crate) reconnects: Arc<AtomicU64>,
    /// Close codes of the connections this watcher lost.
    pub(crate) closes: Arc<std::sync::Mutex<Vec<Option<u16>>>>,
    /// Its connection history.
    pub(crate) hops: Hops,
}

impl Watcher {
    pub(crate) async fn start(urls: Vec<String>, rooms: &[&str], encoding: Encoding) -> Watcher {
        let mut config = ClientConfig::new(urls[0].clone());
        config.urls = urls;
        config.encoding = encoding;
        let (client, mut events) = Client::start(config);
        let ledgers: Arc<std::sync::Mutex<HashMap<String, Ledger>>> = Default::default();
        let recorded = ledgers.clone();
        let reconnects = Arc::new(AtomicU64::new(0));
        let counted = reconnects.clone();
        let closes: Arc<std::sync::Mutex<Vec<Option<u16>>>> = Default::default();
        let closed = closes.clone();
        let hops = Hops::default();
        let hopped = hops.clone();
        let names: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_hop(&hopped, &event);
                if matches!(
                    event,
                    Event::Connected {
                        reconnect: true,
                        ..
                    }
                ) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                if let Event::Disconnected { code } = event {
                    closed.lock().unwrap().push(code);
                }
                let mut ledgers = recorded.lock().unwrap();
                for room in &names {
                    ledgers
                        .entry(room.clone())
                        .or_default()
                        .record(room, &event);
                }
            }
        });
        for room in rooms {
            client.subscribe(room).await.expect("subscribes");
        }
        Watcher {
            _client: client,
            ledgers,
            reconnects,
            closes,
            hops,
        }
    }

    fn ledger(&self, room: &str) -> Ledger {
        self.ledgers
            .lock()
            .unwrap()
            .get(room)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn wait_for(&self, room: &str, seq: u64) -> Ledger {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ledger = self.ledger(room);
            if ledger.last() >= seq {
                return ledger;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck at {} waiting for {seq}",
                ledger.last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes `count` messages through a resilient client; returns the highest acked seq.
pub(crate) fn spawn_publisher(
    urls: Vec<String>,
    room: &'static str,
    count: u64,
    pause: Duration,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut config = ClientConfig::new(urls[0].clone());
        config.urls = urls;
        config.request_timeout = Duration::from_secs(30);
        let (client, _events) = Client::start(config);
        let mut highest = 0;
        for n in 0..count {
            let ack = client
                .publish(room, json!({ "n": n }), None)
                .await
                .expect("every publish is acked in the end");
            highest = highest.max(ack.position.seq);
            progress.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
        }
        client.stop().await;
        highest
    })
}

pub(crate) async fn wait_progress(progress: &AtomicU64, at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < at_least {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_rooms_in_one_order() {
    const EACH: u64 = 100;
    let redis = RedisServer::start().await;
    let nodes = instances(&redis.url(), 3).await;
    let mut subscribers = Vec::new();
    for node in &nodes {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let mut client = TestClient::connect(&node.url(), encoding).await;
            client.subscribe("orders", None).await;
            subscribers.push(client);
        }
    }
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(p, node)| {
            let url = node.url();
            tokio::spawn(async move {
                let mut client = TestClient::connect(&url, Encoding::MsgPack).await;
                for n in 0..EACH {
                    client
                        .publish("orders", json!({"p": p, "n": n}), None)
                        .await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut orders = Vec::new();
    for subscriber in &mut subscribers {
        let mut order = Vec::new();
        for expected in 1..=3 * EACH {
            let (_, _, seq, data) = subscriber.message().await;
            assert_eq!(seq, expected, "gap-free and in order on every instance");
            order.push(data);
        }
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "one order everywhere"
    );
}

/// `kill -9` of one of two instances while publishers and subscribers are busy on both:
/// every client of the dead instance reconnects to the survivor and resumes, and every
/// subscriber ends with every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_instance_loses_nothing() {
    const MESSAGES: u64 = 150;
    let redis = RedisServer::start().await;
    let mut nodes = instances(&redis.url(), 2).await;
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let mut watchers = Vec::new();
    for i in 0..12 {
        let urls = if i % 2 == 0 {
            vec![a.clone(), b.clone()]
        } else {
            vec![b.clone(), a.clone()]
        };
        let encoding = if i % 3 == 0 {
            Encoding::Json
        } else {
            Encoding::MsgPack
        };
        watchers.push(Watcher::start(urls, &["failover"], encoding).await);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let publishers = [
        spawn_publisher(
            vec![a.clone(), b.clone()],
            "failover",
            MESSAGES,
            Duration::from_millis(5),
            progress.clone(),
        ),
        spawn_publisher(
            vec![b.clone(), a.clone()],
            "failover",
            MESSAGES,
            Duration::from_millis(5),
            progress.clone(),
        ),
    ];
    wait_progress(&progress, MESSAGES / 2).await;
    nodes[0].signal("KILL");
    let _ = nodes[0].wait(Duration::from_secs(10)).await;

    let mut highest = 0;
    for publisher in publishers {
        highest = highest.max(publisher.await.unwrap());
    }
    assert!(highest >= 2 * MESSAGES);
    let moved: u64 = watchers
        .iter()
        .map(|w| w.reconnects.load(Ordering::Relaxed))
        .sum();
    assert!(
        moved >= 6,
        "the dead instance's clients moved over ({moved})"
    );
    for (i, watcher) in watchers.iter().enumerate() {
        let ledger = watcher.wait_for("failover", highest).await;
        assert_eq!(ledger.losses, 0, "watcher {i} resumed exactly every time");
        assert_eq!(
            ledger.verdict(1, highest),
            Verdict::default(),
            "watcher {i}"
        );
    }
    drop(nodes);
}

/// The publisher's instance sequenced the publish but the ack never reached the
/// publisher; it retries on another instance with the same key: one delivery, same seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_on_another_instance_is_delivered_once() {
    let redis = RedisServer::start().await;
    let mut nodes = instances(&redis.url(), 2).await;
    let mut watcher = TestClient::connect(&nodes[1].url(), Encoding::Json).await;
    watcher.subscribe("payments", None).await;

    let mut doomed = Connection::connect(&nodes[0].url(), Some(Encoding::MsgPack))
        .await
        .unwrap();
    doomed.next_frame(WAIT).await.unwrap(); // welcome
    doomed
        .send(&ClientFrame::Publish {
            id: Some(1),
            room: "payments".into(),
            data: json!({"amount": 10}),
            key: Some("payment-7".into()),
        })
        .await
        .unwrap();
    // It was sequenced (the other instance delivers it)...
    let (_, epoch, seq, _) = watcher.message().await;
    // ...but its instance dies before the publisher reads the ack.
    nodes[0].signal("KILL");
    let _ = nodes[0].wait(Duration::from_secs(10)).await;
    drop(doomed);

    let mut retry = TestClient::connect(&nodes[1].url(), Encoding::Json).await;
    let (ack, duplicate, _) = retry
        .publish("payments", json!({"amount": 10}), Some("payment-7"))
        .await;
    assert!(duplicate);
    assert_eq!(ack, Position::new(epoch, seq));
    assert_eq!(
        watcher.maybe_next(Duration::from_millis(500)).await,
        None,
        "delivered once"
    );
}

/// Redis stops answering (SIGSTOP) mid-stream: publishes fail fast instead of hanging or
/// acking falsely, instances report not ready, and after SIGCONT everything acked is
/// delivered exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_fails_publishes_fast_and_nothing_is_lost() {
    const MESSAGES: u64 = 120;
    let redis = RedisServer::start().await;
    let nodes = instances(&redis.url(), 2).await;
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let watcher = Watcher::start(vec![b.clone()], &["ticks"], Encoding::MsgPack).await;
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(
        vec![a.clone()],
        "ticks",
        MESSAGES,
        Duration::from_millis(10),
        progress.clone(),
    );
    wait_progress(&progress, MESSAGES / 3).await;

    redis.signal("STOP");
    let mut probe = TestClient::connect(&a, Encoding::Json).await;
    let started = tokio::time::Instant::now();
    probe
        .send(ClientFrame::Publish {
            id: Some(1),
            room: "ticks".into(),
            data: json!("during the pause"),
            key: None,
        })
        .await;
    match probe.next().await {
        ServerFrame::Error { code, .. } => assert!(code.is_temporary(), "{code:?}"),
        other => panic!("a publish during the pause must fail, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast: {:?}",
        started.elapsed()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http_get(&nodes[0].addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not-ready never reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.signal("CONT");

    let highest = publisher.await.unwrap();
    wait_ready(&nodes[0].addr).await;
    let ledger = watcher.wait_for("ticks", highest).await;
    assert_eq!(ledger.verdict(1, highest), Verdict::default());
    assert_eq!(ledger.losses, 0);
}

/// Hard case 11: Redis stops answering while a connection has many publishes queued to
/// one room. The first waits out the command timeout; the others are refused at once
/// (the node's circuit is open), so every one is answered within about one command
/// timeout instead of one timeout each. After Redis returns, each is retried with its
/// key and delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_publishes_are_all_answered_fast_while_redis_is_stalled() {
    const QUEUED: u64 = 12;
    let redis = RedisServer::start().await;
    let mut env = vec![
        ("ROOMCAST_REDIS_URL", redis.url()),
        ("ROOMCAST_REDIS__COMMAND_TIMEOUT_MS", "500".to_owned()),
    ];
    env.extend(FAST_PROBES.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = RoomcastProcess::start(&env).await;
    wait_ready(&node.addr).await;
    let mut watcher = TestClient::connect(&node.url(), Encoding::Json).await;
    watcher.subscribe("stalled", None).await;
    let mut publisher = TestClient::connect(&node.url(), Encoding::Json).await;

    redis.signal("STOP");
    let started = tokio::time::Instant::now();
    for n in 1..=QUEUED {
        publisher
            .send(ClientFrame::Publish {
                id: Some(n),
                room: "stalled".into(),
                data: json!(n),
                key: Some(format!("stall-{n}")),
            })
            .await;
    }
    let mut answered = Vec::new();
    while answered.len() < QUEUED as usize {
        match publisher.next().await {
            ServerFrame::Error { id, code, .. } => {
                assert!(code.is_temporary(), "{code:?}");
                answered.push(id.unwrap());
            }
            other => panic!("nothing may be acked while Redis is stopped: {other:?}"),
        }
    }
    let all_answered = started.elapsed();
    // One command timeout (500 ms) for the first, the rest at once: far below the
    // 12 × 500 ms that answering them one timeout each would take.
    assert!(
        all_answered < Duration::from_millis(2500),
        "every queued publish answered after {all_answered:?}"
    );
    let metrics = crate::support::http_get(&node.addr, "/metrics").await;
    let refused = crate::support::metric(&metrics, "roomcast_broker_fast_failures_total");
    assert!(
        refused >= (QUEUED - 1) as f64,
        "the publishes behind the first were refused fast, and counted: {refused}"
    );
    redis.signal("CONT");
    wait_ready(&node.addr).await;

    // Retried with the same keys: each delivered once, in order.
    for n in 1..=QUEUED {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            publisher
                .send(ClientFrame::Publish {
                    id: Some(100 + n),
                    room: "stalled".into(),
                    data: json!(n),
                    key: Some(format!("stall-{n}")),
                })
                .await;
            match publisher.next().await {
                ServerFrame::Ack { .. } => break,
                ServerFrame::Error { code, .. } if code.is_temporary() => {
                    assert!(tokio::time::Instant::now() < deadline, "never acked");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for n in 1..=QUEUED {
        let (_, _, seq, data) = watcher.message().await;
        assert_eq!((seq, data), (n, json!(n)));
    }
    assert!(
        watcher
            .maybe_next(Duration::from_millis(300))
            .await
            .is_none(),
        "no duplicate"
    );
}

/// Redis comes back empty: subscribed clients are told at once (a `reset` with a new
/// epoch), new messages flow in the new epoch, and a resume from the old epoch reports
/// `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_restart_moves_rooms_to_a_new_epoch() {
    let mut redis = RedisServer::start().await;
    let nodes = instances(&redis.url(), 2).await;
    let mut watcher = TestClient::connect(&nodes[1].url(), Encoding::Json).await;
    watcher.subscribe("news", None).await;
    let mut publisher = TestClient::connect(&nodes[0].url(), Encoding::Json).await;
    for n in 1..=3 {
        publisher.publish("news", json!(n), None).await;
    }
    let (_, old_epoch, _, _) = watcher.message().await;
    watcher.message().await;
    watcher.message().await;

    redis.restart_empty().await;
    expect_reset(&mut watcher, &old_epoch).await;
    let new_epoch = publish_after_recovery(&nodes[0].url(), "news").await;
    assert_ne!(new_epoch, old_epoch);
    let (_, epoch, seq, _) = watcher.message().await;
    assert_eq!((epoch, seq), (new_epoch, 1));

    let mut late = TestClient::connect(&nodes[1].url(), Encoding::Json).await;
    let resumed = late
        .subscribe("news", Some(Position::new(old_epoch, 3)))
        .await;
    assert!(!resumed.recovered);
}

/// Redis comes back from an older snapshot — same keys, lower sequence numbers. Without
/// a new epoch, new messages would reuse sequence numbers that clients already saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restored_from_an_older_snapshot_does_not_reuse_sequence_numbers() {
    let mut redis = RedisServer::start().await;
    let nodes = instances(&redis.url(), 2).await;
    let mut watcher = TestClient::connect(&nodes[1].url(), Encoding::Json).await;
    watcher.subscribe("ledger", None).await;
    let mut publisher = TestClient::connect(&nodes[0].url(), Encoding::Json).await;
    for n in 1..=5 {
        publisher.publish("ledger", json!(n), None).await;
    }
    assert_eq!(redis.cli(&["SAVE"]).await.as_deref(), Some("OK"));
    for n in 6..=10 {
        publisher.publish("ledger", json!(n), None).await;
    }
    let mut epoch = None;
    for expected in 1..=10 {
        let (_, e, seq, _) = watcher.message().await;
        assert_eq!(seq, expected);
        epoch = Some(e);
    }
    let old_epoch = epoch.unwrap();

    redis.restart().await; // SIGKILL, then load the snapshot taken at seq 5
    let meta = redis.cli(&["HGET", "rc:{ledger}:meta", "seq"]).await;
    assert!(
        matches!(meta.as_deref(), Some("5") | Some("0")),
        "older data is back: {meta:?}"
    );
    // The publish library came back with the snapshot too: the new epoch must come from
    // the new process reading its own run id, not from a library loaded afresh.
    let libraries = redis.cli(&["FUNCTION", "LIST"]).await.unwrap_or_default();
    assert!(
        libraries.contains("roomcast_publish"),
        "the snapshot holds the publish library: {libraries}"
    );

    expect_reset(&mut watcher, &old_epoch).await;
    let new_epoch = publish_after_recovery(&nodes[0].url(), "ledger").await;
    assert_ne!(
        new_epoch, old_epoch,
        "no sequence number of the old epoch is reused"
    );
    let (_, epoch, seq, _) = watcher.message().await;
    assert_eq!((epoch, seq), (new_epoch, 1));

    let mut late = TestClient::connect(&nodes[0].url(), Encoding::Json).await;
    let resumed = late
        .subscribe("ledger", Some(Position::new(old_epoch, 10)))
        .await;
    assert!(!resumed.recovered);
}

/// Waits for the `reset` that tells a live subscriber its room lost continuity.
pub(crate) async fn expect_reset(watcher: &mut TestClient, old_epoch: &roomcast::stream::Epoch) {
    match tokio::time::timeout(
        Duration::from_secs(20),
        watcher.conn.next_frame(Duration::from_secs(20)),
    )
    .await
    .expect("a reset arrives")
    .expect("a frame")
    {
        ServerFrame::Reset { epoch, reason, .. } => {
            assert_ne!(&epoch, old_epoch);
            assert_eq!(reason, "epoch_changed");
        }
        other => panic!("expected reset, got {other:?}"),
    }
}

/// Publishes once Redis answers again; returns the epoch of the ack.
async fn publish_after_recovery(url: &str, room: &str) -> roomcast::stream::Epoch {
    let mut client = TestClient::connect(url, Encoding::Json).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        client
            .send(ClientFrame::Publish {
                id: Some(1),
                room: room.into(),
                data: json!("after"),
                key: Some("after-recovery".into()),
            })
            .await;
        match client.next().await {
            ServerFrame::Ack { epoch, .. } => return epoch,
            ServerFrame::Error { code, .. } if code.is_temporary() => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Redis never came back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A 3-master Redis Cluster: sharded Pub/Sub, rooms spread over slots, two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_rooms_through_sharded_pubsub() {
    const EACH: u64 = 20;
    let cluster = RedisCluster::start().await;
    let nodes = instances(&cluster.url(), 2).await;
    let rooms: Vec<String> = (0..8).map(|i| format!("room-{i}")).collect();
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let watchers = [
        Watcher::start(vec![nodes[0].url()], &room_refs, Encoding::MsgPack).await,
        Watcher::start(vec![nodes[1].url()], &room_refs, Encoding::Json).await,
    ];
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, node) in nodes.iter().enumerate() {
        let url = node.url();
        let rooms = rooms.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut client = TestClient::connect(&url, Encoding::MsgPack).await;
            for n in 0..EACH {
                for room in &rooms {
                    client.publish(room, json!({"i": i, "n": n}), None).await;
                }
            }
            tx.send(()).unwrap();
        });
    }
    drop(tx);
    while rx.recv().await.is_some() {}
    for watcher in &watchers {
        for room in &rooms {
            let ledger = watcher.wait_for(room, 2 * EACH).await;
            assert_eq!(ledger.verdict(1, 2 * EACH), Verdict::default(), "{room}");
        }
    }
    // The rooms' channels are sharded channels, spread over the masters.
    let mut sharded = 0;
    for node in &cluster.nodes {
        let channels = node
            .cli(&["PUBSUB", "SHARDCHANNELS"])
            .await
            .unwrap_or_default();
        sharded += channels.lines().filter(|l| l.contains(":ch")).count();
    }
    assert!(sharded >= rooms.len(), "sharded channels: {sharded}");
}

/// Hard case 7: the last local subscriber leaves and comes back at once, over and over,
/// while the room's actor stops (no linger) and unsubscribes from Redis: no message is
/// lost at the seams, and no Redis subscription leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_unsubscribe_and_resubscribe_lose_nothing_and_leak_nothing() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let node = RoomcastProcess::start(&[
        ("ROOMCAST_REDIS_URL", url.as_str()),
        ("ROOMCAST_ROOMS__LINGER_MS", "0"),
    ])
    .await;
    wait_ready(&node.addr).await;
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(
        vec![node.url()],
        "flap",
        300,
        Duration::from_millis(2),
        progress.clone(),
    );

    let mut client = TestClient::connect(&node.url(), Encoding::Json).await;
    let first = client.subscribe("flap", None).await;
    let mut position = first.position.clone();
    let mut seen = Vec::new();
    for round in 0..40u64 {
        for _ in 0..(round % 5) {
            if let Some(ServerFrame::Message { seq, .. }) =
                client.maybe_next(Duration::from_millis(500)).await
            {
                seen.push(seq);
                position.seq = seq;
            }
        }
        client
            .send(ClientFrame::Unsubscribe {
                id: Some(1_000 + round),
                room: "flap".into(),
            })
            .await;
        loop {
            match client.next().await {
                ServerFrame::Message { seq, .. } => {
                    seen.push(seq);
                    position.seq = seq;
                }
                ServerFrame::Unsubscribed { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let resumed = client.subscribe("flap", Some(position.clone())).await;
        assert!(resumed.recovered, "round {round}");
    }
    let highest = publisher.await.unwrap();
    while position.seq < highest {
        let (_, _, seq, _) = client.message().await;
        seen.push(seq);
        position.seq = seq;
    }
    assert_eq!(seen, (first.position.seq + 1..=highest).collect::<Vec<_>>());

    let numsub = async |redis: &RedisServer| {
        let reply = redis
            .cli(&["PUBSUB", "NUMSUB", "rc:{flap}:ch"])
            .await
            .unwrap_or_default();
        reply.lines().last().unwrap_or("").trim().to_owned()
    };
    assert_eq!(
        numsub(&redis).await,
        "1",
        "one subscription while subscribed"
    );
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while numsub(&redis).await != "0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Redis subscription leaked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Pub/Sub connection dies silently (established socket, nothing arrives): the
/// probe notices, the connection is replaced, and the room fills what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_pubsub_connection_is_detected_and_replaced() {
    let redis = RedisServer::start().await;
    let proxy = crate::support::proxy::SilencingProxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let mut env = vec![("ROOMCAST_REDIS_URL", url.as_str())];
    env.extend(FAST_PROBES);
    let mut node = RoomcastProcess::start(&env).await;
    wait_ready(&node.addr).await;
    let watcher = Watcher::start(vec![node.url()], &["quiet-death"], Encoding::MsgPack).await;
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(
        vec![node.url()],
        "quiet-death",
        100,
        Duration::from_millis(20),
        progress.clone(),
    );
    wait_progress(&progress, 20).await;

    proxy.silence_pubsub();
    node.wait_for_log("no probe received", Duration::from_secs(10))
        .await;

    let highest = publisher.await.unwrap();
    let ledger = watcher.wait_for("quiet-death", highest).await;
    assert_eq!(ledger.verdict(1, highest), Verdict::default());
    assert_eq!(ledger.losses, 0);
}

/// A drain (SIGTERM) of one of two instances under load: its clients are told to
/// reconnect, closed with 1012 over the drain window, resume on the other instance with
/// nothing lost or repeated, and the drained instance exits cleanly before its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_instance_hands_its_clients_over_without_loss() {
    const MESSAGES: u64 = 150;
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut env = vec![
        ("ROOMCAST_REDIS_URL", url.as_str()),
        ("ROOMCAST_DRAIN__WINDOW_MS", "1000"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "10000"),
    ];
    env.extend(FAST_PROBES);
    let mut a = RoomcastProcess::start(&env).await;
    let b = RoomcastProcess::start(&env).await;
    wait_ready(&a.addr).await;
    wait_ready(&b.addr).await;
    let (a_url, b_url) = (a.url(), b.url());
    let mut watchers = Vec::new();
    for i in 0..10 {
        let urls = if i % 2 == 0 {
            vec![a_url.clone(), b_url.clone()]
        } else {
            vec![b_url.clone(), a_url.clone()]
        };
        watchers.push(Watcher::start(urls, &["deploy"], Encoding::MsgPack).await);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let publishers = [
        spawn_publisher(
            vec![a_url.clone(), b_url.clone()],
            "deploy",
            MESSAGES,
            Duration::from_millis(5),
            progress.clone(),
        ),
        spawn_publisher(
            vec![b_url.clone(), a_url.clone()],
            "deploy",
            MESSAGES,
            Duration::from_millis(5),
            progress.clone(),
        ),
    ];
    wait_progress(&progress, MESSAGES / 2).await;
    let started = tokio::time::Instant::now();
    a.signal("TERM");
    assert_eq!(
        a.wait(Duration::from_secs(15)).await,
        Some(0),
        "a clean exit"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "before the deadline"
    );

    let mut highest = 0;
    for publisher in publishers {
        highest = highest.max(publisher.await.unwrap());
    }
    let told = closed_with(&watchers, 1012);
    assert!(
        told >= 5,
        "the drained instance's clients were closed with 1012 ({told})"
    );
    assert_complete(&watchers, "deploy", highest).await;
}

/// How many connections of `watchers` were closed with `code`.
pub(crate) fn closed_with(watchers: &[Watcher], code: u16) -> usize {
    watchers
        .iter()
        .map(|w| {
            let closes = w.closes.lock().unwrap();
            closes.iter().filter(|c| **c == Some(code)).count()
        })
        .sum()
}

/// Every watcher got `room` from seq 1 to `highest`, once each, in order, nothing lost.
pub(crate) async fn assert_complete(watchers: &[Watcher], room: &str, highest: u64) {
    for (i, watcher) in watchers.iter().enumerate() {
        let ledger = watcher.wait_for(room, highest).await;
        assert_eq!(ledger.losses, 0, "watcher {i}");
        assert_eq!(
            ledger.verdict(1, highest),
            Verdict::default(),
            "watcher {i}"
        );
    }
}
