//! A reconnect storm for measuring presence (see docs/cluster.md, "Presence"):
//! `N` clients subscribe to one room on instance A, then — when A dies — all reconnect
//! to instance B at once and subscribe again. With `--presence` they ask for presence
//! events (the room must match `presence.rooms`) and wait until each one's view of the
//! set is the `N` clients on B; without it they only wait for `subscribed`.
//!
//! ```sh
//! cargo run --release --example presence_storm -- ws://A/ws ws://B/ws 1000 issue:storm --presence
//! ```
//! Prints `ready` once every client is subscribed on A (kill A then), and one summary
//! line when every client settled on B.

use roomcast::client::{ClientError, Connection};
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    snapshots: usize,
    diffs: usize,
    entries: usize,
}

async fn one(
    a: String,
    b: String,
    room: String,
    n: usize,
    presence: bool,
    ready: tokio::sync::mpsc::Sender<()>,
) -> (Seen, Connection) {
    let subscribe = ClientFrame::Subscribe {
        id: Some(1),
        room: room.clone(),
        since: None,
        presence,
        info: None,
        delta: None,
        compress: None,
    };
    let mut first = Connection::connect(&a, Some(Encoding::MsgPack))
        .await
        .expect("connects to A");
    first.send(&subscribe).await.expect("sends");
    let wanted = if presence { 3 } else { 2 };
    for _ in 0..wanted {
        first
            .next_frame(Duration::from_secs(60))
            .await
            .expect("a frame from A");
    }
    ready.send(()).await.expect("main waits");
    // Read (and drop) until A dies.
    while let Ok(_) | Err(ClientError::Timeout) = first.next_frame(Duration::from_secs(1)).await {}
    let mut conn = Connection::connect(&b, Some(Encoding::MsgPack))
        .await
        .expect("connects to B");
    conn.send(&subscribe).await.expect("sends");
    let mut seen = Seen::default();
    let mut set: HashSet<String> = HashSet::new();
    let mut subscribed = false;
    let mut on_b: HashSet<String> = HashSet::new();
    loop {
        if subscribed && (!presence || (seen.snapshots > 0 && set.len() == n && on_b.len() == n)) {
            break;
        }
        match conn
            .next_frame(Duration::from_secs(120))
            .await
            .expect("settles on B")
        {
            ServerFrame::Subscribed { .. } => subscribed = true,
            ServerFrame::Presence { clients, .. } => {
                seen.snapshots += 1;
                seen.entries += clients.len();
                set = clients.iter().map(|e| e.conn.clone()).collect();
                on_b = clients
                    .iter()
                    .filter(|e| e.node.ends_with('b'))
                    .map(|e| e.conn.clone())
                    .collect();
            }
            ServerFrame::PresenceDiff { joins, leaves, .. } => {
                seen.diffs += 1;
                seen.entries += joins.len() + leaves.len();
                for e in leaves {
                    set.remove(&e.conn);
                    on_b.remove(&e.conn);
                }
                for e in joins {
                    if e.node.ends_with('b') {
                        on_b.insert(e.conn.clone());
                    }
                    set.insert(e.conn);
                }
            }
            _ => {}
        }
    }
    (seen, conn)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (a, b, n, room) = (
        args[1].clone(),
        args[2].clone(),
        args[3].parse::<usize>().unwrap(),
        args[4].clone(),
    );
    let presence = args.iter().any(|arg| arg == "--presence");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(n);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(one(
                a.clone(),
                b.clone(),
                room.clone(),
                n,
                presence,
                ready_tx.clone(),
            ))
        })
        .collect();
    for _ in 0..n {
        ready_rx.recv().await.expect("a client subscribed");
    }
    println!("ready");
    let mut start = None;
    let mut results = Vec::new();
    for task in tasks {
        let result = task.await.expect("client");
        start.get_or_insert_with(Instant::now);
        results.push(result);
    }
    let (snapshots, diffs, entries) = results.iter().fold((0, 0, 0), |acc, (s, _)| {
        (acc.0 + s.snapshots, acc.1 + s.diffs, acc.2 + s.entries)
    });
    println!(
        "settled: clients={n} presence={presence} snapshots={snapshots} diffs={diffs} entries_sent={entries} max_diffs_per_client={}",
        results.iter().map(|(s, _)| s.diffs).max().unwrap_or(0)
    );
}
