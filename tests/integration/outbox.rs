//! The transactional outbox across a crash: a change committed while its event could not
//! be published (the broker was down) is broadcast after a restart, exactly once.

use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, db, http, wait_ready};
use roomcast::protocol::{Encoding, ServerFrame};
use roomcast::stream::Position;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_a_crash_is_delivered_once_after_restart() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let database = db::sqlite_url();
    let env = [
        ("ROOMCAST_REDIS_URL", redis_url.as_str()),
        ("ROOMCAST_DATABASE_URL", database.as_str()),
        ("ROOMCAST_REDIS__COMMAND_TIMEOUT_MS", "300"),
    ];
    let mut first = RoomcastProcess::start(&env).await;
    wait_ready(&first.addr).await;

    let mut watcher = TestClient::connect(&first.url(), Encoding::Json).await;
    watcher.subscribe("project:5", None).await;
    let created = http::json(
        &first.addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 5, "title": "before"}),
    )
    .await;
    assert_eq!(created.status, 201);
    let (_, epoch, seq, _) = watcher.message().await;
    drop(watcher);

    // The broker stops answering; the change still commits, its event cannot go out...
    redis.signal("STOP");
    let created = http::json(
        &first.addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 5, "title": "during"}),
    )
    .await;
    assert_eq!(created.status, 201, "the database does not need the broker");
    let id = created.json()["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...and the instance dies before it could.
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10)).await;
    redis.signal("CONT");

    let second = RoomcastProcess::start(&env).await;
    wait_ready(&second.addr).await;
    let mut watcher = TestClient::connect(&second.url(), Encoding::Json).await;
    let resumed = watcher
        .subscribe("project:5", Some(Position::new(epoch, seq)))
        .await;
    assert!(resumed.recovered);
    let mut deliveries = 0;
    while let Some(frame) = watcher.maybe_next(Duration::from_secs(3)).await {
        match frame {
            ServerFrame::Message { data, .. } => {
                assert_eq!(
                    (data["id"].as_i64(), data["action"].as_str()),
                    (Some(id), Some("create"))
                );
                deliveries += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(deliveries, 1, "delivered after the restart, once");
    let (pending,): (i64,) = {
        let store = roomcast::store::Store::connect(&database).await.unwrap();
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    assert_eq!(pending, 0, "the row is marked once published");
}
