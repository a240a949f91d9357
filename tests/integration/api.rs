//! The HTTP sidecar over real sockets, on SQLite and (when `DATABASE_URL` is set) on
//! PostgreSQL: every route, its errors, optimistic concurrency, idempotency, the audit
//! log and its export, retention, and the events broadcast to rooms.

use crate::support::http::{Reply, get, json, send};
use crate::support::{TestClient, TestServer, db};
use roomcast::protocol::{Encoding, ServerFrame};
use serde_json::{Value, json};
use std::time::Duration;

async fn create_issue(addr: &str, body: Value) -> Reply {
    json(addr, "POST", "/api/v1/issues", &[], &body).await
}

async fn count(server: &TestServer, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(server.server().store().pool())
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_can_be_created_read_listed_updated_and_deleted() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let addr = server.addr();
        let created = create_issue(
            &addr,
            json!({"project_id": 7, "title": "Login fails", "type": "bug", "priority": "high", "assignee": "ana"}),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        assert_eq!(created.header("etag"), Some("\"1\""));
        let issue = created.json();
        let id = issue["id"].as_i64().unwrap();
        assert_eq!(
            created.header("location"),
            Some(format!("/api/v1/issues/{id}").as_str())
        );
        assert_eq!(issue["status"], "open", "defaults apply");
        assert_eq!(issue["reporter"], "anonymous");
        assert!(issue["created_at"].as_str().unwrap().ends_with('Z'));

        let fetched = get(&addr, &format!("/api/v1/issues/{id}"), &[]).await;
        assert_eq!((fetched.status, fetched.json()), (200, issue.clone()));
        let unchanged = get(
            &addr,
            &format!("/api/v1/issues/{id}"),
            &[("if-none-match", "\"1\"")],
        )
        .await;
        assert_eq!(unchanged.status, 304);

        for n in 0..3 {
            create_issue(
                &addr,
                json!({"project_id": 8, "title": format!("other {n}"), "status": "closed"}),
            )
            .await;
        }
        let page = get(&addr, "/api/v1/issues?project_id=8&limit=2", &[])
            .await
            .json();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        let cursor = page["next_cursor"].as_str().unwrap().to_owned();
        let rest = get(
            &addr,
            &format!("/api/v1/issues?project_id=8&limit=2&cursor={cursor}"),
            &[],
        )
        .await
        .json();
        assert_eq!(rest["items"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_cursor"], Value::Null);
        let filtered = get(
            &addr,
            "/api/v1/issues?status=open&priority=high&assignee=ana",
            &[],
        )
        .await
        .json();
        assert_eq!(filtered["items"].as_array().unwrap().len(), 1);

        let path = format!("/api/v1/issues/{id}");
        let patched = json(
            &addr,
            "PATCH",
            &path,
            &[("if-match", "\"1\"")],
            &json!({"status": "in_progress", "assignee": null}),
        )
        .await;
        assert_eq!(patched.status, 200, "{}", patched.text());
        assert_eq!(patched.header("etag"), Some("\"2\""));
        assert_eq!(patched.json()["assignee"], Value::Null);
        let null_title = json(&addr, "PATCH", &path, &[], &json!({"title": null})).await;
        assert_eq!(
            null_title.status, 422,
            "only the assignee can be set to null"
        );
        assert_eq!(null_title.json()["error"]["details"][0]["field"], "title");
        let stale = json(
            &addr,
            "PATCH",
            &path,
            &[("if-match", "\"1\"")],
            &json!({"title": "x"}),
        )
        .await;
        assert_eq!(stale.status, 412);
        assert_eq!(stale.json()["error"]["code"], "version_mismatch");
        assert_eq!(
            get(&addr, &path, &[]).await.json()["title"],
            "Login fails",
            "a 412 changes nothing"
        );
        let stale_delete = send(&addr, "DELETE", &path, &[("if-match", "\"1\"")], None).await;
        assert_eq!(stale_delete.status, 412);
        let deleted = send(&addr, "DELETE", &path, &[("if-match", "\"2\"")], None).await;
        assert_eq!(deleted.status, 204);
        assert_eq!(get(&addr, &path, &[]).await.status, 404);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_live_under_their_issue() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let addr = server.addr();
        let id = create_issue(&addr, json!({"project_id": 1, "title": "t"}))
            .await
            .json()["id"]
            .as_i64()
            .unwrap();
        let base = format!("/api/v1/issues/{id}/comments");
        let created = json(&addr, "POST", &base, &[], &json!({"body": "first!"})).await;
        assert_eq!(created.status, 201);
        let cid = created.json()["id"].as_i64().unwrap();
        json(&addr, "POST", &base, &[], &json!({"body": "second"})).await;
        let list = get(&addr, &base, &[]).await.json();
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        let one = format!("{base}/{cid}");
        assert_eq!(get(&addr, &one, &[]).await.json()["body"], "first!");
        let edited = json(
            &addr,
            "PATCH",
            &one,
            &[("if-match", "\"1\"")],
            &json!({"body": "edited"}),
        )
        .await;
        assert_eq!(
            (edited.status, edited.json()["version"].clone()),
            (200, json!(2))
        );
        assert_eq!(
            json(
                &addr,
                "PATCH",
                &one,
                &[("if-match", "\"1\"")],
                &json!({"body": "x"})
            )
            .await
            .status,
            412
        );
        assert_eq!(send(&addr, "DELETE", &one, &[], None).await.status, 204);
        assert_eq!(get(&addr, &one, &[]).await.status, 404);
        assert_eq!(
            json(
                &addr,
                "POST",
                "/api/v1/issues/999999/comments",
                &[],
                &json!({"body": "x"})
            )
            .await
            .status,
            404
        );
        // Deleting the issue takes its remaining comments along, each audited.
        assert_eq!(
            send(&addr, "DELETE", &format!("/api/v1/issues/{id}"), &[], None)
                .await
                .status,
            204
        );
        let audit = get(&addr, "/api/v1/audit?entity=comment&action=delete", &[])
            .await
            .json();
        assert_eq!(audit["items"].as_array().unwrap().len(), 2);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_write_nothing() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |c| {
            c.api.max_body_bytes = 2048;
            c.rate_limits.user_write_burst = 1000;
        })
        .await;
        let addr = server.addr();
        let cases: Vec<(Reply, u16, &str, Option<&str>)> = vec![
            (
                send(
                    &addr,
                    "POST",
                    "/api/v1/issues",
                    &[("content-type", "application/json")],
                    Some(b"{\"project_id\": 1,"),
                )
                .await,
                400,
                "malformed_json",
                None,
            ),
            (
                create_issue(&addr, json!({"project_id": "seven", "title": "t"})).await,
                422,
                "validation_failed",
                Some("project_id"),
            ),
            (
                create_issue(
                    &addr,
                    json!({"project_id": 1, "title": "t", "colour": "red"}),
                )
                .await,
                422,
                "validation_failed",
                Some("colour"),
            ),
            (
                create_issue(&addr, json!({"project_id": 1})).await,
                422,
                "validation_failed",
                Some("title"),
            ),
            (
                send(
                    &addr,
                    "POST",
                    "/api/v1/issues",
                    &[("content-type", "application/json")],
                    Some(b"[1, \"positional\"]"),
                )
                .await,
                422,
                "validation_failed",
                Some(""),
            ),
            (
                json(
                    &addr,
                    "POST",
                    "/api/v1/issues",
                    &[("idempotency-key", "has spaces")],
                    &json!({"project_id": 1, "title": "t"}),
                )
                .await,
                400,
                "bad_idempotency_key",
                None,
            ),
            (
                create_issue(
                    &addr,
                    json!({"project_id": 1, "title": "t", "status": "done"}),
                )
                .await,
                422,
                "validation_failed",
                Some("status"),
            ),
            (
                create_issue(&addr, json!({"project_id": 1, "title": "x".repeat(201)})).await,
                422,
                "validation_failed",
                Some("title"),
            ),
            (
                create_issue(&addr, json!({"project_id": 0, "title": ""})).await,
                422,
                "validation_failed",
                None,
            ),
            (
                create_issue(
                    &addr,
                    json!({"project_id": 1, "title": "t", "description": "d".repeat(3000)}),
                )
                .await,
                413,
                "body_too_large",
                None,
            ),
            (
                send(
                    &addr,
                    "POST",
                    "/api/v1/issues",
                    &[("content-type", "text/plain")],
                    Some(b"hi"),
                )
                .await,
                415,
                "unsupported_media_type",
                None,
            ),
            (
                get(&addr, "/api/v1/issues?limit=0", &[]).await,
                422,
                "validation_failed",
                Some("limit"),
            ),
            (
                get(&addr, "/api/v1/issues?status=weird", &[]).await,
                422,
                "validation_failed",
                Some("status"),
            ),
            (
                get(&addr, "/api/v1/nothing-here", &[]).await,
                404,
                "not_found",
                None,
            ),
            (
                send(&addr, "PUT", "/api/v1/issues", &[], None).await,
                405,
                "method_not_allowed",
                None,
            ),
            (
                get(&addr, "/api/v1/issues/abc", &[]).await,
                404,
                "not_found",
                None,
            ),
        ];
        for (i, (reply, status, code, field)) in cases.into_iter().enumerate() {
            assert_eq!(reply.status, status, "case {i}: {}", reply.text());
            let error = &reply.json()["error"];
            assert_eq!(error["code"], code, "case {i}");
            assert!(!error["message"].as_str().unwrap().is_empty());
            if let Some(field) = field {
                let details = error["details"].as_array().expect("422 lists fields");
                assert!(
                    details.iter().any(|d| d["field"] == field),
                    "case {i}: {details:?}"
                );
            }
        }
        let both = create_issue(&addr, json!({"project_id": 0, "title": ""}))
            .await
            .json();
        assert_eq!(
            both["error"]["details"].as_array().unwrap().len(),
            2,
            "every bad field is reported"
        );
        for table in ["issues", "audit_log", "outbox", "idempotency_keys"] {
            assert_eq!(
                count(&server, table).await,
                0,
                "{table}: a failed request leaves nothing"
            );
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_itself_refuses_values_outside_the_allowed_sets() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let pool = server.server().store().pool();
        let insert = |status: &'static str| {
            sqlx::query(
                "INSERT INTO issues (project_id, title, description, status, priority, issue_type, reporter, version, created_at, updated_at) \
                 VALUES (1, 't', '', $1, 'low', 'bug', 'r', 1, 0, 0)",
            )
            .bind(status)
            .execute(pool)
        };
        assert!(insert("open").await.is_ok());
        let refused = insert("sideways").await.unwrap_err().to_string();
        assert!(refused.to_lowercase().contains("check"), "{refused}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_response() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let addr = server.addr();
        let body = json!({"project_id": 3, "title": "once"});
        let key = [("idempotency-key", "create-once-1")];
        let first = json(&addr, "POST", "/api/v1/issues", &key, &body).await;
        let again = json(&addr, "POST", "/api/v1/issues", &key, &body).await;
        assert_eq!(first.status, 201);
        assert_eq!(again.status, 201);
        assert_eq!(again.json(), first.json());
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        let other = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &key,
            &json!({"project_id": 3, "title": "different"}),
        )
        .await;
        assert_eq!(other.status, 409);
        assert_eq!(other.json()["error"]["code"], "idempotency_key_reused");
        assert_eq!(count(&server, "issues").await, 1);
        assert_eq!(count(&server, "audit_log").await, 1);
        // The change's event, and its audit entry's (to the audit rooms).
        assert_eq!(count(&server, "outbox").await, 2);
        // Comments honour keys too.
        let id = first.json()["id"].as_i64().unwrap();
        let path = format!("/api/v1/issues/{id}/comments");
        let c1 = json(
            &addr,
            "POST",
            &path,
            &[("idempotency-key", "c")],
            &json!({"body": "hi"}),
        )
        .await;
        let c2 = json(
            &addr,
            "POST",
            &path,
            &[("idempotency-key", "c")],
            &json!({"body": "hi"}),
        )
        .await;
        assert_eq!(c1.json(), c2.json());
        assert_eq!(count(&server, "comments").await, 1);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_broadcast_to_its_project_and_issue_rooms() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let addr = server.addr();
        let mut project = TestClient::connect(&server.url, Encoding::MsgPack).await;
        project.subscribe("project:42", None).await;
        let created = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &[("x-request-id", "req-create")],
            &json!({"project_id": 42, "title": "t"}),
        )
        .await;
        assert_eq!(created.header("x-request-id"), Some("req-create"));
        let id = created.json()["id"].as_i64().unwrap();
        let event = next_event(&mut project).await;
        assert_eq!(event["entity"], "issue");
        assert_eq!(event["action"], "create");
        assert_eq!(event["id"], id);
        assert_eq!(event["version"], 1);
        assert_eq!(event["actor"], "anonymous");
        assert_eq!(event["request_id"], "req-create");
        assert_eq!(event["changes"]["title"]["after"], "t");

        let mut issue_room = TestClient::connect(&server.url, Encoding::Json).await;
        issue_room.subscribe(&format!("issue:{id}"), None).await;
        json(
            &addr,
            "PATCH",
            &format!("/api/v1/issues/{id}"),
            &[],
            &json!({"priority": "urgent"}),
        )
        .await;
        json(
            &addr,
            "POST",
            &format!("/api/v1/issues/{id}/comments"),
            &[],
            &json!({"body": "on it"}),
        )
        .await;
        for room in [&mut project, &mut issue_room] {
            let update = next_event(room).await;
            assert_eq!(
                (update["action"].clone(), update["version"].clone()),
                (json!("update"), json!(2))
            );
            assert_eq!(
                update["changes"],
                json!({"priority": {"before": "medium", "after": "urgent"}})
            );
            let comment = next_event(room).await;
            assert_eq!(
                (comment["entity"].clone(), comment["issue_id"].clone()),
                (json!("comment"), json!(id))
            );
        }
        server.stop().await;
    }
}

async fn next_event(client: &mut TestClient) -> Value {
    match client.next().await {
        ServerFrame::Message { data, .. } => data,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_searchable_and_cannot_be_changed() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, |_| {}).await;
        let addr = server.addr();
        let before = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let id = create_issue(&addr, json!({"project_id": 1, "title": "a"}))
            .await
            .json()["id"]
            .as_i64()
            .unwrap();
        json(
            &addr,
            "PATCH",
            &format!("/api/v1/issues/{id}"),
            &[],
            &json!({"title": "b"}),
        )
        .await;
        create_issue(&addr, json!({"project_id": 1, "title": "other"})).await;
        let all = get(&addr, "/api/v1/audit", &[]).await.json();
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        let mine = get(
            &addr,
            &format!("/api/v1/audit?entity=issue&entity_id={id}&action=update&actor=anonymous"),
            &[],
        )
        .await
        .json();
        let items = mine["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]["changes"],
            json!({"title": {"before": "a", "after": "b"}})
        );
        assert_eq!(items[0]["actor_kind"], "anonymous");
        let ranged = get(&addr, &format!("/api/v1/audit?from={before}&limit=2"), &[])
            .await
            .json();
        assert_eq!(ranged["items"].as_array().unwrap().len(), 2);
        assert!(ranged["next_cursor"].is_string());
        let future = get(&addr, "/api/v1/audit?from=2999-01-01T00:00:00Z", &[])
            .await
            .json();
        assert!(future["items"].as_array().unwrap().is_empty());
        assert_eq!(
            get(&addr, "/api/v1/audit?from=yesterday", &[]).await.status,
            422
        );

        let pool = server.server().store().pool();
        let update = sqlx::query("UPDATE audit_log SET actor = 'mallory'")
            .execute(pool)
            .await;
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = sqlx::query("DELETE FROM audit_log").execute(pool).await;
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        assert_eq!(count(&server, "audit_log").await, 3);
        // The retention job may delete only what is older than its cutoff.
        assert_eq!(server.server().store().purge_audit(1).await.unwrap(), 0);
        assert_eq!(count(&server, "audit_log").await, 3);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_exports_as_csv_and_json_in_full() {
    const ENTRIES: usize = 1_100; // more than two export batches
    let server = TestServer::with(|c| c.rate_limits.user_writes_per_second = 1e6).await;
    let addr = server.addr();
    let id = create_issue(
        &addr,
        json!({"project_id": 1, "title": "t, with \"quotes\""}),
    )
    .await
    .json()["id"]
        .as_i64()
        .unwrap();
    for n in 1..ENTRIES {
        let reply = json(
            &addr,
            "PATCH",
            &format!("/api/v1/issues/{id}"),
            &[],
            &json!({"description": format!("rev {n}")}),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    let exported = get(&addr, "/api/v1/audit/export?format=json&entity=issue", &[]).await;
    assert_eq!(exported.status, 200);
    assert_eq!(exported.header("content-type"), Some("application/json"));
    assert!(
        exported
            .header("content-disposition")
            .unwrap()
            .contains("audit.json")
    );
    let rows = exported.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), ENTRIES);
    assert!(
        rows.windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64())
    );

    let csv = get(&addr, "/api/v1/audit/export?format=csv", &[]).await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,created_at,actor,actor_kind,entity,entity_id,action,request_id,changes,project_id"
        )
    );
    assert_eq!(lines.count(), ENTRIES);
    assert!(
        text.contains(r#"""t, with \""quotes\"""""#),
        "quotes are doubled inside quoted fields"
    );
    assert_eq!(
        get(&addr, "/api/v1/audit/export?format=xml", &[])
            .await
            .status,
        422
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_job_deletes_expired_audit_entries_only() {
    let server = TestServer::with(|c| {
        c.audit.retention_days = 1;
        c.audit.retention_interval_secs = 1;
    })
    .await;
    let addr = server.addr();
    create_issue(&addr, json!({"project_id": 1, "title": "recent"})).await;
    let old = roomcast::store::now_ms() - 3 * 24 * 3600 * 1000;
    for n in 0..5 {
        sqlx::query(
            "INSERT INTO audit_log (created_at, actor, actor_kind, entity, entity_id, action, changes, request_id) \
             VALUES ($1, 'old', 'user', 'issue', $2, 'create', '{}', 'r')",
        )
        .bind(old)
        .bind(1000 + n)
        .execute(server.server().store().pool())
        .await
        .unwrap();
    }
    assert_eq!(count(&server, "audit_log").await, 6);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&server, "audit_log").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = get(&addr, "/api/v1/audit", &[]).await.json();
    assert_eq!(
        left["items"][0]["actor"], "anonymous",
        "the recent entry stays"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_request_ids() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let echoed = get(&addr, "/healthz", &[("x-request-id", "abc-123")]).await;
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let replaced = get(
        &addr,
        "/api/v1/issues",
        &[("x-request-id", "bad id with spaces")],
    )
    .await;
    let generated = replaced.header("x-request-id").unwrap();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(generated.len(), 36, "a UUID");
    assert!(
        get(&addr, "/nowhere", &[])
            .await
            .header("x-request-id")
            .is_some()
    );
    let ready = get(&addr, "/readyz", &[]).await.json();
    assert_eq!(ready["checks"]["store"]["ready"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_with_429_and_tell_when_to_retry() {
    let server = TestServer::with(|c| {
        c.rate_limits.user_write_burst = 2;
        c.rate_limits.user_writes_per_second = 0.5;
        c.rate_limits.user_read_burst = 5;
    })
    .await;
    let addr = server.addr();
    for expected_remaining in ["1", "0"] {
        let ok = create_issue(&addr, json!({"project_id": 1, "title": "t"})).await;
        assert_eq!(ok.status, 201);
        assert_eq!(ok.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(ok.header("x-ratelimit-remaining"), Some(expected_remaining));
    }
    let refused = create_issue(&addr, json!({"project_id": 1, "title": "t"})).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        refused
            .header("x-ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 2
    );
    let read = get(&addr, "/api/v1/issues", &[]).await;
    assert_eq!(read.status, 200, "reads have their own bucket");
    assert_eq!(read.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(
        count(&server, "issues").await,
        2,
        "the refused request did nothing"
    );
    server.stop().await;
}
