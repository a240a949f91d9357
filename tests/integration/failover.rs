//! A Redis Cluster with replicas changes the owner of a room's slot under a steady
//! publisher and subscribers on three instances: a graceful `CLUSTER FAILOVER`, `kill -9`
//! of a master, a lagging replica promoted, and a slot migrated to another master.
//!
//! Each scenario checks, for every subscriber and room: no position delivered twice, no
//! gap inside an epoch and no change of epoch without an explicit `reset` or unrecovered
//! resume before it, every message of the final epoch delivered from its seq 1, the
//! content at every position the one that was acknowledged there (no reused position),
//! every instance subscribed again to the moved channels on their new master, and every
//! instance ready again within the stated bound.

use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisCluster;
use crate::support::{http_get, wait_ready};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::protocol::Encoding;
use roomcast::stream::Epoch;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rooms: enough that every master serves some.
const ROOMS: usize = 9;
/// Instances of roomcast.
const INSTANCES: usize = 3;
/// How long the cluster may take to be served again after the fault (failure
/// detection, promotion, slot-map read, resubscription), as docs/cluster.md states.
const RECOVERY: Duration = Duration::from_secs(15);

/// One failover scenario at a time (these and the Sentinel ones): each runs several
/// Redis processes and instances.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone)]
pub(crate) enum Seen {
    Message {
        epoch: Epoch,
        seq: u64,
        n: u64,
    },
    /// A `reset` or an unrecovered resume: continuity broke here, explicitly.
    Loss {
        epoch: Epoch,
        seq: u64,
    },
}

/// What one subscriber received, per room, in order.
pub(crate) type Journal = Arc<Mutex<HashMap<String, Vec<Seen>>>>;

/// A resilient subscriber of every room on one instance.
pub(crate) async fn subscriber(
    url: String,
    rooms: &[String],
    encoding: Encoding,
) -> (Client, Journal) {
    let mut config = ClientConfig::new(url.clone());
    config.encoding = encoding;
    let (client, mut events) = Client::start(config);
    let journal: Journal = Default::default();
    let recorded = journal.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let (room, seen) = match event {
                Event::Message {
                    room,
                    epoch,
                    seq,
                    data,
                    ..
                } => (
                    room,
                    Seen::Message {
                        epoch,
                        seq,
                        n: data["n"].as_u64().unwrap(),
                    },
                ),
                Event::Reset { room, position, .. } => (
                    room,
                    Seen::Loss {
                        epoch: position.epoch,
                        seq: position.seq,
                    },
                ),
                Event::Subscribed {
                    room,
                    position,
                    recovered: false,
                    resumed: true,
                    ..
                } => (
                    room,
                    Seen::Loss {
                        epoch: position.epoch,
                        seq: position.seq,
                    },
                ),
                _ => continue,
            };
            recorded.lock().unwrap().entry(room).or_default().push(seen);
        }
    });
    for room in rooms {
        client.subscribe(room).await.expect("subscribes");
    }
    (client, journal)
}

/// An acknowledged publish.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub(crate) n: u64,
    pub(crate) epoch: Epoch,
    pub(crate) seq: u64,
}

/// Publishes to every room in turn until stopped, retrying each message with its
/// idempotency key until it is acknowledged.
pub(crate) fn publisher(
    urls: Vec<String>,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<HashMap<String, Vec<Acked>>> {
    tokio::spawn(async move {
        let mut config = ClientConfig::new(urls[0].clone());
        config.urls = urls;
        config.request_timeout = Duration::from_secs(10);
        let (client, _events) = Client::start(config);
        let mut acks: HashMap<String, Vec<Acked>> = HashMap::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for room in &rooms {
                let key = format!("m-{n}");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let ack = loop {
                    match client
                        .publish(room, json!({ "n": n }), Some(key.clone()))
                        .await
                    {
                        Ok(ack) => break ack,
                        Err(err) => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "publish {n} to {room} never acknowledged: {err}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                acks.entry(room.clone()).or_default().push(Acked {
                    n,
                    epoch: ack.position.epoch,
                    seq: ack.position.seq,
                });
                n += 1;
                published.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        client.stop().await;
        acks
    })
}

/// The fault under test.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `CLUSTER FAILOVER` on the replica of the room's master.
    GracefulFailover,
    /// `kill -9` of the room's master; its replica takes over.
    KillMaster,
    /// The replica stops applying writes (`DEBUG SLEEP`) while the master acks more, then
    /// the master is killed: the promoted replica misses acked messages.
    LaggingReplicaPromoted,
    /// The room's slot is migrated to another master.
    MigrateSlot,
}

async fn run(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start_with_replicas().await;
    let traffic = Traffic::start(&cluster.url(), INSTANCES, ROOMS, 100).await;
    let (instances, rooms, published) = (&traffic.instances, &traffic.rooms, &traffic.published);
    let target_room = &rooms[0];
    let slot = cluster.keyslot(&format!("rc:{{{target_room}}}:ch")).await;
    let master = cluster.master_of(slot).await;

    // The fault.
    let new_owner = match fault {
        Fault::GracefulFailover => {
            let replica = cluster.replica_of(master).await;
            let answer = cluster.nodes[replica].cli(&["CLUSTER", "FAILOVER"]).await;
            assert_eq!(answer.as_deref(), Some("OK"));
            replica
        }
        Fault::KillMaster => {
            let replica = cluster.replica_of(master).await;
            cluster.nodes[master].kill().await;
            replica
        }
        Fault::LaggingReplicaPromoted => {
            let replica = cluster.replica_of(master).await;
            let sleeper = {
                let port = cluster.nodes[replica].port.to_string();
                tokio::spawn(async move {
                    tokio::process::Command::new("redis-cli")
                        .args(["-p", &port, "DEBUG", "SLEEP", "1.5"])
                        .output()
                        .await
                })
            };
            // The master acknowledges messages the sleeping replica does not have.
            let before = published.load(Ordering::Relaxed);
            wait_published(published, before + 20).await;
            cluster.nodes[master].kill().await;
            let _ = sleeper.await;
            replica
        }
        Fault::MigrateSlot => {
            let other = cluster
                .masters()
                .await
                .into_iter()
                .find(|&i| i != master)
                .expect("another master");
            cluster.migrate_slot(slot, master, other).await;
            other
        }
    };

    // Served again: the slot has its new owner, every instance is ready and subscribed
    // there to the room's channel.
    let deadline = tokio::time::Instant::now() + RECOVERY + Duration::from_secs(10);
    loop {
        if cluster.master_of_checked(slot).await == Some(new_owner) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not give slot {slot} to its new owner"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_at = tokio::time::Instant::now();
    let channel = format!("rc:{{{target_room}}}:ch");
    for instance in instances {
        wait_until(RECOVERY, "instance ready again", || async {
            http_get(&instance.addr, "/readyz")
                .await
                .starts_with("HTTP/1.1 200")
        })
        .await;
    }
    wait_until(
        RECOVERY,
        "every instance subscribed on the new owner",
        || async {
            let answer = cluster.nodes[new_owner]
                .cli(&["PUBSUB", "SHARDNUMSUB", &channel])
                .await
                .unwrap_or_default();
            answer.lines().nth(1).and_then(|n| n.trim().parse().ok()) == Some(INSTANCES)
        },
    )
    .await;
    let recovered_in = moved_at.elapsed();

    // Live again: more messages after the recovery, then stop and compare. The room's
    // slot changed owner, so its stream changed epoch, and every subscriber was told.
    let target_room = target_room.clone();
    traffic.finish(&format!("{fault:?}"), &[target_room]).await;
    println!(
        "{fault:?}: all instances served the moved slot {recovered_in:?} after it changed owner"
    );
}

/// Roomcast instances on one Redis, a subscriber of every room on each, and a publisher
/// through all of them.
pub(crate) struct Traffic {
    /// The instances.
    pub(crate) instances: Vec<RoomcastProcess>,
    /// The rooms.
    pub(crate) rooms: Vec<String>,
    /// Messages acknowledged so far.
    pub(crate) published: Arc<AtomicU64>,
    subscribers: Vec<(Client, Journal)>,
    stop: Arc<AtomicBool>,
    publishing: tokio::task::JoinHandle<HashMap<String, Vec<Acked>>>,
}

impl Traffic {
    /// Starts `instances` instances on `url` (probing every 200 ms), subscribers of
    /// `rooms` rooms on each (MessagePack and JSON in turn) and the publisher; returns
    /// once `warm_up` messages were acknowledged.
    pub(crate) async fn start(url: &str, instances: usize, rooms: usize, warm_up: u64) -> Traffic {
        let mut processes = Vec::new();
        for i in 0..instances {
            let node = format!("node-{i}");
            let process = RoomcastProcess::start(&[
                ("ROOMCAST_REDIS_URL", url),
                ("ROOMCAST_NODE_ID", node.as_str()),
                ("ROOMCAST_REDIS__PROBE_INTERVAL_MS", "200"),
                ("ROOMCAST_REDIS__PROBE_TIMEOUT_MS", "1000"),
                ("ROOMCAST_REDIS__RECONNECT_MAX_MS", "500"),
            ])
            .await;
            wait_ready(&process.addr).await;
            processes.push(process);
        }
        let rooms: Vec<String> = (0..rooms).map(|i| format!("room-{i}")).collect();
        let mut subscribers = Vec::new();
        for (i, instance) in processes.iter().enumerate() {
            let encoding = if i % 2 == 0 {
                Encoding::MsgPack
            } else {
                Encoding::Json
            };
            subscribers.push(subscriber(instance.url(), &rooms, encoding).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let urls: Vec<String> = processes.iter().map(RoomcastProcess::url).collect();
        let publishing = publisher(urls, rooms.clone(), stop.clone(), published.clone());
        wait_published(&published, warm_up).await;
        Traffic {
            instances: processes,
            rooms,
            published,
            subscribers,
            stop,
            publishing,
        }
    }

    /// Publishes two more messages per room, stops the publisher and checks every
    /// subscriber of every room against the acknowledgements (see [`check`]), and that
    /// every room of `changed` changed epoch and every subscriber was told. Returns the
    /// instances (still running) and the acknowledgements.
    pub(crate) async fn finish(
        self,
        what: &str,
        changed: &[String],
    ) -> (Vec<RoomcastProcess>, HashMap<String, Vec<Acked>>) {
        let after = self.published.load(Ordering::Relaxed);
        wait_published(&self.published, after + 2 * self.rooms.len() as u64).await;
        self.stop.store(true, Ordering::Relaxed);
        let acks = self.publishing.await.unwrap();
        for (i, (_, journal)) in self.subscribers.iter().enumerate() {
            for room in &self.rooms {
                let room_acks = &acks[room];
                let last = room_acks.last().unwrap();
                wait_until(Duration::from_secs(20), "subscriber caught up", || async {
                    journal.lock().unwrap().get(room).is_some_and(|seen| {
                        seen.iter().any(|s| matches!(s, Seen::Message { epoch, seq, .. } if *epoch == last.epoch && *seq == last.seq))
                    })
                })
                .await;
                let seen = journal.lock().unwrap()[room].clone();
                check(&format!("{what}, subscriber {i}, {room}"), &seen, room_acks);
            }
        }
        for room in changed {
            let epochs: std::collections::HashSet<_> =
                acks[room].iter().map(|a| &a.epoch).collect();
            assert!(epochs.len() > 1, "{what}: {room} kept its epoch");
            for (i, (_, journal)) in self.subscribers.iter().enumerate() {
                let told = journal.lock().unwrap()[room]
                    .iter()
                    .any(|s| matches!(s, Seen::Loss { .. }));
                assert!(
                    told,
                    "{what}: subscriber {i} was not told that {room} changed epoch"
                );
            }
        }
        for (client, _) in self.subscribers {
            client.stop().await;
        }
        (self.instances, acks)
    }
}

/// The guarantees for one subscriber of one room.
pub(crate) fn check(what: &str, seen: &[Seen], acks: &[Acked]) {
    // No position acknowledged twice for different messages.
    let mut by_position: HashMap<(Epoch, u64), u64> = HashMap::new();
    for ack in acks {
        if let Some(other) = by_position.insert((ack.epoch.clone(), ack.seq), ack.n) {
            assert_eq!(
                other, ack.n,
                "{what}: position {}/{} reused",
                ack.epoch, ack.seq
            );
        }
    }
    // Deliveries: the acknowledged content, once, in order; breaks only when told.
    let mut delivered = std::collections::HashSet::new();
    let mut position: Option<(Epoch, u64)> = None;
    let mut told = true;
    for item in seen {
        match item {
            Seen::Loss { epoch, seq } => {
                position = Some((epoch.clone(), *seq));
                told = true;
            }
            Seen::Message { epoch, seq, n } => {
                if let Some(expected) = by_position.get(&(epoch.clone(), *seq)) {
                    assert_eq!(
                        expected, n,
                        "{what}: {epoch}/{seq} is not what was acked there"
                    );
                }
                assert!(
                    delivered.insert((epoch.clone(), *seq)),
                    "{what}: {epoch}/{seq} delivered twice"
                );
                if let Some((last_epoch, last_seq)) = &position {
                    let continues = last_epoch == epoch && *seq == last_seq + 1;
                    assert!(
                        continues || (told && (last_epoch != epoch || seq > last_seq)),
                        "{what}: {epoch}/{seq} after {last_epoch}/{last_seq} without a reset"
                    );
                }
                position = Some((epoch.clone(), *seq));
                told = false;
            }
        }
    }
    // Everything of the final epoch arrives, from its first message.
    let last_epoch = &acks.last().unwrap().epoch;
    let missing: Vec<u64> = acks
        .iter()
        .filter(|a| &a.epoch == last_epoch && !delivered.contains(&(a.epoch.clone(), a.seq)))
        .map(|a| a.seq)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: acked in the final epoch but never delivered: {missing:?}"
    );
}

pub(crate) async fn wait_published(published: &AtomicU64, at_least: u64) {
    wait_until(Duration::from_secs(60), "publishing progresses", || async {
        published.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

pub(crate) async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_cluster_failover_keeps_every_room_live() {
    run(Fault::GracefulFailover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_replaced_by_its_replica_keeps_every_room_live() {
    run(Fault::KillMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_promoted_changes_the_epoch_and_reuses_no_position() {
    run(Fault::LaggingReplicaPromoted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_moves_its_rooms_to_the_new_master() {
    run(Fault::MigrateSlot).await;
}
