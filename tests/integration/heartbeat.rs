//! The WebSocket heartbeat while messages flow: the socket task turns once per delivery
//! and polls its heartbeat timer only when it is due, so these check that pings still
//! go out on time and that a silent client is still closed with 4001.

use crate::support::{TestClient, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use roomcast::protocol::{ClientFrame, CloseCode, Encoding, ServerFrame};
use roomcast::transport::websocket;
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const HEARTBEAT_MS: u64 = 200;
const ROOM: &str = "beat";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn decode(message: &Message) -> ServerFrame {
    let frame = websocket::encoded(message.clone()).expect("a data frame");
    Encoding::Json.decode_server(&frame).unwrap()
}

/// A raw WebSocket client subscribed to `ROOM`, so the test sees pings and closes.
async fn subscriber(server: &TestServer) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .unwrap();
    let first = socket.next().await.unwrap().unwrap();
    assert!(matches!(decode(&first), ServerFrame::Welcome { .. }));
    let subscribe = ClientFrame::Subscribe {
        id: Some(1),
        room: ROOM.into(),
        since: None,
        presence: false,
        info: None,
        delta: None,
        compress: None,
    };
    socket
        .send(websocket::message(Encoding::Json.encode(&subscribe)))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert!(matches!(decode(&reply), ServerFrame::Subscribed { .. }));
    socket
}

/// Publishes `count` messages to `ROOM`, one every `every`.
fn publish(url: String, count: u64, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publisher = TestClient::connect(&url, Encoding::MsgPack).await;
        for n in 1..=count {
            publisher.publish(ROOM, json!({ "n": n }), None).await;
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_go_out_on_time_while_messages_flow_and_an_answering_client_stays() {
    let server = TestServer::with(|c| c.connection.heartbeat_ms = HEARTBEAT_MS).await;
    let mut socket = subscriber(&server).await;
    // 60 messages 25 ms apart: about 1.5 s, seven heartbeats, a delivery every turn.
    const MESSAGES: u64 = 60;
    let publisher = publish(server.url.clone(), MESSAGES, Duration::from_millis(25));
    let (mut pings, mut seqs) = (0, Vec::new());
    while (seqs.len() as u64) < MESSAGES {
        // Reading answers pings (tungstenite sends the pong), as a live client does.
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("frames")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(message @ Message::Text(_))) => {
                if let ServerFrame::Message { seq, .. } = decode(&message) {
                    seqs.push(seq);
                }
            }
            Some(Ok(Message::Close(frame))) => panic!("closed while answering pings: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("connection failed: {err}"),
            None => panic!("connection ended"),
        }
    }
    publisher.await.unwrap();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
    assert!(
        pings >= 4,
        "a ping every {HEARTBEAT_MS} ms over about 1.5 s, got {pings}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_with_4001_while_messages_flow() {
    let server = TestServer::with(|c| c.connection.heartbeat_ms = HEARTBEAT_MS).await;
    // It never reads while the messages come, so it never answers a ping.
    let mut socket = subscriber(&server).await;
    let publisher = publish(server.url.clone(), 40, Duration::from_millis(25));
    publisher.await.unwrap();
    let code = loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("frames or close")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::HeartbeatTimeout.number()));
    server.stop().await;
}
