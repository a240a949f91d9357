//! Authentication and authorization: JWTs (HS256 and RS256) for users, service tokens
//! for services, the same credentials on the WebSocket endpoint, room restrictions from
//! the claims, and the publish and history routes.

use crate::support::http::{get, json};
use crate::support::tokens::{SECRET, SERVICE_TOKEN, bearer, exp, grant, hs256};
use crate::support::{TestClient, TestServer, WAIT};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast::client::Connection;
use roomcast::protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn secured() -> TestServer {
    TestServer::with(|c| {
        c.auth.jwt_hs256_secret = SECRET.into();
        c.auth.jwt_rs256_public_key_file = fixture("jwt-rs256-public.pem");
        c.auth.service_tokens = format!("billing:{SERVICE_TOKEN}");
    })
    .await
}

fn rs256(claims: Value) -> String {
    let pem = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_requires_valid_credentials_when_auth_is_configured() {
    let server = secured().await;
    let addr = server.addr();
    let missing = get(&addr, "/api/v1/issues", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_eq!(missing.json()["error"]["code"], "unauthorized");
    let forged = hs256(json!({"sub": "eve", "exp": exp()})).replace('.', ".x");
    assert_eq!(
        get(
            &addr,
            "/api/v1/issues",
            &[("authorization", &bearer(&forged))]
        )
        .await
        .status,
        401
    );
    let expired = hs256(json!({"sub": "ann", "exp": 1_000}));
    assert_eq!(
        get(
            &addr,
            "/api/v1/issues",
            &[("authorization", &bearer(&expired))]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        get(
            &addr,
            "/api/v1/issues",
            &[("authorization", "Bearer not-a-token")]
        )
        .await
        .status,
        401
    );
    // Guessing is throttled: failed attempts spend the address's mutation budget, and
    // once it is spent every attempt from the address waits out `Retry-After`.
    let mut replies = Vec::new();
    for _ in 0..12 {
        replies.push(
            get(
                &addr,
                "/api/v1/issues",
                &[("authorization", "Bearer guess")],
            )
            .await,
        );
    }
    let throttled = replies.iter().find(|reply| reply.status == 429);
    let retry_after: u64 = throttled
        .and_then(|reply| reply.header("retry-after")?.parse().ok())
        .unwrap_or_else(|| panic!("{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>()));
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;

    // HS256 and RS256 users, and a service: each recorded as who made the change. The
    // users administer project 1, so they may write to it and read its audit entries.
    grant(&addr, 1, "ann", "admin").await;
    grant(&addr, 1, "bob", "admin").await;
    let ann = bearer(&hs256(json!({"sub": "ann", "exp": exp()})));
    let bob = bearer(&rs256(json!({"sub": "bob", "exp": exp()})));
    let billing = bearer(SERVICE_TOKEN);
    for (auth, actor, kind) in [
        (&ann, "ann", "user"),
        (&bob, "bob", "user"),
        (&billing, "billing", "service"),
    ] {
        let created = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &[("authorization", auth)],
            &json!({"project_id": 1, "title": actor}),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        assert_eq!(created.json()["reporter"], actor);
        let audit = get(
            &addr,
            &format!("/api/v1/audit?actor={actor}"),
            &[("authorization", auth)],
        )
        .await
        .json();
        assert_eq!(audit["items"][0]["actor_kind"], kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_publish_over_http_and_history_respects_room_claims() {
    let server = secured().await;
    let addr = server.addr();
    let service = bearer(SERVICE_TOKEN);
    let user = bearer(&hs256(
        json!({"sub": "ann", "exp": exp(), "rooms": {"subscribe": ["news:*"], "publish": []}}),
    ));

    let mut watcher = Connection::connect_with(
        &server.url,
        Some(Encoding::Json),
        &[("authorization", &service)],
    )
    .await
    .unwrap();
    watcher.next_frame(WAIT).await.unwrap();
    watcher
        .send(&ClientFrame::Subscribe {
            id: Some(1),
            room: "news:today".into(),
            since: None,
            presence: false,
            info: None,
            delta: None,
            compress: None,
        })
        .await
        .unwrap();
    watcher.next_frame(WAIT).await.unwrap();

    let publish = |auth: String, body: Value, key: Option<&'static str>| {
        let addr = addr.clone();
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(key) = key {
                headers.push(("idempotency-key", key));
            }
            json(&addr, "POST", "/api/v1/publish", &headers, &body).await
        }
    };
    let first = publish(
        service.clone(),
        json!({"room": "news:today", "data": {"headline": "hi"}}),
        Some("n-1"),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let ack = first.json();
    assert_eq!(
        (ack["seq"].clone(), ack["duplicate"].clone()),
        (json!(1), json!(false))
    );
    let retry = publish(
        service.clone(),
        json!({"room": "news:today", "data": {"headline": "hi"}}),
        Some("n-1"),
    )
    .await;
    assert_eq!(
        (
            retry.json()["seq"].clone(),
            retry.json()["duplicate"].clone()
        ),
        (json!(1), json!(true))
    );
    match watcher.next_frame(WAIT).await.unwrap() {
        ServerFrame::Message { seq, data, .. } => {
            assert_eq!((seq, data), (1, json!({"headline": "hi"})))
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(
        publish(user.clone(), json!({"room": "news:today", "data": 1}), None)
            .await
            .status,
        403
    );
    assert_eq!(
        publish(
            String::new(),
            json!({"room": "news:today", "data": 1}),
            None
        )
        .await
        .status,
        401
    );
    let bad_room = publish(
        service.clone(),
        json!({"room": "no spaces", "data": 1}),
        None,
    )
    .await;
    assert_eq!(
        (
            bad_room.status,
            bad_room.json()["error"]["details"][0]["field"].clone()
        ),
        (422, json!("room"))
    );
    assert_eq!(
        publish(service.clone(), json!({"room": "r", "data": null}), None)
            .await
            .status,
        422
    );

    let history = get(
        &addr,
        "/api/v1/rooms/news:today/history?limit=10",
        &[("authorization", &user)],
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let body = history.json();
    assert_eq!(body["messages"][0]["data"], json!({"headline": "hi"}));
    let epoch = body["epoch"].as_str().unwrap().to_owned();
    let resumed = get(
        &addr,
        &format!("/api/v1/rooms/news:today/history?since={epoch}:0"),
        &[("authorization", &user)],
    )
    .await
    .json();
    assert_eq!(resumed["recovered"], true);
    let lost = get(
        &addr,
        "/api/v1/rooms/news:today/history?since=other:0",
        &[("authorization", &user)],
    )
    .await
    .json();
    assert_eq!(
        (lost["recovered"].clone(), lost["messages"].clone()),
        (json!(false), json!([]))
    );
    assert_eq!(
        get(
            &addr,
            "/api/v1/rooms/news:today/history?since=nonsense",
            &[("authorization", &user)]
        )
        .await
        .status,
        422
    );
    assert_eq!(
        get(
            &addr,
            "/api/v1/rooms/sports/history",
            &[("authorization", &user)]
        )
        .await
        .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_endpoint_uses_the_same_credentials_and_room_claims() {
    let server = secured().await;
    // No credentials: the upgrade itself is refused.
    assert!(
        Connection::connect(&server.url, Some(Encoding::Json))
            .await
            .is_err()
    );
    let bad = format!("{}?access_token=garbage", server.url);
    assert!(
        Connection::connect(&bad, Some(Encoding::Json))
            .await
            .is_err()
    );

    // Claims grant rooms outside the tracker's (whose rooms follow membership).
    let token = hs256(
        json!({"sub": "ann", "exp": exp(), "rooms": {"subscribe": ["team:7", "topic:*"], "publish": ["topic:*"]}}),
    );
    // Browsers pass the token in the query string.
    let mut client = TestClient::connect(
        &format!("{}?access_token={token}", server.url),
        Encoding::Json,
    )
    .await;
    client.subscribe("team:7", None).await;
    client.subscribe("topic:12", None).await;
    client
        .expect_error(
            ClientFrame::Subscribe {
                id: Some(5),
                room: "team:8".into(),
                since: None,
                presence: false,
                info: None,
                delta: None,
                compress: None,
            },
            ErrorCode::Forbidden,
        )
        .await;
    client
        .expect_error(
            ClientFrame::Publish {
                id: Some(6),
                room: "team:7".into(),
                data: json!(1),
                key: None,
            },
            ErrorCode::Forbidden,
        )
        .await;
    client
        .expect_error(
            ClientFrame::History {
                id: Some(7),
                room: "secret".into(),
                since: None,
                limit: None,
            },
            ErrorCode::Forbidden,
        )
        .await;
    let (ack, _, _) = client.publish("topic:12", json!("allowed"), None).await;
    assert_eq!(ack.seq, 1);

    let header = Connection::connect_with(
        &server.url,
        Some(Encoding::MsgPack),
        &[("authorization", &bearer(SERVICE_TOKEN))],
    )
    .await;
    assert!(
        header.is_ok(),
        "services connect with the Authorization header"
    );
}
