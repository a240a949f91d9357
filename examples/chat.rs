//! A terminal chat on one room, using the Rust client: every line typed on stdin is
//! published, every message of the room is printed. The client reconnects and resumes
//! by itself, so restarting the server loses nothing that was acknowledged.
//!
//! Usage: cargo run --example chat -- ws://127.0.0.1:8080/ws lobby [name]

use roomcast::client::{Client, ClientConfig, Event};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let room = args.next().unwrap_or_else(|| "lobby".into());
    let name = args.next().unwrap_or_else(|| "anonymous".into());

    let (client, mut events) = Client::start(ClientConfig::new(url));
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message { seq, data, .. } => println!("#{seq} {data}"),
                Event::Subscribed {
                    room,
                    position,
                    recovered,
                    replayed,
                    resumed,
                } => eprintln!(
                    "[subscribed to {room} at {position}; resumed: {resumed}, recovered: {recovered}, replayed: {replayed}]"
                ),
                Event::Reset { room, reason, .. } => {
                    eprintln!("[{room}: continuity lost ({reason})]")
                }
                Event::Connected { url, server, .. } => {
                    eprintln!("[connected to {url} (instance {server})]")
                }
                Event::Disconnected { code } => {
                    eprintln!("[disconnected, code {code:?}; reconnecting]")
                }
                Event::Presence { room, clients } => {
                    eprintln!("[{room}: {} present]", clients.len())
                }
                Event::PresenceDiff { joins, leaves, .. } => {
                    for entry in joins {
                        eprintln!("[{} joined]", entry.user);
                    }
                    for entry in leaves {
                        eprintln!("[{} left]", entry.user);
                    }
                }
                Event::Stopped { code } => {
                    eprintln!("[stopped, code {code:?}]");
                    return;
                }
            }
        }
    });
    if let Err(err) = client.subscribe(&room).await {
        eprintln!("cannot subscribe: {err}");
        return;
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match client
            .publish(&room, json!({ "from": name, "text": line }), None)
            .await
        {
            Ok(ack) => eprintln!("[acked as #{}]", ack.position.seq),
            Err(err) => eprintln!("[publish failed: {err}]"),
        }
    }
    client.stop().await;
}
