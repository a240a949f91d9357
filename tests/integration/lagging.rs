//! The room's continuity logic against a broker whose fan-out lags or loses messages,
//! as Pub/Sub can: a gate between the broker and the instance holds, drops or releases
//! publication events on the test's command.

use crate::support::{TestClient, TestServer};
use async_trait::async_trait;
use roomcast::broker::{
    Broker, BrokerError, BrokerEvent, BrokerStatus, EventSender, HistoryPage, HistoryQuery,
    HistorySettings, MemoryBroker, PublishAck, PublishRequest, ResyncScope,
};
use roomcast::config::Config;
use roomcast::protocol::{ClientFrame, Encoding, RoomName, ServerFrame};
use roomcast::server::Server;
use roomcast::stream::{Epoch, Position};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the gate does with the next publication events.
#[derive(Default)]
struct GateState {
    holding: bool,
    held: VecDeque<BrokerEvent>,
    drop_next: usize,
}

/// A memory broker whose events pass through a gate, and whose reported top can be
/// made to go backwards.
struct GatedBroker {
    inner: MemoryBroker,
    gate: Arc<Mutex<GateState>>,
    out: EventSender,
    /// When set, history reports this top (same epoch), as a restored snapshot would.
    rewound_top: Mutex<Option<u64>>,
    /// Publishes to this room wait until it is cleared (a failing Redis node).
    stalled_room: Mutex<Option<String>>,
    unstalled: tokio::sync::Notify,
}

impl GatedBroker {
    fn hold(&self) {
        self.gate.lock().unwrap().holding = true;
    }

    fn release(&self) {
        let mut gate = self.gate.lock().unwrap();
        gate.holding = false;
        while let Some(event) = gate.held.pop_front() {
            let _ = self.out.send(event);
        }
    }

    fn drop_next(&self, count: usize) {
        self.gate.lock().unwrap().drop_next = count;
    }

    fn resync(&self) {
        let _ = self.out.send(BrokerEvent::Resync(ResyncScope::All));
    }

    fn rewind_to(&self, seq: u64) {
        *self.rewound_top.lock().unwrap() = Some(seq);
    }

    fn stall(&self, room: &str) {
        *self.stalled_room.lock().unwrap() = Some(room.to_owned());
    }

    fn unstall(&self) {
        *self.stalled_room.lock().unwrap() = None;
        self.unstalled.notify_waiters();
    }
}

#[async_trait]
impl Broker for GatedBroker {
    fn kind(&self) -> &'static str {
        "gated-memory"
    }
    async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        loop {
            let unstalled = self.unstalled.notified();
            if self.stalled_room.lock().unwrap().as_deref() != Some(room.as_str()) {
                break;
            }
            unstalled.await;
        }
        self.inner.publish(room, request).await
    }
    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let mut page = self.inner.history(room, query).await?;
        if let Some(top) = *self.rewound_top.lock().unwrap() {
            page.top.seq = top;
            page.publications.retain(|p| p.seq <= top);
        }
        Ok(page)
    }
    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.inner.subscribe(room).await
    }
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.inner.unsubscribe(room).await
    }
    async fn reset_epoch(&self, room: &RoomName, stale: &Epoch) -> Result<Position, BrokerError> {
        *self.rewound_top.lock().unwrap() = None;
        self.inner.reset_epoch(room, stale).await
    }
    fn status(&self) -> BrokerStatus {
        self.inner.status()
    }
}

/// A server on a gated broker.
async fn gated_server() -> (TestServer, Arc<GatedBroker>) {
    let (inner_tx, mut inner_rx) = roomcast::broker::event_channel(1 << 16);
    let (out_tx, out_rx) = roomcast::broker::event_channel(1 << 16);
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = crate::support::db::sqlite_url();
    let broker = Arc::new(GatedBroker {
        inner: MemoryBroker::new(HistorySettings::from_config(&config.history), inner_tx),
        gate: Arc::default(),
        out: out_tx.clone(),
        rewound_top: Mutex::new(None),
        stalled_room: Mutex::new(None),
        unstalled: tokio::sync::Notify::new(),
    });
    let gate = broker.gate.clone();
    tokio::spawn(async move {
        while let Some(event) = inner_rx.recv().await {
            let mut state = gate.lock().unwrap();
            if state.drop_next > 0 {
                state.drop_next -= 1;
            } else if state.holding {
                state.held.push_back(event);
            } else {
                let _ = out_tx.send(event);
            }
        }
    });
    let server = Server::start_with_broker(&config, broker.clone(), out_rx)
        .await
        .unwrap();
    (TestServer::wrap(server), broker)
}

async fn seqs(client: &mut TestClient, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        seqs.push(client.message().await.2);
    }
    seqs
}

/// Hard case 1: a client resumes on an instance that is behind the one it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_on_an_instance_that_is_behind_gets_no_duplicate_and_no_stall() {
    let (server, broker) = gated_server().await;
    let mut local = TestClient::connect(&server.url, Encoding::Json).await;
    local.subscribe("r", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("r", json!(1), None).await;
    publisher.publish("r", json!(2), None).await;
    assert_eq!(seqs(&mut local, 2).await, vec![1, 2]);

    broker.hold();
    let mut top = None;
    for n in 3..=5 {
        top = Some(publisher.publish("r", json!(n), None).await.0);
    }
    // This instance has delivered 2; the client has seen 5 elsewhere.
    let mut client = TestClient::connect(&server.url, Encoding::MsgPack).await;
    let resumed = client.subscribe("r", top.clone()).await;
    assert!(resumed.recovered);
    assert_eq!((resumed.position.seq, resumed.replayed), (5, 0));
    assert_eq!(
        seqs(&mut local, 3).await,
        vec![3, 4, 5],
        "caught up from the buffer"
    );

    broker.release(); // the late copies of 3..5 must not be delivered again
    publisher.publish("r", json!(6), None).await;
    assert_eq!(seqs(&mut client, 1).await, vec![6]);
    assert_eq!(seqs(&mut local, 1).await, vec![6]);
    assert_eq!(local.maybe_next(Duration::from_millis(200)).await, None);
}

/// Lost fan-out messages are filled in place from the replay buffer, before anything
/// later is delivered, without the client doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_messages_are_filled_before_later_ones() {
    let (server, broker) = gated_server().await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client.subscribe("r", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    broker.drop_next(2);
    for n in 1..=3 {
        publisher.publish("r", json!(n), None).await;
    }
    assert_eq!(seqs(&mut client, 3).await, vec![1, 2, 3]);

    // A lost last message has nothing after it to reveal the gap: the resync after a
    // broker reconnect does.
    broker.drop_next(1);
    publisher.publish("r", json!(4), None).await;
    assert_eq!(client.maybe_next(Duration::from_millis(200)).await, None);
    broker.resync();
    assert_eq!(seqs(&mut client, 1).await, vec![4]);
}

/// Hard case 2: the first subscriber of a room arrives while messages are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_subscriber_arriving_mid_flight_misses_nothing_after_its_position() {
    let (server, broker) = gated_server().await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    publisher.publish("r", json!(1), None).await;
    broker.hold();
    publisher.publish("r", json!(2), None).await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    let subscribed = client.subscribe("r", None).await;
    publisher.publish("r", json!(3), None).await;
    broker.release();
    let after = subscribed.position.seq;
    let expected: Vec<u64> = (after + 1..=3).collect();
    assert_eq!(seqs(&mut client, expected.len()).await, expected);
    assert_eq!(client.maybe_next(Duration::from_millis(200)).await, None);
}

/// A room stream that goes backwards (same epoch, lower top) is moved to a new epoch,
/// and subscribers are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_seen_going_backwards_gets_a_new_epoch() {
    let (server, broker) = gated_server().await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client.subscribe("r", None).await;
    let mut publisher = TestClient::connect(&server.url, Encoding::Json).await;
    let (first, _, _) = publisher.publish("r", json!(1), None).await;
    publisher.publish("r", json!(2), None).await;
    assert_eq!(seqs(&mut client, 2).await, vec![1, 2]);
    // The broker now reports a lower top in the same epoch, as a restored snapshot
    // would look to this instance.
    broker.rewind_to(1);
    broker.resync();
    match client.next().await {
        ServerFrame::Reset { epoch, reason, .. } => {
            assert_ne!(epoch, first.epoch);
            assert_eq!(reason, "epoch_changed");
        }
        other => panic!("expected reset, got {other:?}"),
    }
}

/// Publishes of one connection to a room whose broker node hangs do not hold up its
/// publishes to other rooms; publishes to the stalled room keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_room_does_not_hold_up_publishes_to_other_rooms() {
    let (server, broker) = gated_server().await;
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    broker.stall("slow");
    let publish = |id: u64, room: &str| ClientFrame::Publish {
        id: Some(id),
        room: room.to_owned(),
        data: json!(id),
        key: None,
    };
    client.send(publish(1, "slow")).await;
    client.send(publish(2, "slow")).await;
    client.send(publish(3, "fast")).await;
    let acked = |frame: ServerFrame| match frame {
        ServerFrame::Ack { id, room, seq, .. } => (id.unwrap(), room, seq),
        other => panic!("expected an ack, got {other:?}"),
    };
    assert_eq!(acked(client.next().await), (3, "fast".to_owned(), 1));
    assert_eq!(client.maybe_next(Duration::from_millis(200)).await, None);
    broker.unstall();
    assert_eq!(acked(client.next().await), (1, "slow".to_owned(), 1));
    assert_eq!(acked(client.next().await), (2, "slow".to_owned(), 2));
}
