//! An instance that starts before its Redis (a pod scheduled before the Redis it needs,
//! a compose stack starting in any order): it serves /healthz, says it is not ready and
//! why, names the address it keeps trying, and becomes ready and delivers once Redis
//! comes — without a restart.

use crate::support::http::get;
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, wait_ready};
use roomcast::protocol::{Encoding, ServerFrame};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_before_redis_becomes_ready_when_redis_comes() {
    let mut redis = RedisServer::start().await;
    redis.kill().await;
    let mut node = RoomcastProcess::start(&[("ROOMCAST_REDIS_URL", &redis.url())]).await;

    let line = node
        .wait_for_log("cannot connect to Redis yet", Duration::from_secs(10))
        .await;
    assert!(
        line.contains(&format!("127.0.0.1:{}", redis.port)),
        "the retry names the address: {line}"
    );
    assert_eq!(get(&node.addr, "/healthz", &[]).await.status, 200);
    let ready = get(&node.addr, "/readyz", &[]).await;
    assert_eq!(
        ready.status,
        503,
        "not ready without Redis: {}",
        ready.text()
    );

    redis.restart().await;
    wait_ready(&node.addr).await;
    let mut client = TestClient::connect(&node.url(), Encoding::Json).await;
    client.subscribe("startup:1", None).await;
    let (position, duplicate, before_ack) = client
        .publish("startup:1", json!({"n": 1}), Some("startup-1"))
        .await;
    assert_eq!((position.seq, duplicate), (1, false));
    // The publisher is also the subscriber, and the message may overtake the ack: the
    // ack comes back on the command connection, the message over Pub/Sub.
    let (room, seq, data) = match before_ack.into_iter().next() {
        Some(ServerFrame::Message {
            room, seq, data, ..
        }) => (room, seq, data),
        Some(other) => panic!("expected the message, got {other:?}"),
        None => {
            let (room, _, seq, data) = client.message().await;
            (room, seq, data)
        }
    };
    assert_eq!(
        (room.as_str(), seq, data),
        ("startup:1", 1, json!({"n": 1}))
    );
}
