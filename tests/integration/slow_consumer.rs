//! A client that reads slower than its room produces is disconnected at its queue bound
//! with 4000, and resumes from the last message it received.

use crate::support::{TestClient, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use roomcast::protocol::{ClientFrame, CloseCode, Encoding, ServerFrame};
use roomcast::stream::Position;
use roomcast::transport::websocket;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_resumes_from_its_last_message() {
    const MESSAGES: u64 = 1500;
    let server = TestServer::with(|c| {
        c.connection.outbound_queue = 32;
        c.connection.send_buffer_bytes = 8192;
        c.history.size = 5000;
    })
    .await;

    // A client with a tiny receive buffer, so the kernel cannot absorb the backlog.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.server().local_addr()).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(server.url.as_str(), stream)
        .await
        .unwrap();
    let decode = |m: &Message| {
        let frame = websocket::encoded(m.clone()).expect("a data frame");
        Encoding::Json.decode_server(&frame).unwrap()
    };
    assert!(matches!(
        decode(&slow.next().await.unwrap().unwrap()),
        ServerFrame::Welcome { .. }
    ));
    let subscribe = ClientFrame::Subscribe {
        id: Some(1),
        room: "firehose".into(),
        since: None,
        presence: false,
        info: None,
        delta: None,
        compress: None,
    };
    slow.send(websocket::message(Encoding::Json.encode(&subscribe)))
        .await
        .unwrap();
    let epoch = match decode(&slow.next().await.unwrap().unwrap()) {
        ServerFrame::Subscribed { epoch, .. } => epoch,
        other => panic!("expected subscribed, got {other:?}"),
    };

    // It reads, but slowly.
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let code = loop {
            match tokio::time::timeout(WAIT, slow.next())
                .await
                .expect("frames or close")
            {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(message @ Message::Text(_))) => {
                    if let ServerFrame::Message { seq, .. } = decode(&message) {
                        seqs.push(seq);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        (seqs, code)
    });

    let mut publisher = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let payload = "p".repeat(1000);
    for n in 1..=MESSAGES {
        publisher
            .publish("firehose", json!({"n": n, "pad": payload}), None)
            .await;
    }
    let (seqs, code) = reader.await.unwrap();
    assert_eq!(code, Some(CloseCode::SlowConsumer.number()));
    let last = *seqs.last().unwrap_or(&0);
    assert!(last < MESSAGES, "it was disconnected before the end");
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "what it got was complete"
    );

    let mut resumed = TestClient::connect(&server.url, Encoding::Json).await;
    let subscribed = resumed
        .subscribe("firehose", Some(Position::new(epoch, last)))
        .await;
    assert!(subscribed.recovered);
    assert_eq!(subscribed.replayed, MESSAGES - last);
    for expected in last + 1..=MESSAGES {
        let (_, _, seq, _) = resumed.message().await;
        assert_eq!(seq, expected);
    }
    server.stop().await;
}
