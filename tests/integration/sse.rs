//! Server-Sent Events, spoken over a plain HTTP client: a session subscribes, publishes
//! over `POST`, survives `kill -9` of its instance by reconnecting to another one with
//! `Last-Event-ID` (nothing lost, nothing twice, in order), drains like a WebSocket, and
//! refuses what a WebSocket upgrade refuses (credentials, origin) plus posts to a session
//! that is not the poster's.

use crate::support::http::{self, Reply};
use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::tokens::{SECRET, user_token};
use crate::support::{TestServer, WAIT, wait_ready};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// One event of the stream.
#[derive(Debug, Clone)]
struct Event {
    /// The `id:` field, when the event had one.
    id: Option<String>,
    /// The frame (`data:`).
    frame: Value,
}

/// An open event stream.
struct Stream {
    addr: String,
    body: Incoming,
    pending: String,
    /// The id of the last event that had one (what `EventSource` sends back).
    last_id: Option<String>,
    /// The session id, from `welcome`.
    session: String,
    token: Option<String>,
}

impl Stream {
    /// `GET /sse?{query}` with `headers`; the reply when the server refuses.
    async fn open(addr: &str, query: &str, headers: &[(&str, &str)]) -> Result<Stream, Reply> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::get(format!("/sse?{query}"))
            .header("host", addr)
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if status != 200 {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            return Err(Reply {
                status,
                headers,
                body,
            });
        }
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
        let token = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(str::to_owned);
        let mut stream = Stream {
            addr: addr.to_owned(),
            body: response.into_body(),
            pending: String::new(),
            last_id: None,
            session: String::new(),
            token,
        };
        let welcome = stream.frame().await.expect("a welcome event");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        stream.session = welcome["session"].as_str().unwrap().to_owned();
        Ok(stream)
    }

    /// The next event, or `None` when the stream ended (or nothing came in time).
    async fn event(&mut self, wait: Duration) -> Option<Event> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    }
                }
                if data.is_empty() {
                    continue; // a comment (heartbeat) or `retry:`
                }
                if id.is_some() {
                    self.last_id = id.clone();
                }
                let frame = serde_json::from_str(&data.join("\n")).expect("JSON frames");
                return Some(Event { id, frame });
            }
            let frame = match tokio::time::timeout(wait, self.body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                _ => return None,
            };
            if let Ok(data) = frame.into_data() {
                self.pending.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    async fn frame(&mut self) -> Option<Value> {
        self.event(WAIT).await.map(|event| event.frame)
    }

    /// The next frame of `kind`, skipping others.
    async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.frame().await.unwrap_or_else(|| panic!("no {kind}"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Posts client frames to the session.
    async fn post(&self, frames: &[Value]) -> Reply {
        let body: Vec<String> = frames.iter().map(Value::to_string).collect();
        let path = match &self.token {
            Some(token) => format!("/sse/{}?access_token={token}", self.session),
            None => format!("/sse/{}", self.session),
        };
        http::send(
            &self.addr,
            "POST",
            &path,
            &[("content-type", "text/plain")],
            Some(body.join("\n").as_bytes()),
        )
        .await
    }
}

/// What a subscriber saw of one room.
#[derive(Default, Debug)]
struct Seen {
    epoch: Option<String>,
    seqs: Vec<u64>,
    ns: Vec<u64>,
}

/// Reads `stream` until `until` says stop or the stream ends; records messages.
async fn read_messages(
    stream: &mut Stream,
    seen: &mut BTreeMap<String, Seen>,
    wait: Duration,
    until: impl Fn(&BTreeMap<String, Seen>) -> bool,
) -> bool {
    while !until(seen) {
        let Some(event) = stream.event(wait).await else {
            return false;
        };
        let frame = event.frame;
        match frame["type"].as_str().unwrap() {
            "message" => {
                assert!(event.id.is_some(), "a message event carries the positions");
                let room = seen
                    .entry(frame["room"].as_str().unwrap().into())
                    .or_default();
                let epoch = frame["epoch"].as_str().unwrap().to_owned();
                assert_eq!(*room.epoch.get_or_insert(epoch.clone()), epoch, "one epoch");
                room.seqs.push(frame["seq"].as_u64().unwrap());
                room.ns.push(frame["data"]["n"].as_u64().unwrap());
            }
            "subscribed" => {
                assert_eq!(
                    frame["recovered"], true,
                    "every room resumes exactly: {frame}"
                )
            }
            "ack" | "pong" => {}
            other => panic!("unexpected {other}: {frame}"),
        }
    }
    true
}

/// A subscriber on instance A of two (Redis between them) subscribes to two rooms over
/// SSE and publishes over POST; a publisher session on B publishes to both rooms; A is
/// killed with `kill -9` mid-stream; the subscriber opens a new stream on B with the
/// last `Last-Event-ID` it got. Every message reaches it exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_every_room_on_another_instance_after_kill_9() {
    const PER_ROOM: u64 = 120;
    let rooms = ["sse-kill-a", "sse-kill-b"];
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        let env = [
            ("ROOMCAST_REDIS_URL", redis.url()),
            ("ROOMCAST_NODE_ID", node.to_owned()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let process = RoomcastProcess::start(&env).await;
        wait_ready(&process.addr).await;
        nodes.push(process);
    }
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());

    let mut subscriber = Stream::open(&a, &format!("rooms={}", rooms.join(",")), &[])
        .await
        .unwrap();
    for _ in rooms {
        let subscribed = subscriber.expect("subscribed").await;
        assert_eq!(subscribed["seq"], 0, "fresh rooms");
    }
    // The subscriber's own publish, over POST.
    let reply = subscriber
        .post(&[json!({"type": "publish", "id": 1, "room": rooms[0], "data": {"n": 0}})])
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    // A 202 only says the session took the frame (protocol § 10.5), not that it was
    // sequenced (§ 3.4): B's first publishes could still come before it. Its message
    // carries its seq, so once it is here, everything B publishes comes after it.
    let mut seen = BTreeMap::new();
    let own = |seen: &BTreeMap<String, Seen>| seen.contains_key(rooms[0]);
    assert!(read_messages(&mut subscriber, &mut seen, WAIT, own).await);

    let publisher = tokio::spawn({
        let b = b.clone();
        async move {
            let mut stream = Stream::open(&b, "", &[]).await.unwrap();
            for n in 1..=PER_ROOM {
                let frames: Vec<Value> = rooms
                    .iter()
                    .enumerate()
                    .map(|(i, room)| {
                        let id = n * 2 + i as u64;
                        json!({"type": "publish", "id": id, "room": room, "data": {"n": n}, "key": format!("k{id}")})
                    })
                    .collect();
                let reply = stream.post(&frames).await;
                assert_eq!(reply.status, 202, "{}", reply.text());
                for _ in rooms {
                    let ack = stream.expect("ack").await;
                    assert!(ack["seq"].as_u64().is_some(), "{ack}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let half = |seen: &BTreeMap<String, Seen>| {
        seen.values()
            .map(|room| room.seqs.len() as u64)
            .sum::<u64>()
            >= PER_ROOM
    };
    assert!(read_messages(&mut subscriber, &mut seen, WAIT, half).await);
    nodes[0].signal("KILL");
    let _ = nodes[0].wait(Duration::from_secs(10)).await;
    // Whatever was still on its way from A before it died.
    read_messages(&mut subscriber, &mut seen, WAIT, |_| false).await;
    let last_id = subscriber
        .last_id
        .clone()
        .expect("message events carry ids");

    let mut resumed = Stream::open(
        &b,
        &format!("rooms={}", rooms.join(",")),
        &[("last-event-id", last_id.as_str())],
    )
    .await
    .unwrap();
    let all = |seen: &BTreeMap<String, Seen>| {
        rooms.iter().all(|room| {
            let expected = if *room == rooms[0] {
                PER_ROOM + 1
            } else {
                PER_ROOM
            };
            seen.get(*room)
                .is_some_and(|r| r.seqs.len() as u64 >= expected)
        })
    };
    assert!(
        read_messages(&mut resumed, &mut seen, WAIT, all).await,
        "every message after the resume: {seen:?}"
    );
    publisher.await.unwrap();
    // Nothing more than that (no duplicate after the last one).
    let quiet = Duration::from_secs(1);
    assert!(!read_messages(&mut resumed, &mut seen, quiet, |_| false).await);
    for (room, seen) in &seen {
        let count = seen.seqs.len() as u64;
        assert_eq!(
            seen.seqs,
            (1..=count).collect::<Vec<_>>(),
            "{room}: no gap, no dup"
        );
        // The subscriber's own publish (n = 0) came first in its room.
        let from = if room == rooms[0] { 0 } else { 1 };
        let expected: Vec<u64> = (from..=PER_ROOM).collect();
        assert_eq!(seen.ns, expected, "{room}: every message once, in order");
    }
    drop(nodes);
}

/// The event ids follow the subscriptions: subscribe and unsubscribe over POST change
/// them, and a stream opened with the last id resumes the rooms it names (also when
/// they were not in `rooms`), or says `recovered: false` when it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ids_follow_subscriptions_posted_to_the_session() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut stream = Stream::open(&addr, "rooms=ids-a", &[]).await.unwrap();
    let subscribed = stream.event(WAIT).await.unwrap();
    assert_eq!(subscribed.frame["type"], "subscribed");
    let epoch = subscribed.frame["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        subscribed.id.as_deref(),
        Some(format!("ids-a~{epoch}~0").as_str())
    );

    let reply = stream
        .post(&[
            json!({"type": "subscribe", "id": 1, "room": "ids-b"}),
            json!({"type": "publish", "id": 2, "room": "ids-b", "data": {"n": 1}}),
            json!({"type": "ping", "id": 3}),
        ])
        .await;
    assert_eq!(reply.status, 202);
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = stream.event(WAIT).await.unwrap();
        kinds.push(event.frame["type"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["ack", "message", "pong", "subscribed"]);
    let id = stream.last_id.clone().unwrap();
    assert!(id.starts_with(&format!("ids-a~{epoch}~0,ids-b~")), "{id}");
    assert!(id.ends_with("~1"), "{id}");

    // A new stream with that id and no `rooms` resumes both rooms.
    let mut again = Stream::open(&addr, "", &[("last-event-id", &id)])
        .await
        .unwrap();
    let mut recovered = BTreeMap::new();
    for _ in 0..2 {
        let frame = again.expect("subscribed").await;
        recovered.insert(
            frame["room"].as_str().unwrap().to_owned(),
            frame["recovered"].clone(),
        );
    }
    assert_eq!(recovered["ids-a"], true);
    assert_eq!(recovered["ids-b"], true);
    let reply = again
        .post(&[json!({"type": "unsubscribe", "id": 4, "room": "ids-a"})])
        .await;
    assert_eq!(reply.status, 202);
    let unsubscribed = again.event(WAIT).await.unwrap();
    assert_eq!(unsubscribed.frame["type"], "unsubscribed");
    assert!(
        !unsubscribed.id.unwrap().contains("ids-a"),
        "a room left is not resumed"
    );

    // An epoch the room never had cannot be resumed: said explicitly.
    let mut lost = Stream::open(&addr, "", &[("last-event-id", "ids-a~nosuchepoch~5")])
        .await
        .unwrap();
    let frame = lost.expect("subscribed").await;
    assert_eq!(frame["recovered"], false, "{frame}");

    let bad = Stream::open(&addr, "", &[("last-event-id", "not an id")]).await;
    assert_eq!(bad.err().unwrap().status, 400);
    drop((stream, again, lost));
    server.stop().await;
}

/// A drained instance tells its SSE clients to reconnect elsewhere, then ends the
/// stream with a `close` event carrying 1012.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sessions_are_drained_like_websockets() {
    let server = TestServer::start().await;
    let mut stream = Stream::open(&server.addr(), "rooms=drained", &[])
        .await
        .unwrap();
    stream.expect("subscribed").await;
    // Counted with the transport label (the recorder is shared by this test binary).
    let metrics = http::get(&server.addr(), "/metrics", &[]).await.text();
    let opened = metrics
        .lines()
        .find(|line| {
            line.starts_with(
                "roomcast_connections_opened_total{encoding=\"json\",transport=\"sse\"}",
            )
        })
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        opened.is_some_and(|n| n >= 1.0),
        "SSE sessions counted: {opened:?}"
    );
    server
        .server()
        .connections()
        .drain(Duration::from_millis(10), || {
            vec!["ws://elsewhere/ws".into()]
        })
        .await;
    let reconnect = stream.frame().await.unwrap();
    assert_eq!(reconnect["type"], "reconnect");
    assert_eq!(reconnect["reason"], "draining");
    let close = stream.frame().await.unwrap();
    assert_eq!(
        close,
        json!({"type": "close", "code": 1012, "reason": "service_restart"})
    );
    assert!(stream.event(WAIT).await.is_none(), "the stream ends");
    server.stop().await;
}

/// Credentials and origins are checked as for WebSocket, and a session takes posts from
/// its owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_refuses_strangers_foreign_origins_and_other_users_posts() {
    let server = TestServer::with(|c| {
        c.auth.jwt_hs256_secret = SECRET.into();
        c.websocket.allowed_origins =
            roomcast::config::OriginList::parse(&["https://app.test".into()]).unwrap();
    })
    .await;
    let addr = server.addr();
    let alice = user_token("alice");
    let bob = user_token("bob");

    let refused = Stream::open(&addr, "", &[]).await.err().unwrap();
    assert_eq!(refused.status, 401, "no token");
    let refused = Stream::open(&addr, "access_token=forged", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401, "a bad token");
    let auth = format!("Bearer {alice}");
    let refused = Stream::open(
        &addr,
        "",
        &[("authorization", &auth), ("origin", "https://evil.test")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused.status, 403, "a foreign origin");
    let listed = Stream::open(
        &addr,
        "",
        &[("authorization", &auth), ("origin", "https://app.test")],
    )
    .await
    .unwrap();
    drop(listed);

    let mut stream = Stream::open(&addr, &format!("access_token={alice}"), &[])
        .await
        .unwrap();
    let ping = json!({"type": "ping", "id": 9}).to_string();
    let post = |path: String, headers: Vec<(&'static str, String)>| {
        let addr = addr.clone();
        let ping = ping.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::send(&addr, "POST", &path, &headers, Some(ping.as_bytes())).await
        }
    };
    let session = stream.session.clone();
    let path = format!("/sse/{session}");
    let reply = post(path.clone(), vec![]).await;
    assert_eq!(reply.status, 401, "a post without a token");
    let reply = post(
        path.clone(),
        vec![("authorization", format!("Bearer {bob}"))],
    )
    .await;
    assert_eq!(
        reply.status,
        404,
        "another user's session: {}",
        reply.text()
    );
    let reply = post(
        path.clone(),
        vec![
            ("authorization", format!("Bearer {alice}")),
            ("origin", "https://evil.test".into()),
        ],
    )
    .await;
    assert_eq!(reply.status, 403, "a foreign origin posting");
    let reply = post(
        "/sse/no-such-session".into(),
        vec![("authorization", format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(reply.status, 404);
    let reply = post(path, vec![("authorization", format!("Bearer {alice}"))]).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        stream.frame().await.unwrap(),
        json!({"type": "pong", "id": 9})
    );
    server.stop().await;
}

/// `GET /sse?…&delta=fossil&compress=deflate`: the stream's subscriptions ask for both,
/// so a large message arrives as a deflated whole text, the next one as a delta; a
/// resume with `Last-Event-ID` asks for them again (the first message after it whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_compressed_deltas_and_resumes_with_them() {
    use roomcast::protocol::{compress, fossil};
    let server = TestServer::start().await;
    let addr = server.addr();
    let board = crate::compress::board;
    let query = "rooms=sse-doc&delta=fossil&compress=deflate";
    let mut stream = Stream::open(&addr, query, &[]).await.unwrap();
    let subscribed = stream.expect("subscribed").await;
    assert_eq!(subscribed["delta"], "fossil", "{subscribed}");
    assert_eq!(subscribed["compress"], "deflate", "{subscribed}");
    let publish = |n: u64| json!({"type": "publish", "room": "sse-doc", "data": board(24, n)});
    assert_eq!(stream.post(&[publish(1), publish(2)]).await.status, 202);

    let first = stream.expect("message").await;
    assert_eq!(
        (&first["delta"], &first["compressed"]),
        (&json!(false), &json!(true))
    );
    let text = compress::unpack(first["data"].as_str().unwrap(), 1 << 20).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), board(24, 1));
    let second = stream.expect("message").await;
    assert_eq!(second["delta"], true, "{second}");
    let delta = match second["compressed"] == true {
        true => compress::unpack(second["data"].as_str().unwrap(), 1 << 20).unwrap(),
        false => second["data"].as_str().unwrap().to_owned(),
    };
    let next = fossil::apply(text.as_bytes(), delta.as_bytes(), 1 << 20).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&next).unwrap(),
        board(24, 2)
    );

    let id = stream.last_id.clone().unwrap();
    drop(stream);
    let query = "delta=fossil&compress=deflate";
    let mut again = Stream::open(&addr, query, &[("last-event-id", &id)])
        .await
        .unwrap();
    let subscribed = again.expect("subscribed").await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(
        subscribed["delta"], "fossil",
        "a resume keeps the delta: {subscribed}"
    );
    assert_eq!(subscribed["compress"], "deflate", "and the compression");
    assert_eq!(again.post(&[publish(3)]).await.status, 202);
    let third = again.expect("message").await;
    assert_eq!(
        (&third["delta"], &third["compressed"]),
        (&json!(false), &json!(true))
    );
    let text = compress::unpack(third["data"].as_str().unwrap(), 1 << 20).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), board(24, 3));

    let bad = Stream::open(&addr, "compress=zstd", &[]).await;
    assert_eq!(bad.err().unwrap().status, 400);
    drop(again);
    server.stop().await;
}

/// A resumed room the user may no longer read is refused once (`107 forbidden`, on an
/// event whose id no longer names it) and not asked for again on the next reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_drops_a_room_it_may_no_longer_read_from_the_event_id() {
    use crate::support::tokens::{exp, hs256};
    let server = TestServer::with(|c| c.auth.jwt_hs256_secret = SECRET.into()).await;
    let addr = server.addr();
    let token = hs256(json!({"sub": "ann", "exp": exp(),
        "rooms": {"subscribe": ["sse-ok:*"], "publish": ["sse-ok:*"]}}));
    let query = format!("access_token={token}");
    let resume = "sse-gone:1~e0~4,sse-ok:1~~0";
    let mut stream = Stream::open(&addr, &query, &[("last-event-id", resume)])
        .await
        .unwrap();
    let mut refused = None;
    let mut subscribed = None;
    while refused.is_none() || subscribed.is_none() {
        let event = stream
            .event(WAIT)
            .await
            .expect("an answer to each resumed room");
        match event.frame["type"].as_str().unwrap() {
            "error" => refused = Some(event),
            "subscribed" => subscribed = Some(event),
            other => panic!("unexpected {other}: {}", event.frame),
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused.frame["code"], 107, "{}", refused.frame);
    let id = refused.id.expect("the refusal moves the id");
    assert!(!id.contains("sse-gone"), "{id}");
    let id = stream.last_id.clone().unwrap();
    assert!(
        id.starts_with("sse-ok:1~") && !id.contains("sse-gone"),
        "{id}"
    );
    drop(stream);

    let mut again = Stream::open(&addr, &query, &[("last-event-id", &id)])
        .await
        .unwrap();
    assert_eq!(
        again.post(&[json!({"type": "ping", "id": 1})]).await.status,
        202
    );
    let mut kinds = Vec::new();
    loop {
        let frame = again.frame().await.expect("events");
        let kind = frame["type"].as_str().unwrap().to_owned();
        kinds.push(kind.clone());
        if kind == "pong" && kinds.contains(&"subscribed".to_owned()) {
            break;
        }
        assert!(kinds.len() < 4, "{kinds:?}");
    }
    assert!(
        !kinds.contains(&"error".to_owned()),
        "not asked again: {kinds:?}"
    );
    drop(again);
    server.stop().await;
}

/// Behind a proxy that refuses WebSocket upgrades, the Rust client falls back to
/// Server-Sent Events by itself: it subscribes, publishes, receives, and after the proxy
/// drops every connection it reconnects (over SSE again) and resumes — every message
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_falls_back_to_sse_behind_a_proxy_that_refuses_upgrades() {
    use crate::support::TestClient;
    use crate::support::proxy::UpgradeBlockingProxy;
    use roomcast::client::{Client, ClientConfig, Event};
    use roomcast::protocol::Encoding;
    let server = TestServer::start().await;
    let proxy = UpgradeBlockingProxy::start(server.addr()).await;
    let mut config = ClientConfig::new(format!("ws://{}/ws", proxy.addr));
    config.reconnect_max = Duration::from_millis(200);
    let (client, mut events) = Client::start(config);
    client.subscribe("fallback").await.unwrap();
    let ack = client
        .publish("fallback", json!({"n": 1}), None)
        .await
        .unwrap();
    assert_eq!(ack.position.seq, 1, "a publish posted over SSE");
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let mut transports = Vec::new();
    let mut ns = Vec::new();
    let mut next = |events: &mut tokio::sync::mpsc::Receiver<Event>| {
        let event = events.try_recv().ok();
        if let Some(Event::Connected { transport, .. }) = &event {
            transports.push(*transport);
        }
        event
    };
    // Stage 1: n = 2..=10 published directly once the first arrived; stage 2: every
    // proxied connection dropped at 10, then n = 11..=20.
    let mut stage = 0;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while ns.len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "received {ns:?}");
        match next(&mut events) {
            Some(Event::Message { data, .. }) => ns.push(data["n"].as_u64().unwrap()),
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        if ns.len() == 1 && stage == 0 {
            stage = 1;
            for n in 2..=10 {
                publisher.publish("fallback", json!({"n": n}), None).await;
            }
        }
        if ns.len() == 10 && stage == 1 {
            stage = 2;
            proxy.cut();
            for n in 11..=20 {
                publisher.publish("fallback", json!({"n": n}), None).await;
            }
        }
    }
    while let Some(event) = next(&mut events) {
        drop(event);
    }
    assert_eq!(
        ns,
        (1..=20).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(
        transports.len() >= 2,
        "reconnected after the cut: {transports:?}"
    );
    assert!(transports.iter().all(|t| *t == "sse"), "{transports:?}");
    assert!(proxy.refused() >= 2, "each connect tried WebSocket first");
    client.stop().await;
    server.stop().await;
}

/// The same over TLS: a `wss://` URL whose proxy (terminating TLS with a private CA's
/// certificate) refuses upgrades falls back to `https://` Server-Sent Events, trusting
/// the CA file the client was given, and a client without it connects to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_falls_back_to_sse_over_tls_trusting_its_ca_file() {
    use crate::support::TestClient;
    use crate::support::proxy::UpgradeBlockingProxy;
    use crate::support::tls::TestCa;
    use roomcast::client::{Client, ClientConfig, Event};
    use roomcast::protocol::Encoding;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = TestCa::new("sse-fallback");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca.server_cert())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(ca.server_key()).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let server = TestServer::start().await;
    let proxy = UpgradeBlockingProxy::start_tls(
        server.addr(),
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls)),
    )
    .await;
    let port = proxy.addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("wss://localhost:{port}/ws");

    // Without the CA the certificate is not trusted: neither transport connects, and
    // the client keeps trying (a publish times out rather than being acknowledged).
    let mut untrusting = ClientConfig::new(url.clone());
    untrusting.request_timeout = Duration::from_millis(600);
    let (client, mut events) = Client::start(untrusting);
    assert!(client.publish("tls", json!({"n": 0}), None).await.is_err());
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event, Event::Connected { .. }), "{event:?}");
    }
    client.stop().await;
    let refused_untrusted = proxy.refused();

    let mut config = ClientConfig::new(url);
    config.tls_ca_file = Some(ca.ca_cert().into());
    let (client, mut events) = Client::start(config);
    client.subscribe("tls").await.unwrap();
    let ack = client.publish("tls", json!({"n": 1}), None).await.unwrap();
    assert_eq!(ack.position.seq, 1, "a publish posted over https");
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("tls", json!({"n": 2}), None).await;
    let (mut ns, mut transports) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    while ns.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "received {ns:?}");
        match tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
            Ok(Some(Event::Message { data, .. })) => ns.push(data["n"].as_u64().unwrap()),
            Ok(Some(Event::Connected { transport, .. })) => transports.push(transport),
            _ => {}
        }
    }
    assert_eq!(ns, vec![1, 2], "every message once, in order");
    assert_eq!(transports, vec!["sse"]);
    assert!(
        proxy.refused() > refused_untrusted,
        "WebSocket was tried first, over TLS"
    );
    client.stop().await;
    server.stop().await;
}
