//! Who may reach the server, and how much: closed by default, browser origins (CORS and
//! the WebSocket `Origin`), the token subprotocol, token expiry and refresh, abuse limits,
//! and operator actions on every instance of a cluster.

use crate::support::http::{self, get, json};
use crate::support::process::{RoomcastProcess, run_to_exit};
use crate::support::redis::RedisServer;
use crate::support::{TestServer, WAIT, wait_ready};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast::client::Connection;
use roomcast::config::OriginList;
use roomcast::protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "access-test-secret";
const SERVICE_TOKEN: &str = "ops-token-0123456789abcdef";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token of `user` that may use every `chat:` room, expiring at `exp`.
fn token(user: &str, exp: u64) -> String {
    let claims = json!({
        "sub": user,
        "exp": exp,
        "rooms": {"subscribe": ["chat:*"], "publish": ["chat:*"]},
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn origins(list: &[&str]) -> OriginList {
    OriginList::parse(&list.iter().map(|o| o.to_string()).collect::<Vec<_>>()).unwrap()
}

async fn secured(adjust: impl FnOnce(&mut roomcast::config::Config)) -> TestServer {
    TestServer::with(|c| {
        c.auth.jwt_hs256_secret = SECRET.into();
        c.auth.service_tokens = format!("ops:{SERVICE_TOKEN}");
        adjust(c);
    })
    .await
}

/// Connects as `user` with the token in the `Authorization` header; skips the welcome.
async fn connect_as(url: &str, token: &str) -> Connection {
    let bearer = format!("Bearer {token}");
    let mut conn =
        Connection::connect_with(url, Some(Encoding::Json), &[("authorization", &bearer)])
            .await
            .expect("connects");
    assert!(matches!(
        conn.next_frame(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    conn
}

/// Sends `frame` and returns the next frame.
async fn request(conn: &mut Connection, frame: ClientFrame) -> ServerFrame {
    conn.send(&frame).await.unwrap();
    conn.next_frame(WAIT).await.unwrap()
}

async fn subscribe(conn: &mut Connection, room: &str) {
    let reply = request(
        conn,
        ClientFrame::Subscribe {
            id: Some(1),
            room: room.into(),
            since: None,
            presence: false,
            info: None,
            delta: None,
            compress: None,
        },
    )
    .await;
    assert!(matches!(reply, ServerFrame::Subscribed { .. }), "{reply:?}");
}

fn publish(room: &str, id: u64, key: Option<String>) -> ClientFrame {
    ClientFrame::Publish {
        id: Some(id),
        room: room.into(),
        data: json!(id),
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_authentication_refuses_to_start() {
    let (code, stderr) = run_to_exit(&[], &[("ROOMCAST_LISTEN", "0.0.0.0:0")]).await;
    assert_ne!(code, Some(0), "{stderr}");
    for needle in [
        "auth.mode",
        "auth.jwt_hs256_secret",
        "ROOMCAST_AUTH__MODE=open",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from: {stderr}");
    }
    // The explicit opt-in passes the check.
    let (code, stderr) = run_to_exit(
        &["--check-config"],
        &[
            ("ROOMCAST_LISTEN", "0.0.0.0:0"),
            ("ROOMCAST_AUTH__MODE", "open"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_listed_origins_and_refuses_others() {
    let server = TestServer::with(|c| {
        c.cors.allowed_origins = origins(&["http://app.test:3000"]);
    })
    .await;
    let addr = server.addr();
    let preflight = http::send(
        &addr,
        "OPTIONS",
        "/api/v1/issues",
        &[
            ("origin", "http://app.test:3000"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, idempotency-key",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://app.test:3000")
    );
    let allowed_headers = preflight.header("access-control-allow-headers").unwrap();
    for name in [
        "authorization",
        "if-match",
        "idempotency-key",
        "traceparent",
    ] {
        assert!(allowed_headers.contains(name), "{name}: {allowed_headers}");
    }
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );
    assert_eq!(preflight.header("vary"), Some("origin"));

    let created = json(
        &addr,
        "POST",
        "/api/v1/issues",
        &[("origin", "http://app.test:3000")],
        &json!({"project_id": 1, "title": "from a page"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.header("access-control-allow-origin"),
        Some("http://app.test:3000")
    );
    let exposed = created.header("access-control-expose-headers").unwrap();
    for name in [
        "etag",
        "x-request-id",
        "retry-after",
        "x-ratelimit-remaining",
    ] {
        assert!(exposed.contains(name), "{name}: {exposed}");
    }

    // Another page may not make the browser send anything, not even a read.
    for method in ["GET", "POST", "OPTIONS"] {
        let refused = http::send(
            &addr,
            method,
            "/api/v1/issues",
            &[
                ("origin", "http://evil.test"),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .await;
        assert_eq!(refused.status, 403, "{method}");
        assert_eq!(refused.json()["error"]["code"], "origin_not_allowed");
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    let listed = get(&addr, "/api/v1/issues", &[]).await.json();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "nothing else ran"
    );

    // The server's own pages, and clients that are not browsers, need no listing.
    let own = format!("http://{addr}");
    let same = get(&addr, "/api/v1/issues", &[("origin", &own)]).await;
    assert_eq!(same.status, 200);
    assert_eq!(same.header("access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_open_only_from_the_servers_own_or_listed_origins() {
    let server = TestServer::with(|c| {
        c.websocket.allowed_origins = origins(&["https://app.test"]);
    })
    .await;
    let own = format!("http://{}", server.addr());
    for (origin, allowed) in [
        (None, true),
        (Some(own.as_str()), true),
        (Some("https://app.test"), true),
        (Some("https://evil.test"), false),
        (Some("http://app.test"), false),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let result = Connection::connect_with(&server.url, Some(Encoding::Json), &headers).await;
        assert_eq!(result.is_ok(), allowed, "{origin:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains("403"), "{err}");
        }
    }
    server.stop().await;
}

/// Opens `/ws` over a raw socket and returns the response head (status line and headers).
async fn raw_upgrade(addr: &str, protocols: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response in time")
            .unwrap();
        assert_eq!(read, 1, "connection closed inside the response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_pass_the_token_as_a_subprotocol_that_is_never_echoed() {
    let server = secured(|_| {}).await;
    let jwt = token("ann", now() + 600);
    let head = raw_upgrade(
        &server.addr(),
        &format!("roomcast.v1.json, roomcast.token.{jwt}"),
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: roomcast.v1.json\r\n"),
        "{head}"
    );
    assert!(!head.contains("roomcast.token"), "{head}");

    let refused = raw_upgrade(&server.addr(), "roomcast.v1.json, roomcast.token.forged").await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");

    // Through a real client, the welcome tells when the token expires.
    let offers = format!("roomcast.v1.msgpack, roomcast.token.{jwt}");
    let mut conn =
        Connection::connect_with(&server.url, None, &[("sec-websocket-protocol", &offers)])
            .await
            .unwrap();
    match conn.next_frame(WAIT).await.unwrap() {
        ServerFrame::Welcome { expires_at, .. } => assert!(expires_at.is_some()),
        other => panic!("expected welcome, got {other:?}"),
    }
    subscribe(&mut conn, "chat:1").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_at_its_tokens_expiry_unless_refreshed() {
    // No clock skew tolerated, so that the first token lapses within the test.
    let server = secured(|c| c.auth.clock_skew_secs = 0).await;
    let exp = now() + 3;
    let mut lapsing = connect_as(&server.url, &token("ann", exp)).await;
    let mut refreshed = connect_as(&server.url, &token("ann", exp)).await;
    subscribe(&mut refreshed, "chat:1").await;

    let later = now() + 600;
    match request(
        &mut refreshed,
        ClientFrame::Refresh {
            id: Some(7),
            token: token("ann", later),
        },
    )
    .await
    {
        ServerFrame::Refreshed { id, expires_at } => {
            assert_eq!((id, expires_at), (Some(7), later))
        }
        other => panic!("expected refreshed, got {other:?}"),
    }
    // Another user's token, or a bad one, changes nothing.
    for bad in [token("bob", later), "garbage".to_owned()] {
        match request(
            &mut refreshed,
            ClientFrame::Refresh {
                id: Some(8),
                token: bad,
            },
        )
        .await
        {
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    let code = lapsing.closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(4101), "closed with token_expired");
    // The refreshed connection outlives the first token and still gets messages.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut publisher = connect_as(&server.url, &token("cy", now() + 600)).await;
    let ack = request(&mut publisher, publish("chat:1", 1, None)).await;
    assert!(matches!(ack, ServerFrame::Ack { .. }), "{ack:?}");
    match refreshed.next_frame(WAIT).await.unwrap() {
        ServerFrame::Message { room, .. } => assert_eq!(room, "chat:1"),
        other => panic!("expected the message, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_is_limited_per_user_and_others_go_on() {
    let server = secured(|c| {
        c.rate_limits.ws_publishes_per_second = 0.5;
        c.rate_limits.ws_publish_burst = 3;
    })
    .await;
    let mut ann = connect_as(&server.url, &token("ann", now() + 600)).await;
    let mut ann_again = connect_as(&server.url, &token("ann", now() + 600)).await;
    let mut bob = connect_as(&server.url, &token("bob", now() + 600)).await;
    for id in 1..=3 {
        let reply = request(&mut ann, publish("chat:1", id, None)).await;
        assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    }
    // The budget is the user's, over all their connections.
    match request(&mut ann_again, publish("chat:1", 4, None)).await {
        ServerFrame::Error {
            id,
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!((id, code), (Some(4), ErrorCode::RateLimited));
            let wait = retry_after_ms.expect("retry_after_ms");
            assert!((1..=2000).contains(&wait), "{wait}");
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    let reply = request(&mut bob, publish("chat:1", 5, None)).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");

    // Keys are bounded like the HTTP API's Idempotency-Key.
    let mut cy = connect_as(&server.url, &token("cy", now() + 600)).await;
    let reply = request(&mut cy, publish("chat:1", 6, Some("k".repeat(256)))).await;
    match reply {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::InvalidFrame),
        other => panic!("expected invalid_frame, got {other:?}"),
    }
    let reply = request(&mut cy, publish("chat:1", 7, Some("k".repeat(255)))).await;
    assert!(matches!(reply, ServerFrame::Ack { .. }), "{reply:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_user_and_per_instance() {
    let server = secured(|c| {
        c.connection.max_connections_per_user = 2;
        c.connection.max_connections = 3;
    })
    .await;
    let ann = token("ann", now() + 600);
    let first = connect_as(&server.url, &ann).await;
    let _second = connect_as(&server.url, &ann).await;
    let bearer = format!("Bearer {ann}");
    let third = Connection::connect_with(
        &server.url,
        Some(Encoding::Json),
        &[("authorization", &bearer)],
    )
    .await
    .err()
    .expect("a third connection of ann is refused");
    assert!(third.to_string().contains("429"), "{third}");
    let _bob = connect_as(&server.url, &token("bob", now() + 600)).await;
    let service = format!("Bearer {SERVICE_TOKEN}");
    let full = Connection::connect_with(
        &server.url,
        Some(Encoding::Json),
        &[("authorization", &service)],
    )
    .await
    .err()
    .expect("the instance is full");
    assert!(full.to_string().contains("503"), "{full}");

    // A closed connection frees its place.
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if Connection::connect_with(
            &server.url,
            Some(Encoding::Json),
            &[("authorization", &bearer)],
        )
        .await
        .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_unsubscribe_and_disconnect_a_user_on_every_instance() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let mut instances = Vec::new();
    for node in ["ops-0", "ops-1"] {
        let process = RoomcastProcess::start(&[
            ("ROOMCAST_REDIS_URL", redis_url.as_str()),
            ("ROOMCAST_NODE_ID", node),
            ("ROOMCAST_AUTH__JWT_HS256_SECRET", SECRET),
            (
                "ROOMCAST_AUTH__SERVICE_TOKENS",
                &format!("ops:{SERVICE_TOKEN}"),
            ),
        ])
        .await;
        wait_ready(&process.addr).await;
        instances.push(process);
    }
    let ann = token("ann", now() + 600);
    let mut ann_conns = Vec::new();
    for instance in &instances {
        let mut conn = connect_as(&instance.url(), &ann).await;
        subscribe(&mut conn, "chat:ops").await;
        ann_conns.push(conn);
    }
    let mut bob = connect_as(&instances[1].url(), &token("bob", now() + 600)).await;
    subscribe(&mut bob, "chat:ops").await;

    let service = format!("Bearer {SERVICE_TOKEN}");
    let as_service = [("authorization", service.as_str())];
    let user_bearer = format!("Bearer {ann}");
    let refused = json(
        &instances[0].addr,
        "POST",
        "/api/v1/admin/disconnect",
        &[("authorization", &user_bearer)],
        &json!({"user": "bob"}),
    )
    .await;
    assert_eq!(refused.status, 403, "only administrators");

    let sent = json(
        &instances[0].addr,
        "POST",
        "/api/v1/admin/unsubscribe",
        &as_service,
        &json!({"user": "ann", "room": "chat:ops"}),
    )
    .await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    for conn in &mut ann_conns {
        match conn.next_frame(WAIT).await.unwrap() {
            ServerFrame::Unsubscribed { id, room } => {
                assert_eq!((id, room.as_str()), (None, "chat:ops"))
            }
            other => panic!("expected unsubscribed, got {other:?}"),
        }
    }
    // Bob is still subscribed: a publish reaches him, not Ann.
    let published = json(
        &instances[0].addr,
        "POST",
        "/api/v1/publish",
        &as_service,
        &json!({"room": "chat:ops", "data": "after"}),
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.text());
    match bob.next_frame(WAIT).await.unwrap() {
        ServerFrame::Message { data, .. } => assert_eq!(data, Value::from("after")),
        other => panic!("expected the message, got {other:?}"),
    }

    let sent = json(
        &instances[1].addr,
        "POST",
        "/api/v1/admin/disconnect",
        &as_service,
        &json!({"user": "ann"}),
    )
    .await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    for conn in &mut ann_conns {
        let code = conn.closed(WAIT).await.unwrap();
        assert_eq!(code, Some(4102), "disconnected for good");
    }
    let pong = request(&mut bob, ClientFrame::Ping { id: Some(9) }).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }), "{pong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_details_are_for_administrators() {
    let server = secured(|_| {}).await;
    let addr = server.addr();
    let public = get(&addr, "/readyz", &[]).await;
    assert_eq!(public.status, 200);
    assert_eq!(public.json(), json!({"ready": true, "draining": false}));
    let user = format!("Bearer {}", token("ann", now() + 600));
    let as_user = get(&addr, "/readyz", &[("authorization", &user)])
        .await
        .json();
    assert!(as_user.get("checks").is_none(), "{as_user}");
    let service = format!("Bearer {SERVICE_TOKEN}");
    let detailed = get(&addr, "/readyz", &[("authorization", &service)])
        .await
        .json();
    assert_eq!(detailed["checks"]["store"]["ready"], true, "{detailed}");
    server.stop().await;
}

/// No credential reaches a log line: tokens in every carrier (header, subprotocol, query
/// string), refused and accepted, a refresh with a bad token, failed API calls, with the
/// most verbose logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_logs() {
    let services = format!("ops:{SERVICE_TOKEN}");
    let mut process = RoomcastProcess::start(&[
        ("ROOMCAST_AUTH__JWT_HS256_SECRET", SECRET),
        ("ROOMCAST_AUTH__SERVICE_TOKENS", services.as_str()),
        ("ROOMCAST_LOG__LEVEL", "debug"),
    ])
    .await;
    let good = token("ann", now() + 600);
    let forged = format!("{}x", token("eve", now() + 600));
    let url = process.url();
    // Accepted, in each carrier.
    let mut by_header = connect_as(&url, &good).await;
    let offers = format!("roomcast.v1.json, roomcast.token.{good}");
    let by_protocol =
        Connection::connect_with(&url, None, &[("sec-websocket-protocol", &offers)]).await;
    assert!(by_protocol.is_ok());
    let by_query = Connection::connect(&format!("{url}?access_token={good}"), None).await;
    assert!(by_query.is_ok());
    // Refused, in each carrier.
    let bearer_forged = format!("Bearer {forged}");
    for headers in [
        vec![("authorization", bearer_forged.as_str())],
        vec![(
            "sec-websocket-protocol",
            &*format!("roomcast.v1.json, roomcast.token.{forged}"),
        )],
    ] {
        assert!(
            Connection::connect_with(&url, None, &headers)
                .await
                .is_err()
        );
    }
    assert!(
        Connection::connect(&format!("{url}?access_token={forged}"), None)
            .await
            .is_err()
    );
    // A refresh with a bad token, and API calls with bad and good credentials.
    let reply = request(
        &mut by_header,
        ClientFrame::Refresh {
            id: Some(1),
            token: forged.clone(),
        },
    )
    .await;
    assert!(matches!(reply, ServerFrame::Error { .. }));
    for credential in [&bearer_forged, &format!("Bearer {SERVICE_TOKEN}")] {
        get(
            &process.addr,
            "/api/v1/issues",
            &[("authorization", credential)],
        )
        .await;
    }
    get(
        &process.addr,
        &format!("/api/v1/issues?access_token={good}"),
        &[],
    )
    .await;
    // Let the server log what these caused, then look.
    by_header
        .send(&ClientFrame::Ping { id: Some(2) })
        .await
        .unwrap();
    by_header.next_frame(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = process.drain_logs();
    assert!(
        logs.iter().any(|line| line.contains("invalid credentials")),
        "the refusals were logged (so the logs were looked at): {logs:?}"
    );
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    for secret in [
        SECRET.to_owned(),
        SERVICE_TOKEN.to_owned(),
        signature(&good),
        signature(&forged),
    ] {
        for line in &logs {
            assert!(!line.contains(&secret), "a secret in the log: {line}");
        }
    }
}

/// Behind a trusted proxy, clients are told apart by `X-Forwarded-For` (here: the budget
/// for failed logins); from anyone else the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let guess = |addr: String, forwarded: &'static str| async move {
        get(
            &addr,
            "/api/v1/issues",
            &[
                ("authorization", "Bearer guess"),
                ("x-forwarded-for", forwarded),
            ],
        )
        .await
        .status
    };
    for trusted in [true, false] {
        let server = secured(|c| {
            c.rate_limits.user_write_burst = 3;
            c.rate_limits.user_writes_per_second = 0.01;
            if trusted {
                c.trusted_proxies =
                    roomcast::config::TrustedProxies::parse(&["127.0.0.0/8".into()]).unwrap();
            }
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(guess(server.addr(), "198.51.100.1").await);
        }
        assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
        // Another client behind the same proxy has a budget of its own, but only when
        // the proxy is trusted; otherwise every client is the proxy.
        let other = guess(server.addr(), "198.51.100.2").await;
        assert_eq!(other, if trusted { 401 } else { 429 }, "trusted: {trusted}");
        server.stop().await;
    }
}
