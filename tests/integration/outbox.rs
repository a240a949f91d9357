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

/// A drain waits for the events committed before it began, not for the whole shared
/// outbox: here another instance keeps committing changes while Redis is stopped (so
/// nothing can be published), and the draining instance still ends within its window,
/// far before its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_does_not_wait_for_what_other_instances_write_after_it_began() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let database = db::sqlite_url();
    let env = [
        ("ROOMCAST_REDIS_URL", redis_url.as_str()),
        ("ROOMCAST_DATABASE_URL", database.as_str()),
        ("ROOMCAST_REDIS__COMMAND_TIMEOUT_MS", "300"),
        ("ROOMCAST_DRAIN__WINDOW_MS", "1000"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "30000"),
    ];
    let mut draining = RoomcastProcess::start(&env).await;
    let writer = RoomcastProcess::start(&env).await;
    wait_ready(&draining.addr).await;
    wait_ready(&writer.addr).await;
    // Clients keep the drain going for its window (their closes are spread over it).
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TestClient::connect(&draining.url(), Encoding::Json).await);
    }

    redis.signal("STOP");
    let started = tokio::time::Instant::now();
    let answer = http::send(&draining.addr, "POST", "/admin/drain", &[], None).await;
    assert_eq!(answer.status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..3 {
        let created = http::json(
            &writer.addr,
            "POST",
            "/api/v1/issues",
            &[],
            &json!({"project_id": 9, "title": format!("after the drain began {n}")}),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
    }
    assert_eq!(draining.wait(Duration::from_secs(25)).await, Some(0));
    let took = started.elapsed();
    redis.signal("CONT");
    assert!(
        took < Duration::from_secs(10),
        "the drain waited {took:?} (deadline 30 s): it waited for rows written after it began"
    );
}

/// On PostgreSQL, a change to a room's project takes that room's outbox lock until it
/// commits, so a second change of the project inserts its outbox row (and takes its id)
/// only after the first committed: the relay's id order is commit order per room. The
/// test holds the lock of `project:987654` in a transaction of its own, as an
/// uncommitted change would: a change of that project waits for it, another does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_changes_of_one_room_enter_the_outbox_in_commit_order() {
    use sqlx::{Connection, Executor};
    let Some(url) = db::postgres_url().await else {
        return; // PostgreSQL only (DATABASE_URL)
    };
    let server = crate::support::TestServer::on_database(&url, |_| {}).await;
    let addr = server.addr();
    let base = std::env::var("DATABASE_URL").unwrap();
    let mut holder = sqlx::PgConnection::connect(&base).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    tx.execute("SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext('roomcast.outbox:project:987654'))) AS locked")
        .await
        .unwrap();

    let blocked = tokio::spawn({
        let addr = addr.clone();
        async move {
            http::json(
                &addr,
                "POST",
                "/api/v1/issues",
                &[],
                &json!({"project_id": 987654, "title": "waits its turn"}),
            )
            .await
            .status
        }
    });
    let other = http::json(
        &addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 987655, "title": "another project"}),
    )
    .await;
    assert_eq!(other.status, 201, "another project's room is not held up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !blocked.is_finished(),
        "the change waits for the earlier one's commit"
    );
    tx.commit().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("proceeds once the earlier change committed")
        .unwrap();
    assert_eq!(status, 201);
    server.stop().await;
}
