//! Presence across instances (issue 18): 2 roomcast processes on one Redis. Sets agree
//! on both instances, join/leave events cross instances, a killed instance's entries
//! expire within the TTL with leave events, a drain removes them before exit, a Redis
//! restart is healed by the next heartbeat, and a reconnect storm of 1,000 clients
//! produces a bounded number of presence frames.

use super::support::process::RoomcastProcess;
use super::support::redis::RedisServer;
use super::support::{TestClient, WAIT};
use roomcast::client::{ClientError, Connection};
use roomcast::presence::PresenceEntry;
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

const HEARTBEAT_MS: u64 = 300;
const TTL_MS: u64 = 900;
const WINDOW_MS: u64 = 100;

async fn instance(redis: &RedisServer, node: &str, extra: &[(&str, &str)]) -> RoomcastProcess {
    let url = redis.url();
    let heartbeat = HEARTBEAT_MS.to_string();
    let ttl = TTL_MS.to_string();
    let window = WINDOW_MS.to_string();
    let mut env = vec![
        ("ROOMCAST_REDIS_URL", url.as_str()),
        ("ROOMCAST_NODE_ID", node),
        ("ROOMCAST_PRESENCE__ROOMS", "issue:*,team:**"),
        ("ROOMCAST_PRESENCE__HEARTBEAT_MS", heartbeat.as_str()),
        ("ROOMCAST_PRESENCE__TTL_MS", ttl.as_str()),
        ("ROOMCAST_PRESENCE__WINDOW_MS", window.as_str()),
        ("ROOMCAST_DRAIN__WINDOW_MS", "200"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "5000"),
        ("ROOMCAST_CONNECTION__MAX_CONNECTIONS_PER_USER", "5000"),
    ];
    // Later entries win: a test may override the timings.
    env.extend_from_slice(extra);
    let process = RoomcastProcess::start(&env).await;
    super::support::wait_ready(&process.addr).await;
    process
}

/// A client in a room's presence set, tracking the set from its presence frames.
struct Member {
    client: TestClient,
    set: HashMap<String, PresenceEntry>,
    diffs: usize,
}

impl Member {
    /// Connects and subscribes to `room` with `info`; with `events`, reads the snapshot.
    async fn join(url: &str, room: &str, events: bool, info: Value) -> Member {
        let mut client = TestClient::connect(url, Encoding::Json).await;
        client
            .send(ClientFrame::Subscribe {
                id: Some(1),
                room: room.into(),
                since: None,
                presence: events,
                info: Some(info),
                delta: None,
                compress: None,
            })
            .await;
        let mut member = Member {
            client,
            set: HashMap::new(),
            diffs: 0,
        };
        match member.client.next().await {
            ServerFrame::Subscribed { .. } => {}
            other => panic!("expected subscribed, got {other:?}"),
        }
        if events {
            match member.client.next().await {
                ServerFrame::Presence {
                    id: None, clients, ..
                } => member.set = clients.into_iter().map(|e| (e.conn.clone(), e)).collect(),
                other => panic!("expected the presence snapshot, got {other:?}"),
            }
        }
        member
    }

    fn apply(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::PresenceDiff { joins, leaves, .. } => {
                self.diffs += 1;
                for entry in leaves {
                    self.set.remove(&entry.conn);
                }
                for entry in joins {
                    self.set.insert(entry.conn.clone(), entry);
                }
            }
            // A Redis restart changes the room's epoch: not presence's business here.
            ServerFrame::Reset { .. } | ServerFrame::Message { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }

    /// Applies presence frames until `condition` holds on the set; fails after `within`.
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        condition: impl Fn(&HashMap<String, PresenceEntry>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !condition(&self.set) {
            let left = within.saturating_sub(start.elapsed());
            match self.client.maybe_next(left).await {
                Some(frame) => self.apply(frame),
                None => panic!("timed out waiting for {what}; set: {:?}", self.set.keys()),
            }
        }
        start.elapsed()
    }

    /// The set through a `presence` query.
    async fn query(&mut self, room: &str) -> Vec<PresenceEntry> {
        self.client
            .send(ClientFrame::Presence {
                id: Some(77),
                room: room.into(),
            })
            .await;
        loop {
            match self.client.next().await {
                ServerFrame::Presence {
                    id: Some(77),
                    clients,
                    ..
                } => return clients,
                other => self.apply(other),
            }
        }
    }
}

/// `GET path` on `addr`; the JSON body.
async fn http_json(addr: &str, path: &str) -> Value {
    let response = super::support::http_get(addr, path).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    let body = response.split_once("\r\n\r\n").expect("a body").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

async fn stats(addr: &str, room: &str) -> (u64, u64) {
    let body = http_json(addr, &format!("/api/v1/rooms/{room}/presence/stats")).await;
    (
        body["clients"].as_u64().unwrap(),
        body["users"].as_u64().unwrap(),
    )
}

/// Polls the HTTP stats of `room` on `addr` until they are `expected`.
async fn stats_become(addr: &str, room: &str, expected: (u64, u64), within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        // Right after a Redis restart the answer may be a 503 for a moment.
        let path = format!("/api/v1/rooms/{room}/presence/stats");
        let response = super::support::http_get(addr, &path).await;
        let got = response
            .split_once("\r\n\r\n")
            .filter(|_| response.starts_with("HTTP/1.1 200"))
            .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .map(|v| (v["clients"].as_u64().unwrap(), v["users"].as_u64().unwrap()));
        if got == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stats of {room} on {addr}: {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn conns(entries: &[PresenceEntry]) -> Vec<String> {
    let mut conns: Vec<String> = entries.iter().map(|e| e.conn.clone()).collect();
    conns.sort();
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_the_same_from_both_instances_and_events_cross_them() {
    let redis = RedisServer::start().await;
    let a = instance(&redis, "inst-a", &[]).await;
    let b = instance(&redis, "inst-b", &[]).await;
    let room = "issue:1";

    let mut watcher = Member::join(&b.url(), room, true, json!({"name": "watcher"})).await;
    assert_eq!(
        watcher.set.len(),
        1,
        "the snapshot holds the watcher itself"
    );
    let mine = watcher.set.values().next().unwrap().clone();
    assert_eq!(
        (mine.node.as_str(), &mine.info),
        ("inst-b", &Some(json!({"name": "watcher"})))
    );
    assert!(mine.user.starts_with("anonymous:"));

    let mut other = Member::join(&a.url(), room, false, json!({"name": "ana"})).await;
    let other_conn = other.client.session.clone();
    watcher
        .until("the join from the other instance", WAIT, |set| {
            set.get(&other_conn)
                .is_some_and(|e| e.node == "inst-a" && e.info == Some(json!({"name": "ana"})))
        })
        .await;

    // The same set from both instances, over WebSocket and HTTP.
    let from_a = other.query(room).await;
    let from_b = watcher.query(room).await;
    assert_eq!(conns(&from_a), conns(&from_b));
    assert_eq!(from_a.len(), 2);
    for addr in [&a.addr, &b.addr] {
        let body = http_json(addr, &format!("/api/v1/rooms/{room}/presence")).await;
        let clients: Vec<PresenceEntry> = serde_json::from_value(body["clients"].clone()).unwrap();
        assert_eq!(conns(&clients), conns(&from_a));
        assert_eq!(stats(addr, room).await, (2, 2));
    }

    // A leave on A reaches the watcher on B.
    other
        .client
        .send(ClientFrame::Unsubscribe {
            id: Some(9),
            room: room.into(),
        })
        .await;
    assert!(matches!(
        other.client.next().await,
        ServerFrame::Unsubscribed { .. }
    ));
    watcher
        .until("the leave from the other instance", WAIT, |set| {
            !set.contains_key(&other_conn)
        })
        .await;
    assert_eq!(stats(&b.addr, room).await, (1, 1));

    // Rooms without presence refuse the query; the subscribe flag is refused there too.
    let response = super::support::http_get(&a.addr, "/api/v1/rooms/lobby/presence").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    other
        .client
        .expect_error(
            ClientFrame::PresenceStats {
                id: Some(3),
                room: "lobby".into(),
            },
            roomcast::protocol::ErrorCode::InvalidFrame,
        )
        .await;
    // An `info` above the bound is refused before subscribing.
    other
        .client
        .expect_error(
            ClientFrame::Subscribe {
                id: Some(4),
                room: "issue:2".into(),
                since: None,
                presence: false,
                info: Some(json!({"pad": "x".repeat(300)})),
                delta: None,
                compress: None,
            },
            roomcast::protocol::ErrorCode::InvalidFrame,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_no_ghosts_beyond_the_ttl() {
    let redis = RedisServer::start().await;
    let a = instance(&redis, "inst-a", &[]).await;
    let b = instance(&redis, "inst-b", &[]).await;
    let room = "team:core:x";
    let mut watcher = Member::join(&b.url(), room, true, json!(null)).await;
    let mut doomed = Vec::new();
    for i in 0..3 {
        doomed.push(Member::join(&a.url(), room, false, json!({"i": i})).await);
    }
    watcher
        .until("three joins from A", WAIT, |set| set.len() == 4)
        .await;
    a.signal("KILL");
    let gone = watcher
        .until(
            "the killed instance's leaves",
            Duration::from_millis(TTL_MS + 5_000),
            |set| set.values().all(|e| e.node == "inst-b"),
        )
        .await;
    // Entries expire at most TTL after the last heartbeat (itself before the kill);
    // the leave is sent at the next window after that. Allow scheduling slack.
    let bound = Duration::from_millis(TTL_MS + WINDOW_MS + 1_000);
    assert!(gone <= bound, "ghosts lasted {gone:?} (bound {bound:?})");
    assert_eq!(stats(&b.addr, room).await, (1, 1));
    assert_eq!(conns(&watcher.query(room).await).len(), 1);
    drop(doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_removes_the_instance_entries_before_it_exits() {
    let redis = RedisServer::start().await;
    // A long TTL: what goes must go by removal, not by expiry.
    let slow = [
        ("ROOMCAST_PRESENCE__HEARTBEAT_MS", "20000"),
        ("ROOMCAST_PRESENCE__TTL_MS", "60000"),
    ];
    let mut a = instance(&redis, "inst-a", &slow).await;
    let b = instance(&redis, "inst-b", &slow).await;
    let room = "issue:7";
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::join(&a.url(), room, false, json!(null)).await);
    }
    let _watcher = Member::join(&b.url(), room, true, json!(null)).await;
    assert_eq!(stats(&b.addr, room).await, (4, 4));
    a.signal("TERM");
    assert_eq!(a.wait(Duration::from_secs(15)).await, Some(0));
    // Right after the exit (no wait): only B's client is left.
    assert_eq!(stats(&b.addr, room).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_healed_by_the_next_heartbeat() {
    let mut redis = RedisServer::start().await;
    let a = instance(&redis, "inst-a", &[]).await;
    let b = instance(&redis, "inst-b", &[]).await;
    let room = "issue:3";
    let _on_a = Member::join(&a.url(), room, false, json!(null)).await;
    let mut on_b = Member::join(&b.url(), room, true, json!(null)).await;
    on_b.until("both entries", WAIT, |set| set.len() == 2).await;
    redis.restart_empty().await;
    // Rebuilt from the live connections of both instances.
    stats_become(&a.addr, room, (2, 2), WAIT).await;
    stats_become(&b.addr, room, (2, 2), WAIT).await;
    // The watcher's view comes back to both live clients (had a window read the empty
    // set between the restart and the heartbeat, it saw them leave and join again).
    assert_eq!(on_b.query(room).await.len(), 2);
    on_b.until("the rebuilt set", WAIT, |set| set.len() == 2)
        .await;
}

/// What one storm client saw.
struct StormReport {
    /// `presence_diff` frames received on the new instance until its view settled.
    diffs: usize,
    /// `presence` snapshots received there.
    snapshots: usize,
    /// The connection to B, kept open until the test is done.
    _conn: Connection,
}

/// One client of the storm: subscribed with events on A until `ready` is counted, then
/// (A killed) reconnects to B and counts its presence frames until its view is `n`
/// entries, all on B.
async fn storm_client(
    a: String,
    b: String,
    room: &'static str,
    n: usize,
    ready: std::sync::Arc<tokio::sync::Semaphore>,
) -> StormReport {
    let subscribe = ClientFrame::Subscribe {
        id: Some(1),
        room: room.into(),
        since: None,
        presence: true,
        info: None,
        delta: None,
        compress: None,
    };
    let mut first = Connection::connect(&a, Some(Encoding::MsgPack))
        .await
        .expect("connects to A");
    first.send(&subscribe).await.unwrap();
    // welcome, subscribed, presence
    for _ in 0..3 {
        first.next_frame(WAIT).await.expect("a frame");
    }
    ready.add_permits(1);
    // Read (and drop) until A dies.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match first.next_frame(Duration::from_secs(1)).await {
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "A never went away");
    }
    let mut conn = Connection::connect(&b, Some(Encoding::MsgPack))
        .await
        .expect("connects to B");
    conn.send(&subscribe).await.unwrap();
    let mut set: HashMap<String, PresenceEntry> = HashMap::new();
    let (mut diffs, mut snapshots) = (0, 0);
    let settled = |set: &HashMap<String, PresenceEntry>| {
        set.len() == n && set.values().all(|e| e.node == "inst-b")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if snapshots > 0 && settled(&set) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_frame(left).await.expect("presence settles on B") {
            ServerFrame::Presence { clients, .. } => {
                snapshots += 1;
                set = clients.into_iter().map(|e| (e.conn.clone(), e)).collect();
            }
            ServerFrame::PresenceDiff { joins, leaves, .. } => {
                diffs += 1;
                for e in leaves {
                    set.remove(&e.conn);
                }
                for e in joins {
                    set.insert(e.conn.clone(), e);
                }
            }
            _ => {}
        }
    }
    StormReport {
        diffs,
        snapshots,
        _conn: conn,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_1000_clients_sends_a_bounded_number_of_presence_frames() {
    const N: usize = 1000;
    let redis = RedisServer::start().await;
    let a = instance(&redis, "inst-a", &[]).await;
    let b = instance(&redis, "inst-b", &[]).await;
    let room = "issue:storm";
    let ready = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..N {
        tasks.push(tokio::spawn(storm_client(
            a.url(),
            b.url(),
            room,
            N,
            ready.clone(),
        )));
    }
    tokio::time::timeout(Duration::from_secs(120), ready.acquire_many(N as u32))
        .await
        .expect("every client subscribed on A")
        .unwrap()
        .forget();
    stats_become(&b.addr, room, (N as u64, N as u64), Duration::from_secs(30)).await;
    let storm = Instant::now();
    a.signal("KILL");
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("storm client"));
    }
    let took = storm.elapsed();
    let diffs: usize = reports.iter().map(|r| r.diffs).sum();
    let snapshots: usize = reports.iter().map(|r| r.snapshots).sum();
    let most = reports.iter().map(|r| r.diffs).max().unwrap();
    // The bound: per client one snapshot, and at most one diff per window while the
    // storm lasts (plus one for a window cut in two).
    let windows = (took.as_millis() as u64).div_ceil(WINDOW_MS) as usize + 1;
    println!(
        "storm of {N}: settled in {took:?}; {snapshots} snapshots, {diffs} diffs \
         (at most {most} per client; bound {windows} per client); N² would be {}",
        N * N
    );
    assert_eq!(snapshots, N);
    assert!(
        most <= windows,
        "a client got {most} diffs in {windows} windows"
    );
    assert!(diffs <= N * windows);
    assert!(
        diffs + snapshots < N * N / 20,
        "{diffs} diffs is not far below N²"
    );
    stats_become(&b.addr, room, (N as u64, N as u64), WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_follows_presence_on_the_embedded_broker() {
    use roomcast::client::{Client, ClientConfig, Event};
    let server = super::support::TestServer::with(|config| {
        config.presence.rooms = vec!["issue:*".into()];
        config.presence.window_ms = 50;
    })
    .await;
    let (client, mut events) = Client::start(ClientConfig::new(server.url.clone()));
    client
        .subscribe_with_presence("issue:5", Some(json!({"name": "svc"})))
        .await
        .expect("subscribes");
    let mut next_presence = async || loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event")
        {
            Some(event @ (Event::Presence { .. } | Event::PresenceDiff { .. })) => return event,
            Some(_) => continue,
            None => panic!("client stopped"),
        }
    };
    match next_presence().await {
        Event::Presence { room, clients } => {
            assert_eq!(room, "issue:5");
            assert_eq!(clients.len(), 1);
            assert_eq!(clients[0].info, Some(json!({"name": "svc"})));
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
    let other = Member::join(&server.url, "issue:5", false, json!(null)).await;
    match next_presence().await {
        Event::PresenceDiff { joins, leaves, .. } => {
            assert_eq!(joins.len(), 1);
            assert_eq!(joins[0].conn, other.client.session);
            assert!(leaves.is_empty());
        }
        other => panic!("expected a diff, got {other:?}"),
    }
    let stats = client.presence_stats("issue:5").await.expect("stats");
    assert_eq!((stats.clients, stats.users), (2, 2));
    assert_eq!(client.presence("issue:5").await.expect("entries").len(), 2);
    drop(other);
    match next_presence().await {
        Event::PresenceDiff { joins, leaves, .. } => {
            assert!(joins.is_empty());
            assert_eq!(leaves.len(), 1);
        }
        other => panic!("expected a diff, got {other:?}"),
    }
    match client.presence("lobby").await {
        Err(ClientError::Server { code, .. }) => {
            assert_eq!(code, roomcast::protocol::ErrorCode::InvalidFrame)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.stop().await;
    server.stop().await;
}
