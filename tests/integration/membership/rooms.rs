//! The tracker's rooms over WebSocket and HTTP, and membership changes taking effect.

use super::{MEMBER, OUTSIDER, PROJECT_ADMIN, ROOT, VIEWER, World, token_of};
use crate::support::http::{json, send};
use crate::support::tokens::{SERVICE_TOKEN, bearer, exp, grant, hs256};
use crate::support::{TestClient, db};
use roomcast::protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame};
use serde_json::json;
use std::time::Duration;

async fn connect(url: &str, who: &str) -> TestClient {
    TestClient::connect(
        &format!("{url}?access_token={}", token_of(who)),
        Encoding::Json,
    )
    .await
}

fn subscribe(room: &str) -> ClientFrame {
    ClientFrame::Subscribe {
        id: Some(90),
        room: room.into(),
        since: None,
        presence: false,
        info: None,
        delta: None,
        compress: None,
    }
}

fn publish(room: &str) -> ClientFrame {
    ClientFrame::Publish {
        id: Some(91),
        room: room.into(),
        data: json!("x"),
        key: None,
    }
}

fn history(room: &str) -> ClientFrame {
    ClientFrame::History {
        id: Some(92),
        room: room.into(),
        since: None,
        limit: None,
    }
}

/// Whether the WebSocket request gets an answer other than `forbidden`.
/// Waits for the server to end the client's subscription to `room` (an `unsubscribed`
/// without `id`). Messages of the room may come first: the removal's own event is
/// broadcast to the project's room too.
async fn expect_ended(client: &mut TestClient, room: &str) {
    loop {
        match client.next().await {
            ServerFrame::Unsubscribed {
                id: None,
                room: ended,
            } => {
                assert_eq!(ended, room);
                break;
            }
            ServerFrame::Message { room: from, .. } if from == room => continue,
            other => panic!("expected the subscription to {room} to end, got {other:?}"),
        }
    }
    assert!(
        client
            .maybe_next(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing of the room after it ended"
    );
}

async fn allowed(client: &mut TestClient, frame: ClientFrame) -> bool {
    client.send(frame).await;
    loop {
        match client.next().await {
            ServerFrame::Error { code, .. } => {
                assert!(
                    matches!(code, ErrorCode::Forbidden | ErrorCode::NotSubscribed),
                    "{code:?}"
                );
                return code != ErrorCode::Forbidden;
            }
            ServerFrame::Message { .. } => continue,
            _ => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_rooms_follow_membership_over_websocket_and_http() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let rooms = ["project:1".to_owned(), format!("issue:{}", w.issue)];
        // (who, may read, may publish)
        for (who, read, write) in [
            (VIEWER, true, false),
            (MEMBER, true, true),
            (PROJECT_ADMIN, true, true),
            (OUTSIDER, false, false),
            (ROOT, true, true),
        ] {
            let mut client = connect(&w.server.url, who).await;
            for room in &rooms {
                assert_eq!(
                    allowed(&mut client, history(room)).await,
                    read,
                    "{who} history {room}"
                );
                assert_eq!(
                    allowed(&mut client, subscribe(room)).await,
                    read,
                    "{who} subscribe {room}"
                );
                assert_eq!(
                    allowed(&mut client, publish(room)).await,
                    write,
                    "{who} publish {room}"
                );
                let reply = w
                    .call(who, "GET", &format!("/api/v1/rooms/{room}/history"), None)
                    .await;
                assert_eq!(
                    reply.status,
                    if read { 200 } else { 403 },
                    "{who} HTTP history {room}"
                );
            }
            // Rooms of projects and issues the caller is not in, or that do not exist,
            // and names in the tracker's namespace that are not a room of it.
            let other = format!("issue:{}", w.other_issue);
            for room in [
                "project:2",
                other.as_str(),
                "issue:999999",
                "project:x",
                "project:1:chat",
            ] {
                let expected =
                    who == ROOT || (who == OUTSIDER && (room == "project:2" || room == other));
                assert_eq!(
                    allowed(&mut client, history(room)).await,
                    expected,
                    "{who} history {room}"
                );
            }
        }
        // HTTP publish: services only (which act as global administrators).
        let service = bearer(SERVICE_TOKEN);
        let message = json!({"room": "project:1", "data": 1});
        let by_service = json(
            &w.addr,
            "POST",
            "/api/v1/publish",
            &[("authorization", &service)],
            &message,
        )
        .await;
        assert_eq!(by_service.status, 200);
        assert_eq!(
            w.call(MEMBER, "POST", "/api/v1/publish", Some(message))
                .await
                .status,
            403
        );
        // Room claims never open a tracker room; they do open other rooms.
        let claims = hs256(
            json!({"sub": "cl", "exp": exp(), "rooms": {"subscribe": ["project:*", "issue:*", "team:*"], "publish": ["team:*"]}}),
        );
        let mut client = TestClient::connect(
            &format!("{}?access_token={claims}", w.server.url),
            Encoding::Json,
        )
        .await;
        assert!(!allowed(&mut client, subscribe("project:1")).await);
        assert!(!allowed(&mut client, subscribe(&rooms[1])).await);
        assert!(allowed(&mut client, subscribe("team:a")).await);
        assert!(allowed(&mut client, publish("team:a")).await);
        assert!(
            !allowed(&mut client, subscribe("team:a:b")).await,
            "one segment per *"
        );
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_takes_effect_on_the_next_request() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let mut client = connect(&w.server.url, "newbie").await;
        assert!(
            !allowed(&mut client, subscribe("project:1")).await,
            "not a member yet"
        );
        // Granted: the refusal just cached is dropped at once.
        grant(&w.addr, 1, "newbie", "viewer").await;
        client.subscribe("project:1", None).await;
        assert!(
            !allowed(&mut client, publish("project:1")).await,
            "viewers do not publish"
        );
        grant(&w.addr, 1, "newbie", "member").await;
        assert!(
            allowed(&mut client, publish("project:1")).await,
            "raised to member"
        );
        // Lowered, then removed: refused at the next request.
        grant(&w.addr, 1, "newbie", "viewer").await;
        assert!(
            !allowed(&mut client, publish("project:1")).await,
            "lowered to viewer"
        );
        let service = bearer(SERVICE_TOKEN);
        let removed = send(
            &w.addr,
            "DELETE",
            "/api/v1/projects/1/members/newbie",
            &[("authorization", &service)],
            None,
        )
        .await;
        assert_eq!(removed.status, 204);
        // The live subscription ends by itself: an `unsubscribed` without `id`.
        expect_ended(&mut client, "project:1").await;
        assert!(!allowed(&mut client, history("project:1")).await, "removed");
        let issue = format!("issue:{}", w.issue);
        assert!(!allowed(&mut client, subscribe(&issue)).await, "removed");
        assert_eq!(
            w.call(
                "newbie",
                "GET",
                &format!("/api/v1/issues/{}", w.issue),
                None
            )
            .await
            .status,
            404
        );
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_elsewhere_is_seen_within_the_cache_ttl() {
    // A membership granted outside this instance (here by the CLI, as another instance
    // would) cannot drop this instance's cache: the refusal it cached expires instead.
    let url = db::sqlite_url();
    let server = crate::support::tokens::secured_on(&url).await;
    let mut client = connect(&server.url, "late").await;
    let cached = std::time::Instant::now();
    assert!(!allowed(&mut client, history("project:7")).await);
    let env = [("ROOMCAST_DATABASE_URL", url.as_str())];
    let args = [
        "members",
        "grant",
        "--project",
        "7",
        "--user",
        "late",
        "--role",
        "viewer",
    ];
    let (code, stderr) = crate::support::process::run_to_exit(&args, &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    if cached.elapsed() < roomcast::access::cache::TTL - Duration::from_secs(1) {
        assert!(
            !allowed(&mut client, history("project:7")).await,
            "the cached refusal still holds"
        );
    }
    let deadline = cached + roomcast::access::cache::TTL + Duration::from_secs(3);
    while !allowed(&mut client, history("project:7")).await {
        assert!(
            std::time::Instant::now() < deadline,
            "never became a member"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// A membership removed through one instance ends the user's subscriptions to the
/// project's rooms on every instance (through the control room over Redis), at once
/// rather than after the access cache's TTL; other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_membership_ends_subscriptions_on_every_instance() {
    use crate::support::process::RoomcastProcess;
    use crate::support::redis::RedisServer;
    use crate::support::tokens::SECRET;
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let services = format!("ops:{SERVICE_TOKEN}");
    // One database for both instances (memberships are shared).
    let database = crate::support::db::sqlite_url();
    let mut nodes = Vec::new();
    for node in ["members-0", "members-1"] {
        let process = RoomcastProcess::start(&[
            ("ROOMCAST_REDIS_URL", redis_url.as_str()),
            ("ROOMCAST_NODE_ID", node),
            ("ROOMCAST_DATABASE_URL", database.as_str()),
            ("ROOMCAST_AUTH__JWT_HS256_SECRET", SECRET),
            ("ROOMCAST_AUTH__SERVICE_TOKENS", services.as_str()),
        ])
        .await;
        crate::support::wait_ready(&process.addr).await;
        nodes.push(process);
    }
    grant(&nodes[0].addr, 7, "leaver", "viewer").await;
    grant(&nodes[0].addr, 7, "stayer", "viewer").await;
    let mut leaver = Vec::new();
    for node in &nodes {
        let mut client = connect(&node.url(), "leaver").await;
        client.subscribe("project:7", None).await;
        leaver.push(client);
    }
    let mut stayer = connect(&nodes[1].url(), "stayer").await;
    stayer.subscribe("project:7", None).await;

    let service = bearer(SERVICE_TOKEN);
    let removed = send(
        &nodes[0].addr,
        "DELETE",
        "/api/v1/projects/7/members/leaver",
        &[("authorization", &service)],
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{}", removed.text());
    for client in &mut leaver {
        expect_ended(client, "project:7").await;
    }
    // The other member keeps the room: they get the removal's event, and nothing ends.
    // The grants' events reach the room through the outbox after their requests returned
    // (docs/api.md § 6.3), so they may come first, each once, in commit order; the relay
    // keeps that order, so none comes after the removal's.
    let mut grants = Vec::new();
    loop {
        match stayer.next().await {
            ServerFrame::Message { room, data, .. } => {
                assert_eq!(room, "project:7");
                if data["action"] == json!("delete") {
                    assert_eq!(data["user_id"], json!("leaver"));
                    break;
                }
                assert_eq!(data["action"], json!("create"), "a grant's event: {data}");
                grants.push(data["user_id"].as_str().unwrap().to_owned());
            }
            other => panic!("expected the membership event, got {other:?}"),
        }
    }
    let granted = ["leaver", "stayer"].map(String::from);
    assert!(
        granted.ends_with(&grants),
        "late grants once, in order: {grants:?}"
    );
    assert!(
        stayer
            .maybe_next(Duration::from_millis(500))
            .await
            .is_none(),
        "the subscription stays"
    );
    stayer.ping().await;
}

/// The first entry of `room` with an id above `after` (earlier ones are skipped).
async fn entry_after(client: &mut TestClient, room: &str, after: i64) -> serde_json::Value {
    loop {
        let (from, _, _, data) = client.message().await;
        assert_eq!(from, room);
        if data["id"].as_i64().unwrap() > after {
            return data;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_rooms_carry_each_new_entry_to_those_who_may_read_it() {
    for url in db::all().await {
        let w = World::on(&url).await;
        // (who, rooms they may read); nobody publishes to an audit room.
        for (who, readable) in [
            (VIEWER, vec![]),
            (MEMBER, vec![]),
            (PROJECT_ADMIN, vec!["audit:1"]),
            (OUTSIDER, vec![]),
            (ROOT, vec!["audit", "audit:1", "audit:2", "audit:x"]),
        ] {
            let mut client = connect(&w.server.url, who).await;
            for room in ["audit", "audit:1", "audit:2", "audit:x"] {
                assert_eq!(
                    allowed(&mut client, subscribe(room)).await,
                    readable.contains(&room),
                    "{who} subscribe {room}"
                );
                assert!(
                    !allowed(&mut client, publish(room)).await,
                    "{who} publish {room}"
                );
            }
        }
        let service = bearer(SERVICE_TOKEN);
        let forged = json(
            &w.addr,
            "POST",
            "/api/v1/publish",
            &[("authorization", &service)],
            &json!({"room": "audit", "data": {"id": 1}}),
        )
        .await;
        assert_eq!(forged.status, 403, "not even a service writes the audit");

        // A member's change (on PostgreSQL under row-level security, where the member
        // may write the entry but not read it) reaches both audit rooms, as the log holds
        // it.
        let mut root = connect(&w.server.url, ROOT).await;
        root.subscribe("audit", None).await;
        let mut project_admin = connect(&w.server.url, PROJECT_ADMIN).await;
        project_admin.subscribe("audit:1", None).await;
        let created = w
            .call(
                MEMBER,
                "POST",
                "/api/v1/issues",
                Some(json!({"project_id": 1, "title": "audited live"})),
            )
            .await;
        assert_eq!(created.status, 201);
        let id = created.json()["id"].as_i64().unwrap();
        let logged = w
            .call(
                ROOT,
                "GET",
                &format!("/api/v1/audit?entity=issue&entity_id={id}"),
                None,
            )
            .await
            .json()["items"][0]
            .clone();
        assert_eq!(logged["actor"], MEMBER);
        for (client, room) in [(&mut root, "audit"), (&mut project_admin, "audit:1")] {
            // The entries of the world's setup may still be on their way: skip them.
            let data = entry_after(client, room, logged["id"].as_i64().unwrap() - 1).await;
            assert_eq!(data, logged, "{room} carries the entry as the log holds it");
        }
        // An entry of project 2 reaches the global room only.
        let other = json(
            &w.addr,
            "POST",
            "/api/v1/issues",
            &[("authorization", &service)],
            &json!({"project_id": 2, "title": "elsewhere"}),
        )
        .await;
        let data = entry_after(&mut root, "audit", logged["id"].as_i64().unwrap()).await;
        assert_eq!(data["entity_id"], other.json()["id"]);
        assert_eq!(data["project_id"], 2);
        assert!(
            project_admin
                .maybe_next(Duration::from_millis(300))
                .await
                .is_none(),
            "project 1's admin hears nothing of project 2"
        );
        w.server.stop().await;
    }
}
