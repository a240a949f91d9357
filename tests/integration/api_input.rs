//! Input edges of the HTTP API, on SQLite and (when `DATABASE_URL` is set) PostgreSQL:
//! U+0000 in stored text, query values that do not decode, unknown query parameters,
//! non-canonical `If-Match` versions, the probes' methods; then property tests that
//! throw generated values (NUL, lone surrogate escapes, huge numbers, bad
//! percent-encodings, values near every bound) at every body field and every query
//! parameter and check the answer against what the field accepts: a 2xx when it does, a
//! 422 naming the field when it does not, never a 5xx.

use crate::support::http::{Reply, get, json, send};
use crate::support::{TestServer, db};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use roomcast::config::Config;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No rate limit in the way, and bodies large enough for every generated value.
fn roomy(c: &mut Config) {
    c.api.max_body_bytes = 1 << 20;
    c.rate_limits.user_reads_per_second = 1e6;
    c.rate_limits.user_writes_per_second = 1e6;
    c.rate_limits.user_read_burst = 1_000_000;
    c.rate_limits.user_write_burst = 1_000_000;
}

/// Asserts a 422 whose details name `field`.
fn assert_names(reply: &Reply, field: &str, what: &str) {
    assert_eq!(reply.status, 422, "{what}: {}", reply.text());
    let error = reply.json()["error"].clone();
    assert_eq!(error["code"], "validation_failed", "{what}");
    let details = error["details"].as_array().cloned().unwrap_or_default();
    assert!(
        details.iter().any(|d| d["field"] == field),
        "{what}: {field:?} is not named in {details:?}"
    );
}

async fn new_issue(addr: &str) -> i64 {
    let created = json(
        addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 1, "title": "t"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    created.json()["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_stored_text_is_refused_naming_the_field() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, roomy).await;
        let addr = server.addr();
        let issue = new_issue(&addr).await;
        let comment = json(
            &addr,
            "POST",
            &format!("/api/v1/issues/{issue}/comments"),
            &[],
            &json!({"body": "fine"}),
        )
        .await
        .json()["id"]
            .as_i64()
            .unwrap();
        let issue_path = format!("/api/v1/issues/{issue}");
        let comment_path = format!("{issue_path}/comments/{comment}");
        for text in ["\u{0}", "\u{0}leading", "trailing\u{0}", "in\u{0}side"] {
            for field in ["title", "description", "assignee"] {
                let mut body = json!({"project_id": 1, "title": "t"});
                body[field] = json!(text);
                let created = json(&addr, "POST", "/api/v1/issues", &[], &body).await;
                assert_names(&created, field, &format!("POST {field} {text:?}"));
                let patch = json!({ field: text });
                let patched = json(&addr, "PATCH", &issue_path, &[], &patch).await;
                assert_names(&patched, field, &format!("PATCH {field} {text:?}"));
            }
            let body = json!({"body": text});
            let base = format!("{issue_path}/comments");
            let posted = json(&addr, "POST", &base, &[], &body).await;
            assert_names(&posted, "body", &format!("POST comment {text:?}"));
            let edited = json(&addr, "PATCH", &comment_path, &[], &body).await;
            assert_names(&edited, "body", &format!("PATCH comment {text:?}"));
        }
        let issue_now = get(&addr, &issue_path, &[]).await.json();
        assert_eq!(issue_now["version"], 1, "nothing was changed");
        let audit = get(&addr, "/api/v1/audit", &[]).await.json();
        assert_eq!(
            audit["items"].as_array().unwrap().len(),
            2,
            "nothing audited"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_values_that_do_not_decode_are_refused_not_dropped() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, roomy).await;
        let addr = server.addr();
        new_issue(&addr).await;
        for (path, field) in [
            ("/api/v1/issues?project_id=%ZZ", "project_id"),
            ("/api/v1/issues?assignee=%FF", "assignee"),
            ("/api/v1/issues?assignee=ana%00", "assignee"),
            ("/api/v1/issues?status=%+1", "status"),
            ("/api/v1/audit?actor=%FF", "actor"),
            ("/api/v1/audit?entity=%ZZ", "entity"),
            ("/api/v1/audit?actor=%00", "actor"),
            ("/api/v1/audit/export?actor=%FF", "actor"),
            ("/api/v1/audit/export?format=csv&entity=%ZZ", "entity"),
            ("/api/v1/audit/export?actor=someone%00", "actor"),
            ("/api/v1/audit/export?actor=%C3%28", "actor"),
            ("/api/v1/issues/1/comments?cursor=%4", "cursor"),
            ("/api/v1/rooms/r/history?since=%E2%82", "since"),
        ] {
            let reply = get(&addr, path, &[]).await;
            assert_names(&reply, field, path);
            assert_eq!(reply.header("content-type"), Some("application/json"));
        }
        // A filter that decodes is applied: the one entry is someone else's.
        let other = get(&addr, "/api/v1/audit/export?actor=someone%20else", &[]).await;
        assert_eq!((other.status, other.json()), (200, json!([])));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_refused_on_every_route() {
    let server = TestServer::with(roomy).await;
    let addr = server.addr();
    let issue = new_issue(&addr).await;
    for (method, path, field) in [
        ("GET", "/api/v1/issues?projectid=1".to_owned(), "projectid"),
        (
            "GET",
            format!("/api/v1/issues/{issue}?fields=all"),
            "fields",
        ),
        (
            "GET",
            format!("/api/v1/issues/{issue}/comments?sort=desc"),
            "sort",
        ),
        ("GET", "/api/v1/audit?user=ann".to_owned(), "user"),
        ("GET", "/api/v1/audit/export?limit=10".to_owned(), "limit"),
        ("GET", "/api/v1/rooms/r/history?after=1".to_owned(), "after"),
        ("DELETE", format!("/api/v1/issues/{issue}?force=1"), "force"),
        ("POST", "/api/v1/publish?room=r".to_owned(), "room"),
        ("GET", "/api/v1/issues?st%61tu=open".to_owned(), "statu"),
        ("GET", "/api/v1/issues?%ZZ=1".to_owned(), "%ZZ"),
    ] {
        let reply = send(&addr, method, &path, &[], None).await;
        assert_names(&reply, field, &path);
    }
    assert_eq!(
        get(&addr, "/api/v1/issues?st%61tus=open", &[]).await.status,
        200,
        "names are percent-decoded too"
    );
    assert_eq!(
        get(&addr, &format!("/api/v1/issues/{issue}"), &[])
            .await
            .status,
        200,
        "the refused DELETE deleted nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_names_a_version_only_in_its_canonical_form() {
    for url in db::all().await {
        let server = TestServer::on_database(&url, roomy).await;
        let addr = server.addr();
        let path = format!("/api/v1/issues/{}", new_issue(&addr).await);
        for tag in ["\"+1\"", "\"01\"", "+1", "01", "W/1", "\"1", "\" 1\""] {
            let body = json!({"title": "x"});
            let reply = json(&addr, "PATCH", &path, &[("if-match", tag)], &body).await;
            assert_eq!(reply.status, 412, "{tag}: {}", reply.text());
            assert_eq!(reply.json()["error"]["code"], "version_mismatch");
            let delete = send(&addr, "DELETE", &path, &[("if-match", tag)], None).await;
            assert_eq!(delete.status, 412, "{tag}");
        }
        assert_eq!(
            get(&addr, &path, &[]).await.json()["title"],
            "t",
            "unchanged"
        );
        for (tag, version) in [("\"1\"", 2), ("W/\"2\"", 3), ("3", 4)] {
            let patch = json!({"title": format!("v{version}")});
            let reply = json(&addr, "PATCH", &path, &[("if-match", tag)], &patch).await;
            assert_eq!(reply.status, 200, "{tag}");
            assert_eq!(reply.json()["version"], version);
        }
        server.stop().await;
    }
}

/// One raw HTTP/1.1 exchange, so that nothing hyper's client does hides what was sent.
async fn raw_exchange(addr: &str, method: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_head_and_name_their_methods_on_405() {
    let server = TestServer::start().await;
    let addr = server.addr();
    for probe in ["/healthz", "/readyz"] {
        let got = raw_exchange(&addr, "GET", probe).await;
        let (_, get_body) = got.split_once("\r\n\r\n").unwrap();
        let head = raw_exchange(&addr, "HEAD", probe).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let (head_headers, rest) = head.split_once("\r\n\r\n").unwrap();
        assert_eq!(rest, "", "HEAD {probe} sends no body");
        let length = head_headers
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .expect("HEAD carries Content-Length");
        if probe == "/readyz" {
            // /healthz's uptime may tick between the two requests; /readyz's body is stable.
            assert_eq!(
                length,
                get_body.len().to_string(),
                "the length GET would send"
            );
        }
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let refused = send(&addr, method, probe, &[], None).await;
            assert_eq!(refused.status, 405, "{method} {probe}");
            assert_eq!(
                refused.header("allow"),
                Some("GET, HEAD"),
                "{method} {probe}"
            );
            assert_eq!(refused.json()["error"]["code"], "method_not_allowed");
        }
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Property tests.

/// Cases per field or parameter: enough to hit every kind of value several times, few
/// enough that the whole file stays within seconds. `PROPTEST_CASES` raises it.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// A JSON value as sent, as raw text (a lone surrogate escape has no `serde_json::Value`).
#[derive(Debug, Clone)]
enum Sent {
    /// A string, encoded by serde_json.
    Text(String),
    /// A string with one escaped UTF-16 surrogate that has no partner.
    LoneSurrogate(String),
    /// A JSON number, as written.
    Number(String),
    /// `null`, a boolean, an array or an object.
    Other(&'static str),
}

impl Sent {
    fn json(&self) -> String {
        match self {
            Sent::Text(text) => serde_json::to_string(text).unwrap(),
            Sent::LoneSurrogate(raw) | Sent::Number(raw) => raw.clone(),
            Sent::Other(raw) => (*raw).to_owned(),
        }
    }
}

/// Strings of every kind, and strings of lengths around each of `bounds`.
fn strings(bounds: &'static [usize]) -> BoxedStrategy<String> {
    let char_mix = prop_oneof![
        Just('a'),
        Just('\u{e9}'),
        Just('\u{1F600}'),
        Just('\u{0}'),
        Just('"'),
        Just('\n')
    ];
    let near_bound = proptest::sample::select(bounds).prop_flat_map(move |bound| {
        proptest::collection::vec(char_mix.clone(), bound.saturating_sub(2)..=bound + 2)
            .prop_map(String::from_iter)
    });
    let with_nul = (any::<String>(), any::<String>()).prop_map(|(a, b)| format!("{a}\u{0}{b}"));
    prop_oneof![
        4 => any::<String>(),
        2 => with_nul,
        2 => near_bound,
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A string with an unpaired surrogate escape somewhere in it.
fn lone_surrogate() -> impl Strategy<Value = Sent> {
    ("[a-z]{0,8}", 0xD800u32..=0xDFFF, "[a-z]{0,8}").prop_map(|(before, unit, after)| {
        Sent::LoneSurrogate(format!("\"{before}\\u{unit:04x}{after}\""))
    })
}

/// Numbers: any i64, integers too large for one, fractions, exponents beyond f64.
fn numbers() -> impl Strategy<Value = Sent> {
    prop_oneof![
        3 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "-?[1-9][0-9]{19,60}",
        1 => "-?(0|[1-9][0-9]{0,2})\\.[0-9]{1,3}",
        1 => "-?[1-9]e[1-9][0-9]{0,2}",
        1 => "-?[1-9]e[4-9][0-9]{2,3}",
    ]
    .prop_map(Sent::Number)
}

fn values(texts: BoxedStrategy<String>) -> impl Strategy<Value = Sent> {
    let others = proptest::sample::select(&["null", "true", "[]", "{}", "[\"a\"]"][..]);
    prop_oneof![
        6 => texts.prop_map(Sent::Text),
        2 => lone_surrogate(),
        2 => numbers(),
        1 => others.prop_map(Sent::Other),
    ]
}

/// What a body field takes.
#[derive(Clone, Copy)]
enum Takes {
    /// Text without U+0000, `min..=max` characters; `null` too when `nullable`.
    Text {
        min: usize,
        max: usize,
        nullable: bool,
    },
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An integer above 0 that fits in 64 bits.
    PositiveInt,
    /// A room name under the default rules.
    Room,
    /// Any JSON value but `null` (numbers within f64).
    Data,
}

impl Takes {
    fn accepts(self, sent: &Sent) -> bool {
        match (self, sent) {
            (_, Sent::LoneSurrogate(_)) => false,
            (Takes::Data, Sent::Other(raw)) => *raw != "null",
            (Takes::Data, Sent::Number(raw)) => raw.parse::<f64>().is_ok_and(f64::is_finite),
            (Takes::Data, Sent::Text(_)) => true,
            (Takes::Text { nullable, .. }, Sent::Other(raw)) => nullable && *raw == "null",
            (Takes::Text { min, max, .. }, Sent::Text(text)) => {
                !text.contains('\u{0}') && (min..=max).contains(&text.chars().count())
            }
            (Takes::OneOf(allowed), Sent::Text(text)) => allowed.contains(&text.as_str()),
            (Takes::PositiveInt, Sent::Number(raw)) => raw.parse::<i64>().is_ok_and(|n| n > 0),
            (Takes::Room, Sent::Text(room)) => {
                (1..=128).contains(&room.len())
                    && room
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":_-.@/=".contains(&b))
            }
            _ => false,
        }
    }

    fn texts(self) -> BoxedStrategy<String> {
        match self {
            Takes::Text { min, max, .. } => match (min, max) {
                (_, 200) => strings(&[0, 200]),
                (_, 100) => strings(&[0, 100]),
                _ => strings(&[0, 10_000]),
            },
            Takes::OneOf(allowed) => prop_oneof![
                proptest::sample::select(allowed).prop_map(str::to_owned),
                strings(&[0]),
            ]
            .boxed(),
            Takes::Room => prop_oneof![
                "[a-z0-9:_.@/=-]{1,10}",
                "[a-z]{126,130}",
                strings(&[0, 128]),
            ]
            .boxed(),
            Takes::PositiveInt | Takes::Data => strings(&[0]),
        }
    }
}

const TITLE: Takes = Takes::Text {
    min: 1,
    max: 200,
    nullable: false,
};
const DESCRIPTION: Takes = Takes::Text {
    min: 0,
    max: 10_000,
    nullable: false,
};
const ASSIGNEE: Takes = Takes::Text {
    min: 1,
    max: 100,
    nullable: true,
};
const BODY: Takes = Takes::Text {
    min: 1,
    max: 10_000,
    nullable: false,
};
const STATUS: Takes = Takes::OneOf(&["open", "in_progress", "resolved", "closed"]);
const PRIORITY: Takes = Takes::OneOf(&["low", "medium", "high", "urgent"]);
const TYPE: Takes = Takes::OneOf(&["bug", "feature", "task"]);

/// A route with a JSON body: method, path, the fields every request carries.
struct BodyRoute {
    method: &'static str,
    path: String,
    base: &'static [(&'static str, &'static str)],
}

impl BodyRoute {
    /// The body with `field` set to `value` (raw JSON), the base fields around it.
    fn body(&self, field: &str, value: &str) -> String {
        let mut members: Vec<String> = self
            .base
            .iter()
            .filter(|(name, _)| *name != field)
            .map(|(name, raw)| format!("\"{name}\": {raw}"))
            .collect();
        members.push(format!("\"{field}\": {value}"));
        format!("{{{}}}", members.join(", "))
    }
}

/// Sends `value` as `field`: a 2xx when the field takes it, else a 422 naming the field;
/// never a 5xx.
fn body_case(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    route: &BodyRoute,
    field: &str,
    takes: Takes,
    value: &Sent,
) -> Result<(), TestCaseError> {
    let body = route.body(field, &value.json());
    let headers = [("content-type", "application/json")];
    let reply = rt.block_on(send(
        addr,
        route.method,
        &route.path,
        &headers,
        Some(body.as_bytes()),
    ));
    let what = format!("{} {} {body}", route.method, route.path);
    prop_assert!(
        reply.status < 500,
        "{what} -> {}: {}",
        reply.status,
        reply.text()
    );
    if takes.accepts(value) {
        prop_assert!(
            (200..300).contains(&reply.status),
            "{what} should be taken, got {}: {}",
            reply.status,
            reply.text()
        );
    } else {
        prop_assert_eq!(reply.status, 422, "{} -> {}", what, reply.text());
        let details = reply.json()["error"]["details"].clone();
        let named = details.as_array().into_iter().flatten().any(|d| {
            d["field"].as_str().is_some_and(|f| {
                f == field
                    || f.starts_with(&format!("{field}."))
                    || f.starts_with(&format!("{field}["))
            })
        });
        prop_assert!(named, "{what}: {field} is not named in {details}");
    }
    Ok(())
}

#[test]
fn every_body_field_takes_what_it_documents_and_names_itself_otherwise() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for url in rt.block_on(db::all()) {
        let server = rt.block_on(TestServer::on_database(&url, roomy));
        let addr = server.addr();
        let issue = rt.block_on(new_issue(&addr));
        let comment = rt.block_on(json(
            &addr,
            "POST",
            &format!("/api/v1/issues/{issue}/comments"),
            &[],
            &json!({"body": "c"}),
        ));
        let comment = comment.json()["id"].as_i64().unwrap();
        let create = BodyRoute {
            method: "POST",
            path: "/api/v1/issues".into(),
            base: &[("project_id", "1"), ("title", "\"t\"")],
        };
        let patch = BodyRoute {
            method: "PATCH",
            path: format!("/api/v1/issues/{issue}"),
            base: &[],
        };
        let comment_create = BodyRoute {
            method: "POST",
            path: format!("/api/v1/issues/{issue}/comments"),
            base: &[],
        };
        let comment_patch = BodyRoute {
            method: "PATCH",
            path: format!("/api/v1/issues/{issue}/comments/{comment}"),
            base: &[],
        };
        let publish = BodyRoute {
            method: "POST",
            path: "/api/v1/publish".into(),
            base: &[("room", "\"fuzz\""), ("data", "1")],
        };
        let fields: Vec<(&BodyRoute, &str, Takes)> = vec![
            (&create, "project_id", Takes::PositiveInt),
            (&create, "title", TITLE),
            (&create, "description", DESCRIPTION),
            (&create, "status", STATUS),
            (&create, "priority", PRIORITY),
            (&create, "type", TYPE),
            (&create, "assignee", ASSIGNEE),
            (&patch, "title", TITLE),
            (&patch, "description", DESCRIPTION),
            (&patch, "status", STATUS),
            (&patch, "priority", PRIORITY),
            (&patch, "type", TYPE),
            (&patch, "assignee", ASSIGNEE),
            (&comment_create, "body", BODY),
            (&comment_patch, "body", BODY),
            (&publish, "room", Takes::Room),
            (&publish, "data", Takes::Data),
        ];
        for (route, field, takes) in fields {
            let result = runner().run(&values(takes.texts()), |value| {
                body_case(&rt, &addr, route, field, takes, &value)
            });
            if let Err(failure) = result {
                panic!(
                    "{} {} field {field} on {url}: {failure}",
                    route.method, route.path
                );
            }
        }
        rt.block_on(server.stop());
    }
}

/// A query value as written in the URL, and the text it decodes to (`None`: it does
/// not decode, by a bad `%` escape or as invalid UTF-8).
#[derive(Debug, Clone)]
struct Written {
    raw: String,
    decoded: Option<String>,
}

/// Characters that may stand unescaped in a query value (`+` is a space).
const PLAIN: &str = "abcXYZ019._~-:@!$'()*,;/?+";

/// One piece of a query value: a plain character, an escaped byte (any byte, so the
/// whole may not be UTF-8), or an escape that is malformed whatever follows it.
fn piece() -> impl Strategy<Value = (String, Option<Vec<u8>>)> {
    let plain = proptest::sample::select(PLAIN.chars().collect::<Vec<_>>()).prop_map(|c| {
        let byte = if c == '+' { b' ' } else { c as u8 };
        (c.to_string(), Some(vec![byte]))
    });
    let byte = (any::<u8>(), any::<bool>()).prop_map(|(b, upper)| {
        let raw = if upper {
            format!("%{b:02X}")
        } else {
            format!("%{b:02x}")
        };
        (raw, Some(vec![b]))
    });
    let character = any::<char>().prop_map(|c| {
        let mut utf8 = [0; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes().to_vec();
        (
            bytes.iter().map(|b| format!("%{b:02X}")).collect(),
            Some(bytes),
        )
    });
    let broken = proptest::sample::select(&["%ZZ", "%G1", "%+1", "%-1", "%.5", "%%", "%z0"][..])
        .prop_map(|raw| (raw.to_owned(), None));
    let nul = Just(("%00".to_owned(), Some(vec![0])));
    prop_oneof![4 => plain, 2 => byte, 2 => character, 1 => nul, 1 => broken]
}

/// Generated query values: piece soup, possibly cut after a `%`.
fn soup() -> impl Strategy<Value = Written> {
    let tail = proptest::sample::select(&["", "", "", "%", "%4", "%e"][..]);
    (proptest::collection::vec(piece(), 0..12), tail).prop_map(|(pieces, tail)| {
        let mut raw = String::new();
        let mut bytes = Some(Vec::new());
        for (text, decoded) in pieces {
            raw.push_str(&text);
            match (bytes.as_mut(), decoded) {
                (Some(all), Some(more)) => all.extend(more),
                _ => bytes = None,
            }
        }
        if !tail.is_empty() {
            raw.push_str(tail);
            bytes = None;
        }
        let decoded = bytes.and_then(|b| String::from_utf8(b).ok());
        Written { raw, decoded }
    })
}

/// `text`, each character written plainly or escaped as `escape` says.
fn written(text: &str, escape: &[bool]) -> Written {
    let mut raw = String::new();
    for (i, c) in text.chars().enumerate() {
        let plain = c.is_ascii_alphanumeric() || "._~-:".contains(c);
        if plain && !escape.get(i).copied().unwrap_or(false) {
            raw.push(c);
        } else if c == ' ' {
            raw.push('+');
        } else {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                raw.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Written {
        raw,
        decoded: Some(text.to_owned()),
    }
}

/// What a query parameter takes.
#[derive(Clone, Copy)]
enum Param {
    /// A 64-bit integer.
    Int,
    /// An integer in `1..=max`.
    Limit(i64),
    /// One of these.
    OneOf(&'static [&'static str]),
    /// Any text without U+0000.
    Text,
    /// A UTC time as docs/openapi.yaml describes it.
    Time,
    /// `EPOCH:SEQ`.
    Since,
}

impl Param {
    fn accepts(self, text: &str) -> bool {
        if text.contains('\u{0}') {
            return false;
        }
        match self {
            Param::Int => text.parse::<i64>().is_ok(),
            Param::Limit(max) => text.parse::<i64>().is_ok_and(|n| (1..=max).contains(&n)),
            Param::OneOf(allowed) => allowed.contains(&text),
            Param::Text => true,
            Param::Time => is_utc_time(text),
            Param::Since => text
                .rsplit_once(':')
                .is_some_and(|(_, seq)| seq.parse::<u64>().is_ok()),
        }
    }

    /// Texts worth trying: valid ones and near misses.
    fn texts(self) -> BoxedStrategy<String> {
        let anything = any::<String>();
        match self {
            Param::Int | Param::Limit(_) => prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (0i64..=300).prop_map(|n| n.to_string()),
                "[1-9][0-9]{19,30}",
                "-?[0-9]{1,3}\\.[0-9]",
                anything,
            ]
            .boxed(),
            Param::OneOf(allowed) => prop_oneof![
                proptest::sample::select(allowed).prop_map(str::to_owned),
                anything,
            ]
            .boxed(),
            Param::Text => prop_oneof![anything, "[a-z ]{0,12}"].boxed(),
            Param::Time => prop_oneof![
                "(19[6-9][0-9]|20[0-9]{2}|9999)-(0[0-9]|1[0-3])-([0-2][0-9]|3[0-2])[T ]([01][0-9]|2[0-5]):[0-5][0-9]:[0-6][0-9](\\.[0-9]{0,10})?Z?",
                "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-][01][0-9]:00)(junk)?",
                anything,
            ]
            .boxed(),
            Param::Since => prop_oneof!["[0-9a-f]{0,16}:[0-9]{1,20}", "[a-z:]{0,10}", anything].boxed(),
        }
    }

    fn values(self) -> impl Strategy<Value = Written> {
        let texts = prop_oneof![
            4 => self.texts(),
            1 => self.texts().prop_map(|text| format!("{text}\u{0}")),
        ];
        let written_texts = (texts, proptest::collection::vec(any::<bool>(), 0..32))
            .prop_map(|(text, escape)| written(&text, &escape));
        prop_oneof![3 => written_texts, 2 => soup()]
    }
}

/// The documented form of `from` and `to`, and a real time from 1970 on.
fn is_utc_time(text: &str) -> bool {
    let pattern =
        r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z?$";
    let Some(parts) = regex::Regex::new(pattern).unwrap().captures(text) else {
        return false;
    };
    let n = |i: usize| parts[i].parse::<u32>().unwrap();
    let (year, month, day) = (n(1), n(2), n(3));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1970 && (1..=days).contains(&day) && n(4) <= 23 && n(5) <= 59 && n(6) <= 60
}

/// Sends `value` as `name` on `path`: a 200 when the parameter takes it, else a 422
/// naming it; never a 5xx.
fn query_case(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    path: &str,
    name: &str,
    param: Param,
    value: &Written,
) -> Result<(), TestCaseError> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let url = format!("{path}{separator}{name}={}", value.raw);
    let reply = rt.block_on(get(addr, &url, &[]));
    prop_assert!(
        reply.status < 500,
        "{url} -> {}: {}",
        reply.status,
        reply.text()
    );
    let accepted = value
        .decoded
        .as_deref()
        .is_some_and(|text| param.accepts(text));
    if accepted {
        prop_assert_eq!(reply.status, 200, "{} -> {}", url, reply.text());
    } else {
        prop_assert_eq!(reply.status, 422, "{} -> {}", url, reply.text());
        let details = reply.json()["error"]["details"].clone();
        let named = details
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["field"] == name);
        prop_assert!(named, "{url}: {name} is not named in {details}");
    }
    Ok(())
}

/// Sends an unknown parameter: a 422 naming it, as decoded (or as written when it does
/// not decode).
fn unknown_case(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    path: &str,
    known: &[&str],
    name: &Written,
) -> Result<(), TestCaseError> {
    prop_assume!(!name.raw.is_empty() && !name.raw.contains(['=', '&']));
    prop_assume!(!name.decoded.as_deref().is_some_and(|n| known.contains(&n)));
    let url = format!("{path}?{}=1", name.raw);
    let reply = rt.block_on(get(addr, &url, &[]));
    prop_assert_eq!(reply.status, 422, "{} -> {}", url, reply.text());
    let field = name.decoded.clone().unwrap_or_else(|| name.raw.clone());
    let details = reply.json()["error"]["details"].clone();
    let named = details
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d["field"] == field.as_str());
    prop_assert!(named, "{url}: {field:?} is not named in {details}");
    Ok(())
}

#[test]
fn every_query_parameter_takes_what_it_documents_and_names_itself_otherwise() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let defaults = Config::defaults();
    let page_max = defaults.api.page_max;
    let history_max = defaults.history.max_page as i64;
    const ENTITY: Param = Param::OneOf(&["issue", "comment"]);
    const ACTION: Param = Param::OneOf(&["create", "update", "delete"]);
    let filters = [
        ("entity", ENTITY),
        ("entity_id", Param::Int),
        ("actor", Param::Text),
        ("action", ACTION),
        ("from", Param::Time),
        ("to", Param::Time),
        ("cursor", Param::Int),
    ];
    for url in rt.block_on(db::all()) {
        let server = rt.block_on(TestServer::on_database(&url, roomy));
        let addr = server.addr();
        let issue = rt.block_on(new_issue(&addr));
        let comments = format!("/api/v1/issues/{issue}/comments");
        let mut routes: Vec<(String, Vec<(&str, Param)>)> = vec![
            (
                "/api/v1/issues".into(),
                vec![
                    ("project_id", Param::Int),
                    (
                        "status",
                        Param::OneOf(&["open", "in_progress", "resolved", "closed"]),
                    ),
                    (
                        "priority",
                        Param::OneOf(&["low", "medium", "high", "urgent"]),
                    ),
                    ("assignee", Param::Text),
                    ("cursor", Param::Int),
                    ("limit", Param::Limit(page_max)),
                ],
            ),
            (
                comments,
                vec![("cursor", Param::Int), ("limit", Param::Limit(page_max))],
            ),
            (
                "/api/v1/rooms/fuzz/history".into(),
                vec![
                    ("since", Param::Since),
                    ("limit", Param::Limit(history_max)),
                ],
            ),
        ];
        let mut search = filters.to_vec();
        search.push(("limit", Param::Limit(page_max)));
        routes.push(("/api/v1/audit".into(), search));
        let mut export = filters.to_vec();
        export.push(("format", Param::OneOf(&["json", "csv"])));
        routes.push(("/api/v1/audit/export".into(), export));

        for (path, params) in &routes {
            for (name, param) in params {
                let result = runner().run(&param.values(), |value| {
                    query_case(&rt, &addr, path, name, *param, &value)
                });
                if let Err(failure) = result {
                    panic!("{path} parameter {name} on {url}: {failure}");
                }
            }
            let known: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
            let result = runner().run(&soup(), |name| {
                unknown_case(&rt, &addr, path, &known, &name)
            });
            if let Err(failure) = result {
                panic!("{path} unknown parameters on {url}: {failure}");
            }
        }
        rt.block_on(server.stop());
    }
}
