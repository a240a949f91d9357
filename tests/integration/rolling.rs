//! A rolling deploy under load: three roomcast instances and Redis, each instance in turn
//! sent SIGTERM, drained, and replaced by a new process on the same port; the next one
//! only once the replacement is ready and known to the others. Publishers run throughout.
//! Nothing may be lost, repeated or reordered; every client moves only when the instance
//! it is on drains (once per such drain, to an instance that is not draining) or when
//! rebalancing sheds it; and after the roll rebalancing brings every instance down to
//! the mean + margin within a stated time.

use crate::cluster::{FAST_PROBES, Hop, Hops, Watcher, assert_complete, record_hop};
use crate::cluster_admin::{instance, listed, view_until};
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use roomcast::client::{Client, ClientConfig};
use roomcast::protocol::Encoding;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const INSTANCES: usize = 3;
const ROOMS: usize = 12;
const SUBSCRIBERS: usize = 300;
const PUBLISHERS: usize = 2;
/// Between two publishes of one publisher: 2 × 50 msg/s in all.
const PUBLISH_PAUSE: Duration = Duration::from_millis(20);
/// How long after the last replacement is ready every instance must be within the
/// mean + margin: `rebalance_after_ms` (1 s) + shedding a third of the connections at
/// 20 % per second (~2 s) + announcements, with room for a loaded machine.
const BALANCED_WITHIN: Duration = Duration::from_secs(20);
/// The rebalancing margin below: max(10 % of the mean, 10 connections).
const MARGIN_PERCENT: f64 = 10.0;
const MARGIN_MIN: f64 = 10.0;

/// Short drains, fast membership and rebalancing.
const SETTINGS: [(&str, &str); 7] = [
    ("ROOMCAST_DRAIN__WINDOW_MS", "1000"),
    ("ROOMCAST_DRAIN__DEADLINE_MS", "10000"),
    ("ROOMCAST_CLUSTER__REBALANCE", "true"),
    ("ROOMCAST_CLUSTER__REBALANCE_MARGIN_PERCENT", "10"),
    ("ROOMCAST_CLUSTER__REBALANCE_MARGIN_MIN", "10"),
    ("ROOMCAST_CLUSTER__REBALANCE_AFTER_MS", "1000"),
    ("ROOMCAST_CLUSTER__REBALANCE_RATE_PERCENT", "20"),
];

/// A publisher that publishes to its rooms in turn until told to stop, through a
/// resilient client; its connection history is kept like a watcher's.
struct Publisher {
    hops: Hops,
    task: tokio::task::JoinHandle<HashMap<String, u64>>,
}

impl Publisher {
    /// Returns the highest acknowledged seq per room once `stop` is set.
    fn start(
        urls: Vec<String>,
        rooms: Vec<String>,
        stop: Arc<AtomicBool>,
        published: Arc<AtomicU64>,
    ) -> Publisher {
        let mut config = ClientConfig::new(urls[0].clone());
        config.urls = urls;
        config.request_timeout = Duration::from_secs(30);
        let (client, mut events) = Client::start(config);
        let hops = Hops::default();
        let hopped = hops.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                record_hop(&hopped, &event);
            }
        });
        let task = tokio::spawn(async move {
            let mut highest = HashMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for room in &rooms {
                    let ack = client
                        .publish(room, json!({ "n": n }), None)
                        .await
                        .expect("every publish is acked in the end");
                    let top = highest.entry(room.clone()).or_insert(0);
                    *top = ack.position.seq.max(*top);
                    n += 1;
                    published.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(PUBLISH_PAUSE).await;
                }
            }
            client.stop().await;
            highest
        });
        Publisher { hops, task }
    }
}

/// Reads `addr`'s cluster view until exactly the instances `ids` are listed, all ready.
async fn members_ready(addr: &str, ids: &[String]) {
    view_until(
        addr,
        "the current instances ready",
        Duration::from_secs(15),
        |v| {
            let listed_count = v["instances"].as_array().map_or(0, Vec::len);
            listed_count == ids.len()
                && ids
                    .iter()
                    .all(|id| listed(v, id).is_some_and(|i| i["state"] == "ready"))
        },
    )
    .await;
}

/// Connections per listed instance, when exactly `ids` are listed.
fn connections(view: &Value, ids: &[String]) -> Option<Vec<u64>> {
    ids.iter()
        .map(|id| listed(view, id).and_then(|i| i["connections"].as_u64()))
        .collect()
}

/// What one client's history says about its moves.
#[derive(Debug, Default)]
struct Moves {
    /// Moves away from an instance that was draining.
    drains: usize,
    /// Moves asked for by rebalancing.
    rebalances: usize,
    /// Instances it was drained from.
    drained_from: Vec<String>,
}

/// Checks client `who`'s history against the roll: every lost connection was closed with
/// 1012 (a drain or rebalancing, never a failure); a move away from an instance after
/// its SIGTERM is a drain move, at most one per drained instance, and went to an
/// instance that was not draining; it ends connected to one of `current`.
fn moves_of(
    who: &str,
    hops: &[Hop],
    signalled: &HashMap<String, Instant>,
    current: &[String],
) -> Moves {
    let mut moves = Moves::default();
    let mut on: Option<String> = None;
    let mut lost: Option<(Option<u16>, Instant)> = None;
    for hop in hops {
        match hop {
            Hop::Lost { code, at } => lost = Some((*code, *at)),
            Hop::Connected { server, at } => {
                if let Some(previous) = on.take() {
                    let (code, lost_at) = lost.take().expect("a loss before each reconnect");
                    assert_eq!(code, Some(1012), "{who} left {previous} with {code:?}");
                    let drained = signalled.get(&previous).is_some_and(|t| *t <= lost_at);
                    if drained {
                        assert!(
                            !moves.drained_from.contains(&previous),
                            "{who} moved twice in the drain of {previous}: {hops:?}"
                        );
                        assert!(
                            signalled.get(server).is_none_or(|t| *t > *at),
                            "{who}, drained from {previous}, went to {server}, which was draining"
                        );
                        moves.drains += 1;
                        moves.drained_from.push(previous);
                    } else {
                        moves.rebalances += 1;
                    }
                }
                on = Some(server.clone());
            }
        }
    }
    let last = on.unwrap_or_else(|| panic!("{who} never connected"));
    assert!(
        current.contains(&last),
        "{who} ended on {last}, not a running instance ({current:?})"
    );
    moves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_under_load_loses_nothing_moves_clients_once_per_drain_and_ends_balanced()
{
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let mut settings: Vec<(&str, &str)> = SETTINGS.to_vec();
    settings.extend(FAST_PROBES);
    let mut nodes: Vec<(String, RoomcastProcess)> = Vec::new();
    for i in 0..INSTANCES {
        let id = format!("node-{i}-v1");
        let process = instance(&redis_url, &id, &settings).await;
        nodes.push((id, process));
    }
    let ids = |nodes: &[(String, RoomcastProcess)]| -> Vec<String> {
        nodes.iter().map(|(id, _)| id.clone()).collect()
    };
    members_ready(&nodes[0].1.addr, &ids(&nodes)).await;
    let urls: Vec<String> = nodes.iter().map(|(_, p)| p.url()).collect();
    let rotated = |first: usize| -> Vec<String> {
        (0..INSTANCES)
            .map(|k| urls[(first + k) % INSTANCES].clone())
            .collect()
    };
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("roll-{r}")).collect();

    // Subscribers spread evenly: each starts on instance i mod 3 and has one room.
    let mut by_room: Vec<Vec<Watcher>> = (0..ROOMS).map(|_| Vec::new()).collect();
    for i in 0..SUBSCRIBERS {
        let encoding = if i % 2 == 0 {
            Encoding::MsgPack
        } else {
            Encoding::Json
        };
        let room = &rooms[i % ROOMS];
        by_room[i % ROOMS].push(Watcher::start(rotated(i % INSTANCES), &[room], encoding).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publishers: Vec<Publisher> = (0..PUBLISHERS)
        .map(|p| {
            let mine = rooms
                .iter()
                .enumerate()
                .filter(|(r, _)| r % PUBLISHERS == p)
                .map(|(_, room)| room.clone())
                .collect();
            Publisher::start(rotated(p), mine, stop.clone(), published.clone())
        })
        .collect();
    crate::cluster::wait_progress(&published, 50).await;

    // The roll: SIGTERM, drain, exit; a new process on the same port; the next instance
    // once the replacement is ready and every instance lists it.
    let mut signalled: HashMap<String, Instant> = HashMap::new();
    let mut order = Vec::new();
    for i in 0..INSTANCES {
        let (old_id, mut old) = nodes.remove(i);
        let addr = old.addr.clone();
        let before = published.load(Ordering::Relaxed);
        signalled.insert(old_id.clone(), Instant::now());
        order.push(old_id.clone());
        old.signal("TERM");
        assert_eq!(
            old.wait(Duration::from_secs(15)).await,
            Some(0),
            "{old_id} drained and exited cleanly"
        );
        let id = format!("node-{i}-v2");
        let mut env = settings.clone();
        env.push(("ROOMCAST_LISTEN", &addr));
        let replacement = instance(&redis_url, &id, &env).await;
        assert_eq!(replacement.addr, addr, "the replacement took the same port");
        nodes.insert(i, (id, replacement));
        for (_, node) in &nodes {
            members_ready(&node.addr, &ids(&nodes)).await;
        }
        assert!(
            published.load(Ordering::Relaxed) > before,
            "publishing went on while {old_id} was replaced"
        );
    }

    // Rebalancing spreads what the last drains piled up.
    let current = ids(&nodes);
    let total = (SUBSCRIBERS + PUBLISHERS) as u64;
    let rolled = Instant::now();
    let view = view_until(
        &nodes[0].1.addr,
        "a balanced cluster",
        BALANCED_WITHIN,
        |v| {
            let Some(counts) = connections(v, &current) else {
                return false;
            };
            let mean = total as f64 / INSTANCES as f64;
            let margin = (mean * MARGIN_PERCENT / 100.0).max(MARGIN_MIN);
            counts.iter().sum::<u64>() == total && counts.iter().all(|&c| c as f64 <= mean + margin)
        },
    )
    .await;
    let balanced_after = rolled.elapsed();

    stop.store(true, Ordering::Relaxed);
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut histories = Vec::new();
    for (p, publisher) in publishers.into_iter().enumerate() {
        highest.extend(publisher.task.await.unwrap());
        histories.push((format!("publisher {p}"), publisher.hops));
    }
    for (r, watchers) in by_room.iter().enumerate() {
        let top = highest[&rooms[r]];
        assert!(top > 0, "{} got publishes", rooms[r]);
        assert_complete(watchers, &rooms[r], top).await;
    }

    // Moves per client.
    for (r, watchers) in by_room.iter().enumerate() {
        for (k, watcher) in watchers.iter().enumerate() {
            histories.push((
                format!("subscriber {k} of {}", rooms[r]),
                watcher.hops.clone(),
            ));
        }
    }
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    let mut per_drain: BTreeMap<String, usize> = BTreeMap::new();
    let mut rebalanced = 0;
    for (who, hops) in &histories {
        let moves = moves_of(who, &hops.lock().unwrap(), &signalled, &current);
        *histogram.entry(moves.drains).or_default() += 1;
        for from in moves.drained_from {
            *per_drain.entry(from).or_default() += 1;
        }
        rebalanced += moves.rebalances;
    }
    eprintln!(
        "rolling deploy: drain moves per client {histogram:?}; clients moved by each drain \
         {per_drain:?}; rebalancing moves {rebalanced}; balanced {balanced_after:?} after \
         the roll: {:?}",
        connections(&view, &current)
    );
    // Every drain moved the clients of its instance, and none moved nearly everyone (as
    // following the client's own list did: the last drain took every client along).
    let all = histories.len();
    for id in &order {
        let moved = per_drain.get(id).copied().unwrap_or(0);
        assert!(moved > 0, "the drain of {id} moved its clients");
        assert!(
            moved * 10 <= all * 6,
            "the drain of {id} moved {moved} of {all} clients"
        );
    }
}
