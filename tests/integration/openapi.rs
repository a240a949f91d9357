//! The server against `docs/openapi.yaml`: every route, called with valid and invalid
//! requests on SQLite and (when `DATABASE_URL` is set) PostgreSQL, must answer with a
//! status the document lists for it, a listed content type and a body valid against the
//! listed schema; a known path called with an unlisted method must answer 405 with the
//! document's methods in `Allow`. Each call also states the status it is meant to get,
//! so every case exercises what it says.

use crate::support::http::{Reply, send};
use crate::support::openapi::Document;
use crate::support::{TestServer, db};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast::config::Config;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const SECRET: &str = "conformance-secret-for-hs256";
const SERVICE_TOKEN: &str = "svc-conformance-0123456789";

/// Sends requests, checks every reply against the document, and remembers what failed
/// and which operations were called.
struct Conformance {
    doc: Document,
    addr: String,
    failures: Vec<String>,
    called: BTreeSet<(String, String)>,
}

/// A request body.
enum Body<'a> {
    None,
    Json(Value),
    Raw(&'a str, &'a [u8]),
}

impl Conformance {
    fn new(addr: &str) -> Conformance {
        Conformance {
            doc: Document::load(),
            addr: addr.to_owned(),
            failures: Vec::new(),
            called: BTreeSet::new(),
        }
    }

    /// Calls `method path` (an instance of `template`), expecting `status`.
    async fn call(
        &mut self,
        status: u16,
        template: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Reply {
        let mut all = headers.to_vec();
        let bytes = match &body {
            Body::None => None,
            Body::Json(value) => {
                all.push(("content-type", "application/json"));
                Some(value.to_string().into_bytes())
            }
            Body::Raw(kind, bytes) => {
                all.push(("content-type", kind));
                Some(bytes.to_vec())
            }
        };
        let reply = send(&self.addr, method, path, &all, bytes.as_deref()).await;
        let call = format!("{method} {path} -> {}", reply.status);
        if reply.status != status {
            self.failures
                .push(format!("{call}: expected {status} ({})", reply.text()));
        }
        for problem in self.doc.check(template, method, &reply) {
            self.failures.push(format!("{call}: {problem}"));
        }
        self.called.insert((template.to_owned(), method.to_owned()));
        reply
    }

    async fn get(&mut self, status: u16, template: &str, path: &str) -> Reply {
        self.call(status, template, "GET", path, &[], Body::None)
            .await
    }

    /// Panics with every failure collected so far.
    fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "{} responses disagree with docs/openapi.yaml:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Rate limits out of the way, and a small body limit for 413.
fn generous(c: &mut Config) {
    c.api.max_body_bytes = 4096;
    for rate in [
        &mut c.rate_limits.user_reads_per_second,
        &mut c.rate_limits.user_writes_per_second,
    ] {
        *rate = 1e6;
    }
    c.rate_limits.user_read_burst = 1_000_000;
    c.rate_limits.user_write_burst = 1_000_000;
    c.presence.rooms = vec!["lobby:*".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_document_says() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, generous).await;
        let mut api = Conformance::new(&server.addr());
        let issue = issues(&mut api).await;
        comments(&mut api, issue).await;
        audit(&mut api).await;
        rooms(&mut api).await;
        presence(&mut api).await;
        admin(&mut api).await;
        members(&mut api).await;
        admin_users(&mut api).await;
        probes(&mut api).await;
        console(&mut api).await;
        unlisted_methods(&mut api, issue).await;
        deletes(&mut api, issue).await;
        // Last: the instance drains (in process, nothing acts on it).
        let drain = api
            .call(202, "/admin/drain", "POST", "/admin/drain", &[], Body::None)
            .await;
        assert_eq!(drain.json()["draining"], true);
        api.assert_clean();
        let all: BTreeSet<(String, String)> = api.doc.operations().into_iter().collect();
        let uncalled: Vec<_> = all.difference(&api.called).collect();
        assert!(uncalled.is_empty(), "operations never called: {uncalled:?}");
        server.stop().await;
    }
}

/// Issue routes; returns the id of an issue that has a comment-free history of 2 versions.
async fn issues(api: &mut Conformance) -> i64 {
    const LIST: &str = "/api/v1/issues";
    const ONE: &str = "/api/v1/issues/{id}";
    let body = json!({"project_id": 7, "title": "Conformance", "assignee": "ana"});
    let key = [("idempotency-key", "conformance-1")];
    let created = api
        .call(201, LIST, "POST", LIST, &key, Body::Json(body.clone()))
        .await;
    let id = created.json()["id"].as_i64().unwrap();
    api.call(201, LIST, "POST", LIST, &key, Body::Json(body))
        .await;
    let other = json!({"project_id": 7, "title": "Other"});
    api.call(409, LIST, "POST", LIST, &key, Body::Json(other))
        .await;
    for (status, body) in [
        (422, Body::Json(json!({"project_id": 0, "title": ""}))),
        (
            422,
            Body::Json(json!({"project_id": 1, "title": "a\u{0}b"})),
        ),
        (
            422,
            Body::Raw(
                "application/json",
                br#"{"project_id": 1, "title": "\ud800"}"#,
            ),
        ),
        (
            422,
            Body::Raw(
                "application/json",
                br#"{"project_id": 1e400, "title": "t"}"#,
            ),
        ),
        (400, Body::Raw("application/json", b"{\"project_id\": 1,")),
        (415, Body::Raw("text/plain", b"hi")),
        (
            413,
            Body::Json(json!({"project_id": 1, "title": "t", "description": "d".repeat(5000)})),
        ),
    ] {
        api.call(status, LIST, "POST", LIST, &[], body).await;
    }
    let bad_key = [("idempotency-key", "has spaces")];
    let valid = json!({"project_id": 1, "title": "t"});
    api.call(400, LIST, "POST", LIST, &bad_key, Body::Json(valid))
        .await;

    for (status, query) in [
        (200, ""),
        (
            200,
            "?project_id=7&status=open&priority=medium&assignee=ana&limit=1",
        ),
        (200, "?cursor=1&limit=200"),
        (422, "?project_id=%ZZ"),
        (422, "?assignee=%FF"),
        (422, "?assignee=%00"),
        (422, "?status=weird"),
        (422, "?limit=0"),
        (422, "?sort=id"),
    ] {
        api.get(status, LIST, &format!("{LIST}{query}")).await;
    }

    let path = format!("{LIST}/{id}");
    api.get(200, ONE, &path).await;
    api.call(
        304,
        ONE,
        "GET",
        &path,
        &[("if-none-match", "\"1\"")],
        Body::None,
    )
    .await;
    api.get(404, ONE, &format!("{LIST}/999999")).await;
    api.get(404, ONE, &format!("{LIST}/abc")).await;
    api.get(422, ONE, &format!("{path}?verbose=1")).await;

    let patch = |value: Value| Body::Json(value);
    api.call(
        200,
        ONE,
        "PATCH",
        &path,
        &[("if-match", "\"1\"")],
        patch(json!({"status": "in_progress"})),
    )
    .await;
    for tag in ["\"1\"", "\"+2\"", "\"02\"", "W/2"] {
        api.call(
            412,
            ONE,
            "PATCH",
            &path,
            &[("if-match", tag)],
            patch(json!({"title": "x"})),
        )
        .await;
    }
    for (status, body) in [
        (422, patch(json!({"assignee": "\u{0}"}))),
        (422, patch(json!({"title": null}))),
        (
            422,
            Body::Raw("application/json", br#"{"description": "\udfff"}"#),
        ),
        (400, Body::Raw("application/json", b"{")),
        (415, Body::Raw("text/plain", b"{}")),
        (413, patch(json!({"description": "d".repeat(5000)}))),
    ] {
        api.call(status, ONE, "PATCH", &path, &[], body).await;
    }
    api.call(
        404,
        ONE,
        "PATCH",
        &format!("{LIST}/999999"),
        &[],
        patch(json!({})),
    )
    .await;
    id
}

async fn comments(api: &mut Conformance, issue: i64) {
    const LIST: &str = "/api/v1/issues/{id}/comments";
    const ONE: &str = "/api/v1/issues/{id}/comments/{comment_id}";
    let base = format!("/api/v1/issues/{issue}/comments");
    let key = [("idempotency-key", "conformance-comment")];
    let first = json!({"body": "First"});
    let created = api
        .call(201, LIST, "POST", &base, &key, Body::Json(first.clone()))
        .await;
    let comment = created.json()["id"].as_i64().unwrap();
    api.call(201, LIST, "POST", &base, &key, Body::Json(first))
        .await;
    api.call(
        409,
        LIST,
        "POST",
        &base,
        &key,
        Body::Json(json!({"body": "Second"})),
    )
    .await;
    for (status, body) in [
        (422, Body::Json(json!({"body": "nul \u{0} inside"}))),
        (422, Body::Json(json!({"body": ""}))),
        (
            422,
            Body::Raw("application/json", br#"{"body": "\ud800\u0041"}"#),
        ),
        (400, Body::Raw("application/json", b"{\"body\"")),
        (415, Body::Raw("text/csv", b"body")),
        (413, Body::Json(json!({"body": "b".repeat(5000)}))),
    ] {
        api.call(status, LIST, "POST", &base, &[], body).await;
    }
    let missing = Body::Json(json!({"body": "x"}));
    api.call(
        404,
        LIST,
        "POST",
        "/api/v1/issues/999999/comments",
        &[],
        missing,
    )
    .await;

    for (status, query) in [
        (200, ""),
        (200, "?limit=1&cursor=0"),
        (422, "?limit=9999"),
        (422, "?cursor=%ZZ"),
        (422, "?page=2"),
    ] {
        api.get(status, LIST, &format!("{base}{query}")).await;
    }
    api.get(404, LIST, "/api/v1/issues/999999/comments").await;

    let path = format!("{base}/{comment}");
    api.get(200, ONE, &path).await;
    api.call(
        304,
        ONE,
        "GET",
        &path,
        &[("if-none-match", "W/\"1\"")],
        Body::None,
    )
    .await;
    api.get(404, ONE, &format!("{base}/999999")).await;
    let edit = json!({"body": "Edited"});
    api.call(
        200,
        ONE,
        "PATCH",
        &path,
        &[("if-match", "\"1\"")],
        Body::Json(edit),
    )
    .await;
    let late = json!({"body": "Late"});
    api.call(
        412,
        ONE,
        "PATCH",
        &path,
        &[("if-match", "\"1\"")],
        Body::Json(late),
    )
    .await;
    for (status, body) in [
        (422, Body::Json(json!({"body": "\u{0}"}))),
        (422, Body::Json(json!({"text": "x"}))),
        (400, Body::Raw("application/json", b"{\"body\": }")),
        (415, Body::Raw("text/plain", b"x")),
        (413, Body::Json(json!({"body": "b".repeat(5000)}))),
    ] {
        api.call(status, ONE, "PATCH", &path, &[], body).await;
    }
    let missing = Body::Json(json!({"body": "x"}));
    api.call(404, ONE, "PATCH", &format!("{base}/999999"), &[], missing)
        .await;
    api.call(
        412,
        ONE,
        "DELETE",
        &path,
        &[("if-match", "\"01\"")],
        Body::None,
    )
    .await;
    api.call(
        204,
        ONE,
        "DELETE",
        &path,
        &[("if-match", "\"2\"")],
        Body::None,
    )
    .await;
    api.call(404, ONE, "DELETE", &path, &[], Body::None).await;
}

async fn audit(api: &mut Conformance) {
    const SEARCH: &str = "/api/v1/audit";
    const EXPORT: &str = "/api/v1/audit/export";
    for (status, query) in [
        (200, ""),
        (
            200,
            "?entity=issue&entity_id=1&actor=anonymous&action=create&limit=5&cursor=0",
        ),
        (200, "?from=2020-01-01T00:00:00Z&to=2999-12-31%2023:59:59.5"),
        (422, "?from=yesterday"),
        (422, "?from=2026-01-01T00:00:00%2B01:00"),
        (422, "?actor=%FF"),
        (422, "?actor=a%00b"),
        (422, "?entity=%ZZ"),
        (422, "?entity=user&action=read"),
        (422, "?format=csv"),
    ] {
        api.get(status, SEARCH, &format!("{SEARCH}{query}")).await;
    }
    for (status, query) in [
        (200, ""),
        (200, "?format=csv&entity=issue"),
        (200, "?format=json&actor=anonymous&cursor=1"),
        (422, "?format=xml"),
        (422, "?actor=%FF"),
        (422, "?entity=%ZZ"),
        (422, "?actor=%00"),
        (422, "?limit=5"),
    ] {
        let reply = api.get(status, EXPORT, &format!("{EXPORT}{query}")).await;
        if status == 200 && !query.contains("csv") {
            let rows = reply.json();
            let wanted = query.contains("actor").then_some("anonymous");
            assert!(
                rows.as_array()
                    .unwrap()
                    .iter()
                    .all(|row| wanted.is_none_or(|actor| row["actor"] == actor)),
                "the filter applies: {rows}"
            );
        }
    }
}

/// Operator actions (open mode: the anonymous caller acts as administrator).
async fn admin(api: &mut Conformance) {
    const DISCONNECT: &str = "/api/v1/admin/disconnect";
    const UNSUBSCRIBE: &str = "/api/v1/admin/unsubscribe";
    for (status, body) in [
        (202, json!({"user": "alice"})),
        (202, json!({"user": "alice", "reconnect": true})),
        (422, json!({"user": ""})),
        (422, json!({"user": "alice", "extra": 1})),
    ] {
        api.call(
            status,
            DISCONNECT,
            "POST",
            DISCONNECT,
            &[],
            Body::Json(body),
        )
        .await;
    }
    for (status, body) in [
        (202, json!({"user": "alice", "room": "project:7"})),
        (422, json!({"user": "alice", "room": "no spaces"})),
        (422, json!({"user": "alice"})),
    ] {
        api.call(
            status,
            UNSUBSCRIBE,
            "POST",
            UNSUBSCRIBE,
            &[],
            Body::Json(body),
        )
        .await;
    }
    api.call(
        400,
        UNSUBSCRIBE,
        "POST",
        UNSUBSCRIBE,
        &[],
        Body::Raw("application/json", b"{"),
    )
    .await;
    cluster(api).await;
}

/// The cluster view and the drain of an instance (the in-process server is its own
/// cluster; its drain is only requested, the test harness does not carry it out).
async fn cluster(api: &mut Conformance) {
    const DRAIN: &str = "/api/v1/admin/drain";
    // Listed once its first announcement is in (at start).
    let view = cluster_view_until(api, "the instance listed as ready", |view| {
        view["instances"][0]["state"] == "ready"
    })
    .await;
    let me = view["self_id"].as_str().expect("self_id").to_owned();
    assert_eq!(view["instances"][0]["id"], me.as_str(), "{view}");
    for (status, body) in [
        (404, json!({"instance": "no-such-instance"})),
        (422, json!({"instance": me, "extra": 1})),
        (422, json!({})),
        (202, json!({"instance": me})),
    ] {
        api.call(status, DRAIN, "POST", DRAIN, &[], Body::Json(body))
            .await;
    }
    api.call(
        400,
        DRAIN,
        "POST",
        DRAIN,
        &[],
        Body::Raw("application/json", b"{"),
    )
    .await;
    cluster_view_until(api, "the instance listed as draining", |view| {
        view["instances"][0]["state"] == "draining"
    })
    .await;
    api.call(
        409,
        DRAIN,
        "POST",
        DRAIN,
        &[],
        Body::Json(json!({"instance": me})),
    )
    .await;
}

/// Reads the cluster view until `done` holds for it.
async fn cluster_view_until(
    api: &mut Conformance,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    const CLUSTER: &str = "/api/v1/admin/cluster";
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let view = api.get(200, CLUSTER, CLUSTER).await.json();
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Presence over HTTP (no one connected: empty sets are still the documented shape).
async fn presence(api: &mut Conformance) {
    const SET: &str = "/api/v1/rooms/{room}/presence";
    const STATS: &str = "/api/v1/rooms/{room}/presence/stats";
    for (template, suffix) in [(SET, ""), (STATS, "/stats")] {
        for (status, room) in [(200, "lobby:1"), (404, "news:today"), (422, "no%20spaces")] {
            let path = format!("/api/v1/rooms/{room}/presence{suffix}");
            api.call(status, template, "GET", &path, &[], Body::None)
                .await;
        }
    }
}

async fn rooms(api: &mut Conformance) {
    const PUBLISH: &str = "/api/v1/publish";
    const HISTORY: &str = "/api/v1/rooms/{room}/history";
    let message = json!({"room": "news:today", "data": {"headline": "out"}});
    let key = [("idempotency-key", "conformance-publish")];
    let ack = api
        .call(
            200,
            PUBLISH,
            "POST",
            PUBLISH,
            &key,
            Body::Json(message.clone()),
        )
        .await;
    let epoch = ack.json()["epoch"].as_str().unwrap().to_owned();
    api.call(200, PUBLISH, "POST", PUBLISH, &key, Body::Json(message))
        .await;
    for (status, body) in [
        (422, Body::Json(json!({"room": "no spaces", "data": 1}))),
        (422, Body::Json(json!({"room": "r\u{0}", "data": 1}))),
        (422, Body::Json(json!({"room": "r", "data": null}))),
        (
            422,
            Body::Raw("application/json", br#"{"room": "r", "data": "\ud800"}"#),
        ),
        (400, Body::Raw("application/json", b"{\"room\": ")),
        (415, Body::Raw("text/plain", b"x")),
        (
            413,
            Body::Json(json!({"room": "r", "data": "d".repeat(5000)})),
        ),
    ] {
        api.call(status, PUBLISH, "POST", PUBLISH, &[], body).await;
    }
    let bad_key = [("idempotency-key", "")];
    let body = Body::Json(json!({"room": "r", "data": 1}));
    api.call(400, PUBLISH, "POST", PUBLISH, &bad_key, body)
        .await;

    for (status, path) in [
        (200, "/api/v1/rooms/news:today/history".to_owned()),
        (
            200,
            format!("/api/v1/rooms/news:today/history?since={epoch}:0&limit=1"),
        ),
        (200, "/api/v1/rooms/a%2Fb/history".to_owned()),
        (404, "/api/v1/rooms/%ZZ/history".to_owned()),
        (422, "/api/v1/rooms/no%20spaces/history".to_owned()),
        (422, "/api/v1/rooms/r/history?since=nonsense".to_owned()),
        (422, "/api/v1/rooms/r/history?since=%FF:1".to_owned()),
        (422, "/api/v1/rooms/r/history?limit=101".to_owned()),
        (422, "/api/v1/rooms/r/history?from=1".to_owned()),
    ] {
        api.get(status, HISTORY, &path).await;
    }
}

async fn probes(api: &mut Conformance) {
    for probe in ["/healthz", "/readyz"] {
        let got = api.get(200, probe, probe).await;
        let head = api.call(200, probe, "HEAD", probe, &[], Body::None).await;
        assert!(head.body.is_empty(), "HEAD {probe} has no body");
        assert_eq!(
            head.header("content-type"),
            got.header("content-type"),
            "HEAD {probe} has GET's headers"
        );
    }
}

/// The console's sign-in (an open server: every token is an administrator's, and no
/// cookie is set).
async fn console(api: &mut Conformance) {
    const SESSION: &str = "/console/session";
    let token = Body::Json(json!({"token": "anything"}));
    api.call(204, SESSION, "POST", SESSION, &[], token).await;
    let foreign = [("origin", "http://elsewhere.example")];
    let token = Body::Json(json!({"token": "anything"}));
    api.call(403, SESSION, "POST", SESSION, &foreign, token)
        .await;
    for body in [
        json!({}),
        json!({"token": 1}),
        json!({"token": "t", "x": 1}),
    ] {
        api.call(422, SESSION, "POST", SESSION, &[], Body::Json(body))
            .await;
    }
    let big = Body::Json(json!({"token": "t".repeat(20_000)}));
    api.call(413, SESSION, "POST", SESSION, &[], big).await;
    api.call(204, SESSION, "DELETE", SESSION, &[], Body::None)
        .await;
    api.call(403, SESSION, "DELETE", SESSION, &foreign, Body::None)
        .await;
}

/// A known path with a method the document does not list: 405, `Allow` naming the
/// listed methods.
/// Project membership routes (an open server: the caller is a global administrator).
async fn members(api: &mut Conformance) {
    const LIST: &str = "/api/v1/projects/{id}/members";
    const ONE: &str = "/api/v1/projects/{id}/members/{user}";
    let path = "/api/v1/projects/7/members/ann";
    let put = |role: &str| Body::Json(json!({ "role": role }));
    api.call(201, ONE, "PUT", path, &[], put("viewer")).await;
    api.call(200, ONE, "PUT", path, &[], put("member")).await;
    api.call(200, ONE, "PUT", path, &[], put("member")).await;
    api.call(422, ONE, "PUT", path, &[], put("owner")).await;
    let extra = Body::Json(json!({"role": "member", "admin": true}));
    api.call(422, ONE, "PUT", path, &[], extra).await;
    api.call(
        400,
        ONE,
        "PUT",
        path,
        &[],
        Body::Raw("application/json", b"{"),
    )
    .await;
    api.call(
        415,
        ONE,
        "PUT",
        path,
        &[],
        Body::Raw("text/plain", b"member"),
    )
    .await;
    let bad_user = "/api/v1/projects/7/members/a%0Ab";
    api.call(422, ONE, "PUT", bad_user, &[], put("viewer"))
        .await;
    api.call(
        404,
        ONE,
        "PUT",
        "/api/v1/projects/0/members/ann",
        &[],
        put("viewer"),
    )
    .await;
    api.get(200, LIST, "/api/v1/projects/7/members").await;
    api.get(200, LIST, "/api/v1/projects/7/members?limit=1&cursor=0")
        .await;
    api.get(422, LIST, "/api/v1/projects/7/members?limit=0")
        .await;
    api.get(422, LIST, "/api/v1/projects/7/members?role=admin")
        .await;
    api.get(404, LIST, "/api/v1/projects/x/members").await;
    api.call(204, ONE, "DELETE", path, &[], Body::None).await;
    api.call(404, ONE, "DELETE", path, &[], Body::None).await;
    api.call(422, ONE, "DELETE", bad_user, &[], Body::None)
        .await;
}

/// GDPR routes.
async fn admin_users(api: &mut Conformance) {
    const EXPORT: &str = "/api/v1/admin/users/{user}/export";
    const ERASE: &str = "/api/v1/admin/users/{user}/erase";
    api.get(200, EXPORT, "/api/v1/admin/users/ana/export").await;
    api.get(422, EXPORT, "/api/v1/admin/users/a%00/export")
        .await;
    api.get(422, EXPORT, "/api/v1/admin/users/ana/export?full=1")
        .await;
    let erase = "/api/v1/admin/users/nobody/erase";
    api.call(200, ERASE, "POST", erase, &[], Body::None).await;
    api.call(
        422,
        ERASE,
        "POST",
        "/api/v1/admin/users/a%0A/erase",
        &[],
        Body::None,
    )
    .await;
}

async fn unlisted_methods(api: &mut Conformance, issue: i64) {
    let concrete = |template: &str| {
        template
            .replace("{id}", &issue.to_string())
            .replace("{comment_id}", "1")
            .replace("{room}", "news:today")
            .replace("{user}", "ann")
    };
    let templates: BTreeSet<String> = api.doc.operations().into_iter().map(|(t, _)| t).collect();
    for template in templates {
        let listed: BTreeSet<String> = api.doc.methods_of(&template).into_iter().collect();
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            if listed.contains(method) {
                continue;
            }
            let path = concrete(&template);
            let reply = send(&api.addr, method, &path, &[], None).await;
            let allow: BTreeSet<String> = reply
                .header("allow")
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            if reply.status != 405 || allow != listed {
                api.failures.push(format!(
                    "{method} {path} -> {} with Allow {allow:?}; the document lists {listed:?}",
                    reply.status
                ));
            }
        }
    }
}

async fn deletes(api: &mut Conformance, issue: i64) {
    const ONE: &str = "/api/v1/issues/{id}";
    let path = format!("/api/v1/issues/{issue}");
    api.call(
        412,
        ONE,
        "DELETE",
        &path,
        &[("if-match", "\"+2\"")],
        Body::None,
    )
    .await;
    api.call(
        412,
        ONE,
        "DELETE",
        &path,
        &[("if-match", "\"1\"")],
        Body::None,
    )
    .await;
    api.call(
        204,
        ONE,
        "DELETE",
        &path,
        &[("if-match", "\"2\"")],
        Body::None,
    )
    .await;
    api.call(404, ONE, "DELETE", &path, &[], Body::None).await;
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn user_token(rooms: Value) -> String {
    let claims = json!({
        "sub": "ann",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "rooms": rooms,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_credentials_and_limits_are_as_documented() {
    let server = TestServer::with(|c| {
        c.auth.jwt_hs256_secret = SECRET.into();
        c.auth.service_tokens = format!("billing:{SERVICE_TOKEN}");
        c.rate_limits.user_read_burst = 3;
        c.rate_limits.user_reads_per_second = 0.01;
    })
    .await;
    let mut api = Conformance::new(&server.addr());
    let user = bearer(&user_token(json!({"subscribe": ["project:*"]})));
    let service = bearer(SERVICE_TOKEN);
    let as_user = [("authorization", user.as_str())];
    let as_service = [("authorization", service.as_str())];
    let forged = [("authorization", "Bearer not-a-token")];

    api.get(401, "/api/v1/issues", "/api/v1/issues").await;
    api.call(
        401,
        "/api/v1/audit/export",
        "GET",
        "/api/v1/audit/export",
        &forged,
        Body::None,
    )
    .await;
    // Another user, so that the read bucket counted below stays untouched.
    let other = bearer(
        &encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "bea", "exp": jsonwebtoken::get_current_timestamp() + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap(),
    );
    api.call(
        403,
        "/api/v1/admin/cluster",
        "GET",
        "/api/v1/admin/cluster",
        &[("authorization", other.as_str())],
        Body::None,
    )
    .await;
    api.call(
        403,
        "/api/v1/admin/drain",
        "POST",
        "/api/v1/admin/drain",
        &as_user,
        Body::Json(json!({"instance": "x"})),
    )
    .await;
    api.call(
        403,
        "/admin/drain",
        "POST",
        "/admin/drain",
        &as_user,
        Body::None,
    )
    .await;
    api.call(
        403,
        "/api/v1/admin/disconnect",
        "POST",
        "/api/v1/admin/disconnect",
        &as_user,
        Body::Json(json!({"user": "bob"})),
    )
    .await;
    let message = json!({"room": "project:1", "data": 1});
    api.call(
        403,
        "/api/v1/publish",
        "POST",
        "/api/v1/publish",
        &as_user,
        Body::Json(message.clone()),
    )
    .await;
    api.call(
        200,
        "/api/v1/publish",
        "POST",
        "/api/v1/publish",
        &as_service,
        Body::Json(message),
    )
    .await;
    // ann may read project 1 (a viewer) and nothing else of the tracker.
    const MEMBER: &str = "/api/v1/projects/{id}/members/{user}";
    let viewer = Body::Json(json!({"role": "viewer"}));
    let ann_in_1 = "/api/v1/projects/1/members/ann";
    api.call(201, MEMBER, "PUT", ann_in_1, &as_service, viewer)
        .await;
    let raise = Body::Json(json!({"role": "admin"}));
    api.call(403, MEMBER, "PUT", ann_in_1, &as_user, raise)
        .await;
    let into_2 = Body::Json(json!({"role": "admin"}));
    let ann_in_2 = "/api/v1/projects/2/members/ann";
    api.call(404, MEMBER, "PUT", ann_in_2, &as_user, into_2)
        .await;
    let issue = Body::Json(json!({"project_id": 1, "title": "t"}));
    api.call(
        403,
        "/api/v1/issues",
        "POST",
        "/api/v1/issues",
        &as_user,
        issue,
    )
    .await;
    let elsewhere = Body::Json(json!({"project_id": 2, "title": "t"}));
    api.call(
        404,
        "/api/v1/issues",
        "POST",
        "/api/v1/issues",
        &as_user,
        elsewhere,
    )
    .await;
    const ERASE: &str = "/api/v1/admin/users/{user}/erase";
    let erase = "/api/v1/admin/users/bob/erase";
    api.call(403, ERASE, "POST", erase, &as_user, Body::None)
        .await;
    const HISTORY: &str = "/api/v1/rooms/{room}/history";
    api.call(
        403,
        HISTORY,
        "GET",
        "/api/v1/rooms/issue:1/history",
        &as_user,
        Body::None,
    )
    .await;
    api.call(
        200,
        HISTORY,
        "GET",
        "/api/v1/rooms/project:1/history",
        &as_user,
        Body::None,
    )
    .await;
    // The user's read bucket (3) is spent by the two history reads and this one.
    api.call(
        200,
        "/api/v1/audit",
        "GET",
        "/api/v1/audit",
        &as_user,
        Body::None,
    )
    .await;
    let limited = api
        .call(
            429,
            "/api/v1/issues",
            "GET",
            "/api/v1/issues",
            &as_user,
            Body::None,
        )
        .await;
    assert!(limited.header("retry-after").is_some());
    // Probes need no credentials.
    api.get(200, "/healthz", "/healthz").await;
    api.get(200, "/readyz", "/readyz").await;
    api.assert_clean();
    server.stop().await;
}
