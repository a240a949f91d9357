//! Every kind of bad input gets a stable error code or close code, and never disturbs
//! other clients.

use crate::support::{TestClient, TestServer, WAIT};
use roomcast::protocol::{ClientFrame, CloseCode, Encoding, ErrorCode};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A bystander subscribed to a room, to check that it keeps receiving.
async fn bystander(server: &TestServer) -> (TestClient, TestClient) {
    let mut watcher = TestClient::connect(&server.url, Encoding::MsgPack).await;
    watcher.subscribe("calm", None).await;
    let publisher = TestClient::connect(&server.url, Encoding::Json).await;
    (watcher, publisher)
}

async fn bystander_still_served(watcher: &mut TestClient, publisher: &mut TestClient) {
    let (ack, _, _) = publisher.publish("calm", json!("still here"), None).await;
    let (_, _, seq, _) = watcher.message().await;
    assert_eq!(seq, ack.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_bad_frame_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let (mut watcher, mut publisher) = bystander(&server).await;

    let mut json_client = TestClient::connect(&server.url, Encoding::Json).await;
    json_client
        .conn
        .send_raw(Message::text("{\"type\": "))
        .await
        .unwrap();
    json_client.expect_error_frame(ErrorCode::BadFrame).await;
    json_client
        .conn
        .send_raw(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    json_client.expect_error_frame(ErrorCode::BadFrame).await;
    json_client
        .conn
        .send_raw(Message::text(
            r#"{"type":"subscribe","id":12,"room":["not","a","string"]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        json_client.expect_error_frame(ErrorCode::BadFrame).await,
        Some(12),
        "the id is echoed when it can be read"
    );
    json_client.ping().await;

    let mut msgpack_client = TestClient::connect(&server.url, Encoding::MsgPack).await;
    msgpack_client
        .conn
        .send_raw(Message::binary(vec![0xc1u8, 0xff]))
        .await
        .unwrap();
    msgpack_client.expect_error_frame(ErrorCode::BadFrame).await;
    msgpack_client
        .conn
        .send_raw(Message::text("{}"))
        .await
        .unwrap();
    msgpack_client.expect_error_frame(ErrorCode::BadFrame).await;
    msgpack_client.ping().await;

    bystander_still_served(&mut watcher, &mut publisher).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_missing_fields_are_refused() {
    let server = TestServer::start().await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client
        .conn
        .send_raw(Message::text(r#"{"type":"teleport","id":5}"#))
        .await
        .unwrap();
    assert_eq!(
        client.expect_error_frame(ErrorCode::UnknownType).await,
        Some(5)
    );
    client
        .conn
        .send_raw(Message::text(r#"{"type":"publish","id":6,"room":"r"}"#))
        .await
        .unwrap();
    assert_eq!(
        client.expect_error_frame(ErrorCode::InvalidFrame).await,
        Some(6)
    );
    client
        .conn
        .send_raw(Message::text(r#"{"type":"subscribe","id":7}"#))
        .await
        .unwrap();
    assert_eq!(
        client.expect_error_frame(ErrorCode::InvalidFrame).await,
        Some(7)
    );
    client.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009_and_others_carry_on() {
    let server = TestServer::with(|c| c.connection.max_frame_bytes = 1024).await;
    let (mut watcher, mut publisher) = bystander(&server).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let big = "x".repeat(4096);
    // The server may close while the frame is still being written.
    let _ = client
        .conn
        .send(&ClientFrame::Publish {
            id: Some(1),
            room: "calm".into(),
            data: json!(big),
            key: None,
        })
        .await;
    assert_eq!(
        client.closed().await,
        Some(CloseCode::MessageTooBig.number())
    );
    bystander_still_served(&mut watcher, &mut publisher).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_room_names_are_refused() {
    let server = TestServer::with(|c| c.rooms.name_max_len = 16).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    for room in [
        "",
        "has space",
        "x".repeat(17).as_str(),
        "emoji-🙂",
        "semi;colon",
    ] {
        let id = client
            .expect_error(
                ClientFrame::Subscribe {
                    id: Some(3),
                    room: room.to_owned(),
                    since: None,
                    presence: false,
                    info: None,
                    delta: None,
                    compress: None,
                },
                ErrorCode::InvalidRoom,
            )
            .await;
        assert_eq!(id, Some(3), "room {room:?}");
    }
    client
        .expect_error(
            ClientFrame::Publish {
                id: Some(4),
                room: "bad room".into(),
                data: json!(1),
                key: None,
            },
            ErrorCode::InvalidRoom,
        )
        .await;
    client.subscribe("ok:r_1.a-b@c/d=e", None).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_beyond_the_room_limit_is_refused() {
    let server = TestServer::with(|c| c.connection.max_rooms = 2).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client.subscribe("a", None).await;
    client.subscribe("b", None).await;
    client
        .expect_error(
            ClientFrame::Subscribe {
                id: Some(3),
                room: "c".into(),
                since: None,
                presence: false,
                info: None,
                delta: None,
                compress: None,
            },
            ErrorCode::TooManyRooms,
        )
        .await;
    client
        .expect_error(
            ClientFrame::Subscribe {
                id: Some(4),
                room: "a".into(),
                since: None,
                presence: false,
                info: None,
                delta: None,
                compress: None,
            },
            ErrorCode::AlreadySubscribed,
        )
        .await;
    client
        .send(ClientFrame::Unsubscribe {
            id: Some(5),
            room: "a".into(),
        })
        .await;
    client.next().await;
    client.subscribe("c", None).await;
    client
        .expect_error(
            ClientFrame::Unsubscribe {
                id: Some(6),
                room: "zzz".into(),
            },
            ErrorCode::NotSubscribed,
        )
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_subscription_is_refused_when_configured() {
    let server = TestServer::with(|c| c.connection.publish_requires_subscription = true).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client
        .expect_error(
            ClientFrame::Publish {
                id: Some(1),
                room: "news".into(),
                data: json!(1),
                key: None,
            },
            ErrorCode::NotSubscribed,
        )
        .await;
    client.subscribe("news", None).await;
    let (ack, _, _) = client.publish("news", json!(2), None).await;
    assert_eq!(ack.seq, 1, "the refused publish was not sequenced");
    server.stop().await;
}

/// A client that connects but never completes the upgrade request is disconnected after
/// the handshake timeout, without a reply; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_the_handshake_is_dropped() {
    let server = TestServer::with(|c| c.connection.handshake_timeout_ms = 300).await;
    let (mut watcher, mut publisher) = bystander(&server).await;
    let addr = server.server().local_addr();

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    for stream in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the server closes the socket")
            .unwrap_or(0);
        assert_eq!(read, 0, "closed without a reply");
    }
    bystander_still_served(&mut watcher, &mut publisher).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_websocket_path_is_told_to_upgrade() {
    let server = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(server.server().local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.contains("upgrade_required"), "{response}");
    server.stop().await;
}

/// A publish whose `data` comes deflated (`compress: "deflate"`) is inflated no further
/// than `max_frame_bytes`: a 44 KB frame that would inflate to 32 MiB is refused with
/// `109 compressed_too_large` (and counted), corrupt data with `100 bad_frame`, and an
/// honest one is published as its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_publish_is_inflated_within_the_frame_limit_and_a_bomb_is_refused() {
    use base64::Engine;
    let server = TestServer::start().await;
    let (mut watcher, mut publisher) = bystander(&server).await;
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let deflate = |bytes: &[u8]| miniz_oxide::deflate::compress_to_vec(bytes, 9);
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;

    let bomb = base64(&deflate(&vec![b' '; 32 << 20]));
    assert!(bomb.len() < 65536, "the frame itself is within the limit");
    let frame =
        json!({"type": "publish", "id": 5, "room": "calm", "compress": "deflate", "data": bomb});
    client
        .conn
        .send_raw(Message::text(frame.to_string()))
        .await
        .unwrap();
    assert_eq!(
        client
            .expect_error_frame(ErrorCode::CompressedTooLarge)
            .await,
        Some(5)
    );
    for (id, data) in [
        (6, json!("not base64!")),
        (7, json!(base64(b"not deflate"))),
        (8, json!({"a": 1})),
    ] {
        let frame = json!({"type": "publish", "id": id, "room": "calm", "compress": "deflate", "data": data});
        client
            .conn
            .send_raw(Message::text(frame.to_string()))
            .await
            .unwrap();
        let code = if id == 8 {
            ErrorCode::InvalidFrame
        } else {
            ErrorCode::BadFrame
        };
        assert_eq!(client.expect_error_frame(code).await, Some(id));
    }
    let unknown =
        json!({"type": "publish", "id": 9, "room": "calm", "compress": "zstd", "data": "x"});
    client
        .conn
        .send_raw(Message::text(unknown.to_string()))
        .await
        .unwrap();
    assert_eq!(
        client.expect_error_frame(ErrorCode::InvalidFrame).await,
        Some(9)
    );

    // An honest compressed publish: the subscriber gets the value.
    let value = json!({"text": "compressed on the way in ".repeat(40)});
    let honest = json!({"type": "publish", "id": 10, "room": "calm", "compress": "deflate",
        "data": base64(&deflate(value.to_string().as_bytes()))});
    client
        .conn
        .send_raw(Message::text(honest.to_string()))
        .await
        .unwrap();
    match client.next().await {
        roomcast::protocol::ServerFrame::Ack { id: Some(10), .. } => {}
        other => panic!("expected the ack, got {other:?}"),
    }
    let (_, _, _, data) = watcher.message().await;
    assert_eq!(data, value);

    let metrics = crate::support::http_get(&server.addr(), "/metrics").await;
    assert!(
        metrics.contains("roomcast_inflate_refused_total 1"),
        "the bomb is counted: {metrics}"
    );
    client.ping().await;
    bystander_still_served(&mut watcher, &mut publisher).await;
    server.stop().await;
}
