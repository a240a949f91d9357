//! The admin cluster view and the drain of a named instance, against two roomcast
//! processes sharing one Redis: every instance lists both, a killed instance is gone
//! within the membership TTL, and a drain asked of one instance through the other hands
//! its clients over without loss.

use crate::cluster::{
    FAST_PROBES, Watcher, assert_complete, closed_with, spawn_publisher, wait_progress,
};
use crate::support::http::{get, json};
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, wait_ready};
use roomcast::protocol::{Encoding, ServerFrame};
use serde_json::{Value, json as json_value};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Announcements every 300 ms, gone after 1.2 s without one.
const FAST_MEMBERSHIP: [(&str, &str); 2] = [
    ("ROOMCAST_CLUSTER__ANNOUNCE_INTERVAL_MS", "300"),
    ("ROOMCAST_CLUSTER__MEMBER_TTL_MS", "1200"),
];
const TTL: Duration = Duration::from_millis(1200);

/// Starts an instance named `node` on `redis_url` with fast membership and `extra`
/// settings; waits until it is ready. Without authentication on loopback, every caller
/// is an administrator (the 401 and 403 answers are checked by the OpenAPI test).
async fn instance(redis_url: &str, node: &str, extra: &[(&str, &str)]) -> RoomcastProcess {
    let mut env = vec![
        ("ROOMCAST_REDIS_URL", redis_url),
        ("ROOMCAST_NODE_ID", node),
        // The views are polled faster than a user's read budget allows.
        ("ROOMCAST_RATE_LIMITS__USER_READS_PER_SECOND", "1000"),
        ("ROOMCAST_RATE_LIMITS__USER_READ_BURST", "1000"),
    ];
    env.extend(FAST_PROBES);
    env.extend(FAST_MEMBERSHIP);
    env.extend_from_slice(extra);
    let process = RoomcastProcess::start(&env).await;
    wait_ready(&process.addr).await;
    process
}

/// `GET /api/v1/admin/cluster`.
async fn view(addr: &str) -> Value {
    let reply = get(addr, "/api/v1/admin/cluster", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Reads `addr`'s cluster view until `done` holds; returns it.
async fn view_until(
    addr: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let view = view(addr).await;
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not seen within {within:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `addr`'s cluster view until node-a and node-b are listed as ready.
async fn both_ready(addr: &str) -> Value {
    view_until(addr, "both instances ready", Duration::from_secs(10), |v| {
        ["node-a", "node-b"]
            .iter()
            .all(|id| listed(v, id).is_some_and(|i| i["state"] == "ready"))
    })
    .await
}

/// The listed instance `id`, if any.
fn listed<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|instance| instance["id"] == id)
}

/// `POST /api/v1/admin/drain` on `addr` for `instance`.
async fn drain(addr: &str, instance: &str) -> crate::support::http::Reply {
    json(
        addr,
        "POST",
        "/api/v1/admin/drain",
        &[],
        &json_value!({ "instance": instance }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_lists_the_cluster_and_a_killed_one_is_gone_within_the_ttl() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = instance(&url, "node-a", &[]).await;
    let b = instance(&url, "node-b", &[]).await;

    // Both instances answer for both, each with its address, ready.
    for addr in [&a.addr, &b.addr] {
        let view = both_ready(addr).await;
        assert_eq!(
            view["broker"],
            json_value!({"kind": "redis", "reachable": true})
        );
        assert_eq!(view["ttl_ms"], 1200);
        assert_eq!(listed(&view, "node-a").unwrap()["advertise_url"], a.url());
        assert_eq!(listed(&view, "node-b").unwrap()["advertise_url"], b.url());
        let me = listed(&view, view["self_id"].as_str().unwrap()).unwrap();
        assert!(me["memory_bytes"].as_u64().unwrap() > 1_000_000, "{me}");
        assert!(
            me["broker"]["pubsub_probe_age_ms"].as_u64().unwrap() < 1000,
            "{me}"
        );
    }

    // Load on B shows in A's answer: B's connections and its room, merged.
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut client = TestClient::connect(&b.url(), Encoding::Json).await;
        client.subscribe("hall", None).await;
        subscribers.push(client);
    }
    let view = view_until(&a.addr, "B's load", Duration::from_secs(10), |v| {
        listed(v, "node-b").is_some_and(|b| b["connections"] == 3 && b["subscriptions"] == 3)
            && v["top_rooms"]["by_subscribers"][0]["room"] == "hall"
    })
    .await;
    assert_eq!(view["top_rooms"]["by_subscribers"][0]["subscribers"], 3);
    assert_eq!(listed(&view, "node-b").unwrap()["rooms"], 1);

    // kill -9: no goodbye; the record expires.
    b.signal("KILL");
    let killed = tokio::time::Instant::now();
    view_until(&a.addr, "B gone", TTL + Duration::from_secs(2), |v| {
        listed(v, "node-b").is_none() && listed(v, "node-a").is_some()
    })
    .await;
    assert!(
        killed.elapsed() >= TTL - Duration::from_millis(300),
        "dropped by expiry, not earlier"
    );
    let metrics = crate::support::http_get(&a.addr, "/metrics").await;
    assert!(
        metrics.contains("roomcast_cluster_members{state=\"ready\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_asked_through_any_instance_hands_the_clients_over() {
    const MESSAGES: u64 = 150;
    let redis = RedisServer::start().await;
    let url = redis.url();
    let drain_settings = [
        ("ROOMCAST_DRAIN__WINDOW_MS", "1500"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "10000"),
    ];
    let mut a = instance(&url, "node-a", &drain_settings).await;
    let b = instance(&url, "node-b", &drain_settings).await;
    view_until(&b.addr, "both instances", Duration::from_secs(10), |v| {
        listed(v, "node-a").is_some() && listed(v, "node-b").is_some()
    })
    .await;
    let (a_url, b_url) = (a.url(), b.url());
    let mut watchers = Vec::new();
    for _ in 0..6 {
        let urls = vec![a_url.clone(), b_url.clone()];
        watchers.push(Watcher::start(urls, &["deploy"], Encoding::MsgPack).await);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(
        vec![b_url.clone(), a_url.clone()],
        "deploy",
        MESSAGES,
        Duration::from_millis(10),
        progress.clone(),
    );
    wait_progress(&progress, MESSAGES / 3).await;

    assert_eq!(
        drain(&b.addr, "node-x").await.status,
        404,
        "unknown instance"
    );
    // Asked of B, carried out by A.
    let reply = drain(&b.addr, "node-a").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    view_until(&b.addr, "A draining", Duration::from_secs(5), |v| {
        listed(v, "node-a").is_some_and(|a| a["state"] == "draining")
    })
    .await;
    let reply = drain(&b.addr, "node-a").await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "already_draining");
    assert_eq!(
        a.wait(Duration::from_secs(15)).await,
        Some(0),
        "a clean exit"
    );
    // It left the membership as it went, without waiting for the TTL.
    view_until(&b.addr, "A gone", Duration::from_millis(500), |v| {
        listed(v, "node-a").is_none()
    })
    .await;

    let highest = publisher.await.unwrap();
    assert_eq!(
        closed_with(&watchers, 1012),
        6,
        "every client of A was closed with 1012"
    );
    assert_complete(&watchers, "deploy", highest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_carries_the_membership_too() {
    let redis = crate::support::redis::RedisCluster::start().await;
    let url = redis.url();
    let a = instance(&url, "node-a", &[]).await;
    let b = instance(&url, "node-b", &[]).await;
    for addr in [&a.addr, &b.addr] {
        let view = both_ready(addr).await;
        assert_eq!(view["broker"]["kind"], "redis-cluster");
    }
    b.signal("KILL");
    view_until(&a.addr, "B gone", TTL + Duration::from_secs(2), |v| {
        listed(v, "node-b").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hints_the_emptiest_ready_instances_and_clients_follow() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let drain_settings = [
        ("ROOMCAST_DRAIN__WINDOW_MS", "1000"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "10000"),
    ];
    let mut a = instance(&url, "node-a", &drain_settings).await;
    let b = instance(&url, "node-b", &drain_settings).await;
    let c = instance(&url, "node-c", &drain_settings).await;
    view_until(
        &a.addr,
        "three ready instances",
        Duration::from_secs(10),
        |v| {
            ["node-a", "node-b", "node-c"]
                .iter()
                .all(|id| listed(v, id).is_some_and(|i| i["state"] == "ready"))
        },
    )
    .await;
    // Without hints, every client would go to B, the next of its list.
    let urls = vec![a.url(), b.url(), c.url()];
    let mut watchers = Vec::new();
    for _ in 0..8 {
        watchers.push(Watcher::start(urls.clone(), &["hinted"], Encoding::Json).await);
    }
    let mut raw = TestClient::connect(&a.url(), Encoding::Json).await;
    raw.subscribe("hinted", None).await;
    view_until(&a.addr, "A's nine clients", Duration::from_secs(10), |v| {
        listed(v, "node-a").is_some_and(|a| a["connections"] == 9)
    })
    .await;

    assert_eq!(drain(&b.addr, "node-a").await.status, 202);
    let hint = loop {
        if let ServerFrame::Reconnect { reason, hint } = raw.next().await {
            assert_eq!(reason, "draining");
            break hint;
        }
    };
    // The ready others (both, unless one looked unready at that moment on a loaded
    // machine), never A.
    assert!(!hint.is_empty(), "a hint");
    assert!(
        hint.iter().all(|url| *url == b.url() || *url == c.url()),
        "{hint:?}"
    );
    assert_eq!(a.wait(Duration::from_secs(15)).await, Some(0));

    // The eight watchers spread over B and C instead of all landing on B.
    let view = view_until(&b.addr, "A's clients moved", Duration::from_secs(10), |v| {
        let count = |id| listed(v, id).map_or(0, |i| i["connections"].as_u64().unwrap());
        listed(v, "node-a").is_none() && count("node-b") + count("node-c") == 8
    })
    .await;
    let on_c = listed(&view, "node-c").unwrap()["connections"]
        .as_u64()
        .unwrap();
    assert!(on_c >= 2, "C got {on_c} of 8: {view}");
    assert_eq!(closed_with(&watchers, 1012), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowded_instance_sheds_to_the_mean_and_its_clients_resume_without_loss() {
    const MESSAGES: u64 = 200;
    let redis = RedisServer::start().await;
    let url = redis.url();
    let rebalancing = [
        ("ROOMCAST_CLUSTER__REBALANCE", "true"),
        ("ROOMCAST_CLUSTER__REBALANCE_MARGIN_MIN", "2"),
        ("ROOMCAST_CLUSTER__REBALANCE_AFTER_MS", "500"),
        ("ROOMCAST_CLUSTER__REBALANCE_RATE_PERCENT", "20"),
    ];
    let a = instance(&url, "node-a", &rebalancing).await;
    let b = instance(&url, "node-b", &rebalancing).await;
    both_ready(&a.addr).await;
    // Every watcher starts on A.
    let mut watchers = Vec::new();
    for _ in 0..12 {
        let urls = vec![a.url(), b.url()];
        watchers.push(Watcher::start(urls, &["crowd"], Encoding::MsgPack).await);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = spawn_publisher(
        vec![b.url()],
        "crowd",
        MESSAGES,
        Duration::from_millis(20),
        progress.clone(),
    );
    // 13 connections over 2 instances: mean 6.5, margin 2.
    let view = view_until(
        &b.addr,
        "A down to the mean",
        Duration::from_secs(20),
        |v| {
            let count = |id| listed(v, id).map_or(99, |i| i["connections"].as_u64().unwrap());
            count("node-a") <= 8 && count("node-a") + count("node-b") == 13
        },
    )
    .await;
    let on_a = listed(&view, "node-a").unwrap()["connections"]
        .as_u64()
        .unwrap();
    assert!(on_a >= 6, "shed to the mean, not below it: {view}");
    let metrics = crate::support::http_get(&a.addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("roomcast_rebalance_shed_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    let highest = publisher.await.unwrap();
    assert_complete(&watchers, "crowd", highest).await;
    for (i, watcher) in watchers.iter().enumerate() {
        let moves = watcher
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(moves <= 1, "watcher {i} moved {moves} times");
    }
    assert!(closed_with(&watchers, 1012) >= 4);
}
