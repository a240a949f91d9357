//! Project membership, on SQLite and (when `DATABASE_URL` is set) PostgreSQL: every
//! route of the issue tracker for a viewer, a member, a project admin, a non-member and a
//! global administrator; the tracker's rooms over WebSocket and HTTP; a membership change
//! taking effect at once; row-level security; GDPR export and erasure; the CLI seed.

use crate::support::http::{Reply, get, json, send};
use crate::support::process::run_to_exit;
use crate::support::tokens::{
    SERVICE_TOKEN, admin_token, bearer, exp, grant, hs256, secured_on, user_token,
};
use crate::support::{TestClient, TestServer, db};
use roomcast::protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame};
use roomcast::store::Caller;
use serde_json::{Value, json};

/// The callers of the matrix, by user id.
const VIEWER: &str = "vic";
const MEMBER: &str = "mem";
const PROJECT_ADMIN: &str = "pad";
const OUTSIDER: &str = "out";
const ROOT: &str = "root";

/// A secured server where project 1 has a viewer, a member and an admin, `out` is a
/// member of project 2 only, and `root` is a global administrator.
struct World {
    server: TestServer,
    addr: String,
    /// An issue of project 1 with one comment.
    issue: i64,
    comment: i64,
    /// An issue of project 2.
    other_issue: i64,
}

impl World {
    async fn on(url: &str) -> World {
        let server = secured_on(url).await;
        let addr = server.addr();
        grant(&addr, 1, VIEWER, "viewer").await;
        grant(&addr, 1, MEMBER, "member").await;
        grant(&addr, 1, PROJECT_ADMIN, "admin").await;
        grant(&addr, 2, OUTSIDER, "member").await;
        let service = bearer(SERVICE_TOKEN);
        let as_service = [("authorization", service.as_str())];
        let created = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &as_service,
            &json!({"project_id": 1, "title": "one"}),
        )
        .await;
        let issue = created.json()["id"].as_i64().unwrap();
        let comment = json(
            &addr,
            "POST",
            &format!("/api/v1/issues/{issue}/comments"),
            &as_service,
            &json!({"body": "hi"}),
        )
        .await
        .json()["id"]
            .as_i64()
            .unwrap();
        let other = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &as_service,
            &json!({"project_id": 2, "title": "two"}),
        )
        .await;
        World {
            server,
            addr,
            issue,
            comment,
            other_issue: other.json()["id"].as_i64().unwrap(),
        }
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let token = bearer(&token_of(who));
        let headers = [("authorization", token.as_str())];
        match body {
            Some(body) => json(&self.addr, method, path, &headers, &body).await,
            None => send(&self.addr, method, path, &headers, None).await,
        }
    }

    /// Asserts the status each caller gets; `OUTSIDER`'s 404 must be exactly the reply
    /// to the same request on a resource that does not exist (`missing_path`).
    async fn expect(
        &self,
        method: &str,
        path: &str,
        missing_path: &str,
        body: Option<Value>,
        statuses: [u16; 5],
    ) {
        let callers = [VIEWER, MEMBER, PROJECT_ADMIN, OUTSIDER, ROOT];
        for (who, status) in callers.into_iter().zip(statuses) {
            let reply = self.call(who, method, path, body.clone()).await;
            assert_eq!(
                reply.status,
                status,
                "{who}: {method} {path}: {}",
                reply.text()
            );
            if status == 404 {
                let missing = self.call(who, method, missing_path, body.clone()).await;
                assert_eq!(
                    (missing.status, missing.json()),
                    (404, reply.json()),
                    "{who}: {method} {path} tells a hidden resource from a missing one"
                );
            }
        }
    }
}

fn token_of(who: &str) -> String {
    if who == ROOT {
        admin_token(who)
    } else {
        user_token(who)
    }
}

fn ids(reply: &Reply) -> Vec<i64> {
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tracker_route_follows_project_membership() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let (issue, comment) = (w.issue, w.comment);
        let one = format!("/api/v1/issues/{issue}");
        let comments = format!("{one}/comments");
        let a_comment = format!("{comments}/{comment}");
        let none = "/api/v1/issues/999999";
        // Reads: every member; a non-member sees what a missing resource looks like.
        w.expect("GET", &one, none, None, [200, 200, 200, 404, 200])
            .await;
        w.expect(
            "GET",
            &comments,
            &format!("{none}/comments"),
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        w.expect(
            "GET",
            &a_comment,
            &format!("{comments}/999999"),
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        w.expect(
            "GET",
            "/api/v1/projects/1/members",
            "/api/v1/projects/99/members",
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        // Writes: members and admins; viewers 403.
        let patch = Some(json!({"status": "in_progress"}));
        w.expect("PATCH", &one, none, patch, [403, 200, 200, 404, 200])
            .await;
        let body = Some(json!({"body": "more"}));
        w.expect(
            "POST",
            &comments,
            &format!("{none}/comments"),
            body,
            [403, 201, 201, 404, 201],
        )
        .await;
        let edit = Some(json!({"body": "edited"}));
        w.expect(
            "PATCH",
            &a_comment,
            &format!("{comments}/999999"),
            edit,
            [403, 200, 200, 404, 200],
        )
        .await;
        // Creating an issue in a project one is not a member of looks like creating one
        // in a project nobody is a member of.
        let into = |project: i64| Some(json!({"project_id": project, "title": "new"}));
        for (who, status) in [
            (VIEWER, 403),
            (MEMBER, 201),
            (PROJECT_ADMIN, 201),
            (OUTSIDER, 404),
            (ROOT, 201),
        ] {
            let reply = w.call(who, "POST", "/api/v1/issues", into(1)).await;
            assert_eq!(reply.status, status, "{who}: {}", reply.text());
        }
        let hidden = w.call(OUTSIDER, "POST", "/api/v1/issues", into(1)).await;
        let nobodys = w.call(OUTSIDER, "POST", "/api/v1/issues", into(99)).await;
        assert_eq!(
            (hidden.status, hidden.json()),
            (nobodys.status, nobodys.json())
        );
        // Deletes need a fresh target per caller allowed to delete.
        for (who, status) in [
            (VIEWER, 403),
            (OUTSIDER, 404),
            (MEMBER, 204),
            (PROJECT_ADMIN, 204),
            (ROOT, 204),
        ] {
            let target = w
                .call(
                    MEMBER,
                    "POST",
                    "/api/v1/issues",
                    Some(json!({"project_id": 1, "title": "doomed"})),
                )
                .await
                .json()["id"]
                .as_i64()
                .unwrap();
            let note = w
                .call(
                    MEMBER,
                    "POST",
                    &format!("/api/v1/issues/{target}/comments"),
                    Some(json!({"body": "x"})),
                )
                .await
                .json()["id"]
                .as_i64()
                .unwrap();
            let note_path = format!("/api/v1/issues/{target}/comments/{note}");
            assert_eq!(
                w.call(who, "DELETE", &note_path, None).await.status,
                status,
                "{who} deletes a comment"
            );
            assert_eq!(
                w.call(who, "DELETE", &format!("/api/v1/issues/{target}"), None)
                    .await
                    .status,
                status,
                "{who} deletes an issue"
            );
        }
        // Managing members: project admins and global administrators.
        let member_path = "/api/v1/projects/1/members/newcomer";
        let role = Some(json!({"role": "viewer"}));
        w.expect(
            "PUT",
            member_path,
            "/api/v1/projects/99/members/newcomer",
            role.clone(),
            [403, 403, 201, 404, 200],
        )
        .await;
        w.expect(
            "DELETE",
            member_path,
            "/api/v1/projects/99/members/newcomer",
            None,
            [403, 403, 204, 404, 404],
        )
        .await;
        assert_eq!(
            w.call(ROOT, "PUT", "/api/v1/projects/3/members/someone", role)
                .await
                .status,
            201
        );
        // Listings show only the caller's projects.
        let all = w.call(ROOT, "GET", "/api/v1/issues", None).await;
        assert!(ids(&all).contains(&w.other_issue) && ids(&all).contains(&issue));
        let viewer = w.call(VIEWER, "GET", "/api/v1/issues", None).await;
        assert!(ids(&viewer).contains(&issue) && !ids(&viewer).contains(&w.other_issue));
        assert_eq!(
            ids(&w.call(OUTSIDER, "GET", "/api/v1/issues", None).await),
            vec![w.other_issue]
        );
        assert_eq!(
            ids(&w
                .call(OUTSIDER, "GET", "/api/v1/issues?project_id=1", None)
                .await),
            Vec::<i64>::new()
        );
        // The audit log: everything for global administrators, their projects' entries
        // for project admins, nothing for others.
        let everything = w
            .call(ROOT, "GET", "/api/v1/audit?limit=200", None)
            .await
            .json();
        let projects: Vec<Value> = everything["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["project_id"].clone())
            .collect();
        assert!(
            projects.contains(&json!(1)) && projects.contains(&json!(2)),
            "{projects:?}"
        );
        let admin_view = w
            .call(PROJECT_ADMIN, "GET", "/api/v1/audit?limit=200", None)
            .await
            .json();
        let mine = admin_view["items"].as_array().unwrap();
        assert!(!mine.is_empty());
        assert!(mine.iter().all(|e| e["project_id"] == 1), "{mine:?}");
        let export = w
            .call(PROJECT_ADMIN, "GET", "/api/v1/audit/export", None)
            .await
            .json();
        assert_eq!(export.as_array().unwrap().len(), mine.len());
        for who in [VIEWER, MEMBER, OUTSIDER] {
            assert_eq!(
                ids(&w.call(who, "GET", "/api/v1/audit", None).await),
                Vec::<i64>::new(),
                "{who}"
            );
            assert_eq!(
                w.call(who, "GET", "/api/v1/audit/export", None)
                    .await
                    .json(),
                json!([]),
                "{who}"
            );
        }
        // GDPR routes: global administrators only.
        for who in [VIEWER, MEMBER, PROJECT_ADMIN, OUTSIDER] {
            assert_eq!(
                w.call(who, "GET", "/api/v1/admin/users/mem/export", None)
                    .await
                    .status,
                403
            );
            assert_eq!(
                w.call(who, "POST", "/api/v1/admin/users/mem/erase", None)
                    .await
                    .status,
                403
            );
        }
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_checks_keep_validation_idempotency_and_etags() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let create = json!({"project_id": 1, "title": "keyed"});
        let token = bearer(&user_token(MEMBER));
        let headers = [
            ("authorization", token.as_str()),
            ("idempotency-key", "m-1"),
        ];
        let first = json(&w.addr, "POST", "/api/v1/issues", &headers, &create).await;
        let again = json(&w.addr, "POST", "/api/v1/issues", &headers, &create).await;
        assert_eq!((first.status, again.status), (201, 201));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(first.json(), again.json());
        let invalid = w
            .call(
                MEMBER,
                "POST",
                "/api/v1/issues",
                Some(json!({"project_id": 1, "title": ""})),
            )
            .await;
        assert_eq!(invalid.status, 422);
        let path = format!("/api/v1/issues/{}", w.issue);
        let stale = json(
            &w.addr,
            "PATCH",
            &path,
            &[("authorization", token.as_str()), ("if-match", "\"7\"")],
            &json!({"title": "x"}),
        )
        .await;
        assert_eq!(stale.status, 412);
        w.server.stop().await;
    }
}

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
async fn postgres_row_level_security_shows_a_transaction_only_its_users_projects() {
    // Runs when DATABASE_URL names a PostgreSQL (scripts/test.sh sets it when one is
    // reachable), like every PostgreSQL case of the suite.
    if let Some(url) = db::postgres_url().await {
        let w = World::on(&url).await;
        let pool = w.server.server().store().pool();
        let count = |sql: &'static str, user: Option<&'static str>| async move {
            let mut tx = pool.begin().await.unwrap();
            // The role the store runs tracker transactions as; the test connects as a
            // superuser, which row-level security would not apply to.
            sqlx::query("SELECT set_config('role', 'roomcast_tracker', true)")
                .execute(&mut *tx)
                .await
                .unwrap();
            if let Some(user) = user {
                sqlx::query("SELECT set_config('roomcast.user', $1, true)")
                    .bind(user)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            n
        };
        let tables = [
            "SELECT COUNT(*) FROM issues",
            "SELECT COUNT(*) FROM comments",
            "SELECT COUNT(*) FROM memberships",
            "SELECT COUNT(*) FROM audit_log",
        ];
        for sql in tables {
            assert_eq!(count(sql, None).await, 0, "{sql} without an acting user");
        }
        assert_eq!(count("SELECT COUNT(*) FROM issues", Some(VIEWER)).await, 1);
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM issues WHERE project_id = 2",
                Some(VIEWER)
            )
            .await,
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM comments", Some(VIEWER)).await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM memberships", Some(OUTSIDER)).await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_log", Some(VIEWER)).await,
            0,
            "viewers read no audit"
        );
        assert!(count("SELECT COUNT(*) FROM audit_log", Some(PROJECT_ADMIN)).await > 0);
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM audit_log WHERE project_id <> 1",
                Some(PROJECT_ADMIN)
            )
            .await,
            0
        );
        // A viewer's transaction cannot write, whatever the API would let through.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', 'roomcast_tracker', true), set_config('roomcast.user', 'vic', true)").execute(&mut *tx).await.unwrap();
        let write = sqlx::query("UPDATE issues SET title = 'x'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(write.rows_affected(), 0);
        tx.rollback().await.unwrap();
        // The store's own transactions: a non-member sees nothing even when it asks
        // directly, bypassing the API's checks.
        let store = w.server.server().store();
        let outsider = Caller {
            user: OUTSIDER.into(),
            admin: false,
        };
        assert!(store.get_issue(&outsider, w.issue).await.is_err());
        let viewer = Caller {
            user: VIEWER.into(),
            admin: false,
        };
        assert_eq!(store.get_issue(&viewer, w.issue).await.unwrap().id, w.issue);
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_data_is_exported_and_erased_with_the_audit_pseudonymised() {
    for url in db::all().await {
        let w = World::on(&url).await;
        // mem reports an issue and comments; pad assigns another issue to mem.
        let own = w
            .call(
                MEMBER,
                "POST",
                "/api/v1/issues",
                Some(json!({"project_id": 1, "title": "mine"})),
            )
            .await
            .json()["id"]
            .as_i64()
            .unwrap();
        w.call(
            MEMBER,
            "POST",
            &format!("/api/v1/issues/{own}/comments"),
            Some(json!({"body": "my note"})),
        )
        .await;
        let assigned = w
            .call(
                PROJECT_ADMIN,
                "PATCH",
                &format!("/api/v1/issues/{}", w.issue),
                Some(json!({"assignee": MEMBER})),
            )
            .await;
        assert_eq!(assigned.status, 200);
        let export = w
            .call(ROOT, "GET", "/api/v1/admin/users/mem/export", None)
            .await;
        assert_eq!(export.status, 200, "{}", export.text());
        let data = export.json();
        let issue_ids: Vec<i64> = data["issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        assert_eq!(issue_ids, vec![w.issue, own]);
        assert_eq!(data["comments"][0]["body"], "my note");
        assert_eq!(data["memberships"][0]["role"], "member");
        let by: Vec<&str> = data["audit_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entity"].as_str().unwrap())
            .collect();
        assert_eq!(by, ["issue", "comment"]);
        let about = data["audit_about"].as_array().unwrap();
        assert!(
            about.iter().any(|e| e["entity"] == "membership"),
            "{about:?}"
        );
        assert!(
            about
                .iter()
                .any(|e| e["changes"]["assignee"]["after"] == MEMBER),
            "{about:?}"
        );

        let erased = w
            .call(ROOT, "POST", "/api/v1/admin/users/mem/erase", None)
            .await;
        assert_eq!(erased.status, 200, "{}", erased.text());
        let erasure = erased.json();
        let pseudonym = erasure["pseudonym"].as_str().unwrap().to_owned();
        assert!(
            pseudonym.starts_with("erased:") && pseudonym.len() == 23,
            "{pseudonym}"
        );
        assert_eq!(erasure["memberships"], json!([1]));
        // Nothing names the user any more; the pseudonym stands where they stood.
        let after = w
            .call(ROOT, "GET", "/api/v1/admin/users/mem/export", None)
            .await
            .json();
        for list in [
            "issues",
            "comments",
            "memberships",
            "audit_by",
            "audit_about",
        ] {
            assert_eq!(after[list], json!([]), "{list}");
        }
        let issue = w
            .call(ROOT, "GET", &format!("/api/v1/issues/{own}"), None)
            .await
            .json();
        assert_eq!(issue["reporter"], pseudonym);
        let first = w
            .call(ROOT, "GET", &format!("/api/v1/issues/{}", w.issue), None)
            .await
            .json();
        assert_eq!(first["assignee"], pseudonym);
        let audit = w.call(ROOT, "GET", "/api/v1/audit/export", None).await;
        assert!(!audit.text().contains("\"mem\""), "{}", audit.text());
        let by_pseudonym = w
            .call(
                ROOT,
                "GET",
                &format!("/api/v1/audit?actor={pseudonym}"),
                None,
            )
            .await;
        assert_eq!(ids(&by_pseudonym).len(), 2);
        // The erasure is itself audited, by who did it, without the erased id.
        let entry = w
            .call(ROOT, "GET", "/api/v1/audit?entity=user&action=erase", None)
            .await
            .json();
        assert_eq!(entry["items"][0]["actor"], ROOT);
        assert_eq!(
            entry["items"][0]["changes"]["pseudonym"]["after"],
            pseudonym
        );
        // The user lost their project; the pseudonym is stable; the log is still
        // append-only outside an erasure.
        assert_eq!(
            w.call(MEMBER, "GET", &format!("/api/v1/issues/{own}"), None)
                .await
                .status,
            404
        );
        let again = w
            .call(ROOT, "POST", "/api/v1/admin/users/mem/erase", None)
            .await
            .json();
        assert_eq!(again["pseudonym"], pseudonym);
        let tamper = sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(w.server.server().store().pool())
            .await;
        assert!(tamper.is_err(), "the audit log stays append-only");
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_seeds_a_projects_first_admin() {
    let url = db::sqlite_url();
    let env = [("ROOMCAST_DATABASE_URL", url.as_str())];
    let (code, stderr) = run_to_exit(
        &[
            "members",
            "grant",
            "--project",
            "5",
            "--user",
            "alice",
            "--role",
            "admin",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _) = run_to_exit(
        &[
            "members",
            "grant",
            "--project",
            "5",
            "--user",
            "bob",
            "--role",
            "owner",
        ],
        &env,
    )
    .await;
    assert_ne!(code, Some(0), "an unknown role is refused");
    let server = secured_on(&url).await;
    let addr = server.addr();
    let alice = bearer(&user_token("alice"));
    let put = json(
        &addr,
        "PUT",
        "/api/v1/projects/5/members/bob",
        &[("authorization", &alice)],
        &json!({"role": "member"}),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let members = get(
        &addr,
        "/api/v1/projects/5/members",
        &[("authorization", &alice)],
    )
    .await
    .json();
    let seeded = &members["items"][0];
    assert_eq!(
        (seeded["user_id"].clone(), seeded["created_by"].clone()),
        (json!("alice"), json!("cli"))
    );
    let audit = get(
        &addr,
        "/api/v1/audit?entity=membership",
        &[("authorization", &alice)],
    )
    .await
    .json();
    assert_eq!(audit["items"][0]["actor"], "cli", "the seed is audited");
    server.stop().await;
    let (code, _) = run_to_exit(
        &["members", "revoke", "--project", "5", "--user", "alice"],
        &env,
    )
    .await;
    assert_eq!(code, Some(0));
    let (code, _) = run_to_exit(
        &["members", "revoke", "--project", "5", "--user", "alice"],
        &env,
    )
    .await;
    assert_ne!(code, Some(0), "nothing left to revoke");
}
