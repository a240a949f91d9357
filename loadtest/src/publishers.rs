//! Publishers: resilient clients that publish to their share of the rooms at the
//! scenario's rate (or its rising rate steps), stamp each message with the send time, and
//! record the highest acknowledged position of every room. Those positions are what the
//! accounting holds every subscriber to: each acknowledged message must arrive.

use crate::stats::{Live, now_micros};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::stream::Position;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Publishes one publisher may have waiting for their ack; past it, it waits (the
/// report then shows a lower publish rate than asked for).
const MAX_IN_FLIGHT: usize = 4096;
/// How often a publisher wakes up to send what is due.
const TICK: Duration = Duration::from_millis(5);

/// Publish rate over time: messages per second per room, one value per step.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Rate of each step.
    pub rates: Vec<f64>,
    /// Length of each step.
    pub step: Duration,
    /// With a closed loop: publishes each publisher keeps unacknowledged (the rates are
    /// then 0 and only say how long it lasts).
    pub in_flight: usize,
}

impl Schedule {
    /// The rate `elapsed` after the start, `None` once the schedule is over.
    pub fn rate_at(&self, elapsed: Duration) -> Option<f64> {
        let step = (elapsed.as_secs_f64() / self.step.as_secs_f64()) as usize;
        self.rates.get(step).copied()
    }

    /// The whole schedule.
    pub fn duration(&self) -> Duration {
        self.step.mul_f64(self.rates.len() as f64)
    }

    /// Whether anything is published at all.
    pub fn publishes(&self) -> bool {
        self.in_flight > 0 || self.rates.iter().any(|rate| *rate > 0.0)
    }
}

/// The highest acknowledged position of every room.
pub struct Tops(Mutex<Vec<Option<Position>>>);

impl Tops {
    /// No acknowledgement yet for `rooms` rooms.
    pub fn new(rooms: usize) -> Tops {
        Tops(Mutex::new(vec![None; rooms]))
    }

    /// An acknowledgement for room `room`.
    pub fn record(&self, room: usize, position: Position) {
        let mut tops = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let top = &mut tops[room];
        match top {
            Some(current) if current.epoch == position.epoch && current.seq >= position.seq => {}
            _ => *top = Some(position),
        }
    }

    /// Every room's highest acknowledged position.
    pub fn snapshot(&self) -> Vec<Option<Position>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// How long a publisher may take to connect before the schedule starts anyway (its
/// publishes are then queued by the client until it connects).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one publisher publishes.
pub struct Plan {
    /// Its rooms (index, name).
    pub rooms: Vec<(usize, String)>,
    /// Its rate over time.
    pub schedule: Schedule,
    /// Padding per message.
    pub message_bytes: usize,
    /// When the schedule starts.
    pub start: Instant,
}

/// A connected publisher.
pub struct Publisher {
    client: Arc<Client>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts a publisher's client and waits for its first connection, so that the
    /// schedule's first second is not spent connecting.
    pub async fn connect(config: ClientConfig, live: Arc<Live>) -> Publisher {
        let (client, mut events) = Client::start(config);
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            while let Some(event) = events.recv().await {
                match event {
                    Event::Connected { .. } => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Disconnected { .. } => {
                        live.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, connected).await;
        Publisher {
            client: Arc::new(client),
            watcher,
        }
    }

    /// Publishes following the plan; returns once the schedule is over (or `stop` says
    /// so) and every publish was acknowledged or failed.
    pub async fn run(
        self,
        plan: Plan,
        stop: watch::Receiver<bool>,
        live: Arc<Live>,
        tops: Arc<Tops>,
    ) {
        let Publisher { client, watcher } = self;
        publish(&client, plan, stop, live, tops).await;
        if let Ok(client) = Arc::try_unwrap(client) {
            client.stop().await;
        }
        watcher.abort();
    }
}

async fn publish(
    client: &Arc<Client>,
    plan: Plan,
    stop: watch::Receiver<bool>,
    live: Arc<Live>,
    tops: Arc<Tops>,
) {
    let Plan {
        rooms,
        schedule,
        message_bytes,
        start,
    } = plan;
    if rooms.is_empty() {
        return;
    }
    let padding = "x".repeat(message_bytes);
    if schedule.in_flight > 0 {
        let end = start + schedule.duration();
        closed_loop(
            client,
            Arc::new(rooms),
            padding,
            end,
            stop,
            live,
            tops,
            schedule.in_flight,
        )
        .await;
        return;
    }
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    let mut credit = 0.0;
    let mut last = start;
    let mut next_room = 0;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let Some(rate) = schedule.rate_at(now.saturating_duration_since(start)) else {
            break;
        };
        if *stop.borrow() {
            break;
        }
        credit += rate * rooms.len() as f64 * now.saturating_duration_since(last).as_secs_f64();
        last = now;
        while credit >= 1.0 {
            credit -= 1.0;
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (room, name) = rooms[next_room % rooms.len()].clone();
            next_room += 1;
            live.publish_attempts.fetch_add(1, Ordering::Relaxed);
            let data = json!({ "t": now_micros(), "p": padding });
            let (client, live, tops) = (client.clone(), live.clone(), tops.clone());
            in_flight.spawn(async move {
                match client.publish(&name, data, None).await {
                    Ok(ack) => {
                        live.acked.fetch_add(1, Ordering::Relaxed);
                        tops.record(room, ack.position);
                    }
                    Err(_) => {
                        live.publish_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Publishes from `workers` loops, each sending its next publish as soon as the last
/// one is acknowledged, to the rooms in turn, until `end` (or `stop`).
#[allow(clippy::too_many_arguments)]
async fn closed_loop(
    client: &Arc<Client>,
    rooms: Arc<Vec<(usize, String)>>,
    padding: String,
    end: Instant,
    stop: watch::Receiver<bool>,
    live: Arc<Live>,
    tops: Arc<Tops>,
    workers: usize,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let padding = Arc::new(padding);
    let mut loops = JoinSet::new();
    for _ in 0..workers {
        let (client, rooms, padding, stop) =
            (client.clone(), rooms.clone(), padding.clone(), stop.clone());
        let (next, live, tops) = (next.clone(), live.clone(), tops.clone());
        loops.spawn(async move {
            while Instant::now() < end && !*stop.borrow() {
                let (room, name) = &rooms[next.fetch_add(1, Ordering::Relaxed) % rooms.len()];
                live.publish_attempts.fetch_add(1, Ordering::Relaxed);
                let data = json!({ "t": now_micros(), "p": padding.as_str() });
                match client.publish(name, data, None).await {
                    Ok(ack) => {
                        live.acked.fetch_add(1, Ordering::Relaxed);
                        tops.record(*room, ack.position);
                    }
                    Err(_) => {
                        live.publish_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while loops.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::stream::Epoch;

    #[test]
    fn a_schedule_steps_through_its_rates_and_ends() {
        let schedule = Schedule {
            rates: vec![10.0, 20.0],
            step: Duration::from_secs(5),
            in_flight: 0,
        };
        assert_eq!(schedule.rate_at(Duration::from_secs(1)), Some(10.0));
        assert_eq!(schedule.rate_at(Duration::from_secs(6)), Some(20.0));
        assert_eq!(schedule.rate_at(Duration::from_secs(10)), None);
        assert_eq!(schedule.duration(), Duration::from_secs(10));
    }

    #[test]
    fn tops_keep_the_highest_acknowledged_position() {
        let tops = Tops::new(2);
        let at = |seq| Position::new(Epoch::new("e"), seq);
        tops.record(0, at(3));
        tops.record(0, at(2));
        tops.record(1, at(1));
        assert_eq!(tops.snapshot(), vec![Some(at(3)), Some(at(1))]);
    }
}
