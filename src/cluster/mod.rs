//! Cluster membership: every instance announces itself through the broker every
//! `cluster.announce_interval_ms` — its id, WebSocket address, version, state
//! (`starting`, `ready`, `draining`), load, broker health, busiest rooms and latest
//! slow-consumer disconnects and resumes — and reads back every other instance's
//! announcement in the same round trip. An instance not heard from for
//! `cluster.member_ttl_ms` is gone; one that stops removes itself at once.
//!
//! The view serves the admin cluster route (answered by any instance for the whole
//! cluster), the drain route (which instance to drain), and the metric
//! `roomcast_cluster_members{state}`.

mod process;

pub use crate::broker::membership::{Announcement, MembershipStore, MemoryMembership};
pub use crate::config::ClusterConfig;
pub use crate::telemetry::recent;

use crate::broker::{Broker, BrokerError};
use crate::connection::Connections;
use crate::protocol::RoomName;
use crate::room::Rooms;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Rooms listed per instance, and in the merged view, by subscribers and by message rate.
pub const TOP_ROOMS: usize = 10;
/// Addresses in one reconnect hint.
pub const HINT_SIZE: usize = 3;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Up, but its broker is not usable yet (or not any more).
    Starting,
    /// Serving.
    Ready,
    /// Draining: handing its clients to the others before it exits.
    Draining,
}

impl MemberState {
    /// Every state (metric series).
    pub const ALL: [MemberState; 3] = [
        MemberState::Starting,
        MemberState::Ready,
        MemberState::Draining,
    ];

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Starting => "starting",
            MemberState::Ready => "ready",
            MemberState::Draining => "draining",
        }
    }
}

/// The broker as one instance sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerView {
    /// Whether publishes can be served.
    pub reachable: bool,
    /// Time since the latest Pub/Sub probe came back (null: no Pub/Sub, or none yet).
    pub pubsub_probe_age_ms: Option<u64>,
    /// Lag of the latest publication received over Pub/Sub (null: no Pub/Sub).
    pub pubsub_lag_seconds: Option<f64>,
}

/// One room's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomLoad {
    /// The room.
    pub room: String,
    /// Subscribers.
    pub subscribers: u64,
    /// Messages delivered per second over the last announcement interval.
    pub messages_per_sec: f64,
}

/// An instance's busiest rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopRooms {
    /// By subscribers, most first.
    pub by_subscribers: Vec<RoomLoad>,
    /// By message rate, fastest first (rooms without messages left out).
    pub by_message_rate: Vec<RoomLoad>,
}

/// An instance's latest notable events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentEvents {
    /// Clients closed for reading too slowly.
    pub slow_consumer_disconnects: Vec<recent::SlowConsumer>,
    /// Resumes and whether they continued exactly.
    pub recoveries: Vec<recent::Recovery>,
}

/// What an instance announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its id (`node_id`).
    pub id: String,
    /// Where clients reach it directly (null: only through a shared address).
    pub advertise_url: Option<String>,
    /// Its version.
    pub version: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Seconds it had been up when it announced.
    pub uptime_secs: u64,
    /// Its state.
    pub state: MemberState,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Rooms with local subscribers.
    pub rooms: u64,
    /// Subscriptions of its connections.
    pub subscriptions: u64,
    /// CPU use over the last interval (100 = one core).
    pub cpu_percent: f64,
    /// Resident memory.
    pub memory_bytes: u64,
    /// The broker as it sees it.
    pub broker: BrokerView,
    /// Its busiest rooms.
    #[serde(default)]
    pub top_rooms: TopRooms,
    /// Its latest events.
    #[serde(default)]
    pub recent: RecentEvents,
}

/// A member as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// What it announced.
    pub member: Member,
    /// How long ago.
    pub last_seen_ms: u64,
}

/// The membership read last, and when.
struct View {
    members: Vec<Seen>,
    read_at: Instant,
}

/// Where the clients this instance sends away go: the ready instances with an address,
/// other than this one, with the connections each had at the last read plus those sent
/// to it since. Each hint names the one with the fewest first, so a drain fills the
/// emptiest instances up evenly instead of sending everyone to one.
#[derive(Default)]
struct Planner {
    /// The view it was built from.
    read_at: Option<Instant>,
    /// Address and expected connections.
    targets: Vec<(String, u64)>,
}

impl Planner {
    fn rebuild(&mut self, view: &View, own_id: &str, ttl_ms: u64) {
        let since = view.read_at.elapsed().as_millis() as u64;
        self.read_at = Some(view.read_at);
        self.targets = view
            .members
            .iter()
            .filter(|seen| {
                seen.member.id != own_id
                    && seen.member.state == MemberState::Ready
                    && seen.last_seen_ms + since <= ttl_ms
            })
            .filter_map(|seen| {
                let url = seen.member.advertise_url.clone()?;
                Some((url, seen.member.connections))
            })
            .collect();
    }

    /// The next client's hint: the target with the fewest expected connections (which
    /// then expects one more), followed by the next emptiest.
    fn next(&mut self) -> Vec<String> {
        self.targets
            .sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(first) = self.targets.first_mut() {
            first.1 += 1;
        }
        self.targets
            .iter()
            .take(HINT_SIZE)
            .map(|(url, _)| url.clone())
            .collect()
    }
}

/// This instance's membership in the cluster.
pub struct Cluster {
    id: String,
    config: ClusterConfig,
    advertise_url: Option<String>,
    started_at: SystemTime,
    started: Instant,
    draining: AtomicBool,
    store: Arc<dyn MembershipStore>,
    broker: Arc<dyn Broker>,
    view: Mutex<View>,
    planner: Mutex<Planner>,
    announce_now: Notify,
    drain_requested: CancellationToken,
}

impl Cluster {
    /// Membership of instance `id`, listening on `bound` (over TLS with `tls`), through
    /// `broker`'s store.
    pub fn new(
        config: &ClusterConfig,
        id: &str,
        bound: SocketAddr,
        tls: bool,
        broker: Arc<dyn Broker>,
    ) -> Arc<Cluster> {
        // Present (at 0) from the start, like every other family.
        for state in MemberState::ALL {
            metrics::gauge!("roomcast_cluster_members", "state" => state.name()).increment(0.0);
        }
        Arc::new(Cluster {
            id: id.to_owned(),
            advertise_url: config.advertise_url(bound, tls),
            config: config.clone(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            store: broker.membership_store(),
            broker,
            view: Mutex::new(View {
                members: Vec::new(),
                read_at: Instant::now(),
            }),
            planner: Mutex::new(Planner::default()),
            announce_now: Notify::new(),
            drain_requested: CancellationToken::new(),
        })
    }

    /// This instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The URL this instance announces.
    pub fn advertise_url(&self) -> Option<&str> {
        self.advertise_url.as_deref()
    }

    /// The membership TTL.
    pub fn ttl(&self) -> Duration {
        self.config.ttl()
    }

    /// Cancelled when a drain of this instance was asked for (the admin routes).
    pub fn drain_requested(&self) -> CancellationToken {
        self.drain_requested.clone()
    }

    /// Asks this instance to drain (as SIGTERM does).
    pub fn request_drain(&self) {
        self.drain_requested.cancel();
        self.announce_now.notify_one();
    }

    /// Marks this instance as draining and tells the others at once.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.announce_now.notify_one();
    }

    /// This instance's state.
    pub fn state(&self) -> MemberState {
        if self.draining.load(Ordering::SeqCst) || self.drain_requested.is_cancelled() {
            MemberState::Draining
        } else if self.broker.status().ready {
            MemberState::Ready
        } else {
            MemberState::Starting
        }
    }

    /// The membership as last read, aged by the time since, without members past the
    /// TTL. Costs no broker round trip.
    pub fn members(&self) -> Vec<Seen> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let since = view.read_at.elapsed().as_millis() as u64;
        view.members
            .iter()
            .map(|seen| Seen {
                member: seen.member.clone(),
                last_seen_ms: seen.last_seen_ms + since,
            })
            .filter(|seen| seen.last_seen_ms <= self.config.member_ttl_ms)
            .collect()
    }

    /// The reconnect hint for the next client this instance sends away: addresses of
    /// ready instances (never a draining one, never this one) with the fewest
    /// connections, counting the clients already sent to each since the last read.
    /// Empty when no other instance is ready or none announces an address.
    pub fn hint(&self) -> Vec<String> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut planner = self.planner.lock().unwrap_or_else(|e| e.into_inner());
        if planner.read_at != Some(view.read_at) {
            planner.rebuild(&view, &self.id, self.config.member_ttl_ms);
        }
        drop(view);
        let hint = planner.next();
        if !hint.is_empty() {
            metrics::counter!("roomcast_reconnect_hints_total").increment(1);
        }
        hint
    }

    /// Reads the membership from the broker now (and keeps it as the view).
    pub async fn fresh_members(&self) -> Result<Vec<Seen>, BrokerError> {
        let read = self.store.read(self.config.ttl()).await?;
        Ok(self.keep(read))
    }

    /// The membership, fresh when the broker answers, else as last read; and whether the
    /// broker answered.
    pub async fn current_members(&self) -> (Vec<Seen>, bool) {
        match self.fresh_members().await {
            Ok(members) => (members, true),
            Err(err) => {
                tracing::debug!(error = %err, "membership read failed; using the last view");
                (self.members(), false)
            }
        }
    }

    fn keep(&self, read: Vec<Announcement>) -> Vec<Seen> {
        let mut members: Vec<Seen> = read
            .into_iter()
            .filter_map(|a| {
                serde_json::from_slice::<Member>(&a.record)
                    .map(|member| Seen {
                        member,
                        last_seen_ms: a.age_ms,
                    })
                    .map_err(|err| tracing::debug!(%err, "unreadable membership record"))
                    .ok()
            })
            .collect();
        members.sort_by(|a, b| a.member.id.cmp(&b.member.id));
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.members = members.clone();
        view.read_at = Instant::now();
        drop(view);
        for state in MemberState::ALL {
            let count = members.iter().filter(|s| s.member.state == state).count();
            metrics::gauge!("roomcast_cluster_members", "state" => state.name()).set(count as f64);
        }
        members
    }

    /// Announces this instance every interval (and at once when its state changes) until
    /// `stop` is cancelled.
    pub fn spawn_announcer(
        self: &Arc<Self>,
        connections: Connections,
        rooms: Rooms,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut sampler = Sampler::new();
            let mut tick = tokio::time::interval(this.config.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = this.announce_now.notified() => {}
                    () = stop.cancelled() => return,
                }
                let member = this.snapshot(&connections, &rooms, &mut sampler);
                let record = serde_json::to_vec(&member).expect("members serialize");
                match this
                    .store
                    .announce(&this.id, &record, this.config.ttl())
                    .await
                {
                    Ok(read) => {
                        if failing {
                            tracing::info!("announcing to the cluster again");
                        }
                        failing = false;
                        this.keep(read);
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(error = %err, "cannot announce this instance to the cluster");
                        }
                        failing = true;
                    }
                }
            }
        })
    }

    /// With `cluster.rebalance`: once a second, when this instance has held more than the
    /// ready instances' mean + margin for `rebalance_after_ms`, moves
    /// `rebalance_rate_percent` of its connections (at least one) to the emptiest ready
    /// instances, exactly as a drain moves them (hint, 1012), until it is down to the mean.
    pub fn spawn_rebalancer(
        self: &Arc<Self>,
        connections: Connections,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        if !self.config.rebalance {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut above_since: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let own = connections.count() as u64;
                let load = (this.state() == MemberState::Ready)
                    .then(|| Load::of(&this.members(), &this.id, own))
                    .flatten();
                let Some(load) = load else {
                    above_since = None;
                    continue;
                };
                let excess = load.excess(own, &this.config, &mut above_since);
                if excess == 0 {
                    continue;
                }
                let rate = (own as f64 * this.config.rebalance_rate_percent / 100.0).ceil() as u64;
                let count = rate.max(1).min(excess) as usize;
                let shed = connections.shed(count, || this.hint());
                metrics::counter!("roomcast_rebalance_shed_total").increment(shed as u64);
                tracing::info!(
                    shed,
                    own,
                    mean = load.mean,
                    "rebalancing: connections sent to emptier instances"
                );
            }
        }))
    }

    /// Removes this instance from the membership (it stops).
    pub async fn leave(&self) {
        if let Err(err) = self.store.leave(&self.id).await {
            tracing::debug!(error = %err, "cannot leave the membership; it expires instead");
        }
    }

    /// What this instance announces now.
    fn snapshot(&self, connections: &Connections, rooms: &Rooms, sampler: &mut Sampler) -> Member {
        let loads = rooms.loads();
        let top_rooms = sampler.top_rooms(&loads);
        let (slow_consumer_disconnects, recoveries) = recent::snapshot(&self.id);
        let pubsub = self.broker.pubsub_health();
        Member {
            id: self.id.clone(),
            advertise_url: self.advertise_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            state: self.state(),
            connections: connections.count() as u64,
            rooms: loads.len() as u64,
            subscriptions: loads.iter().map(|l| l.subscribers as u64).sum(),
            cpu_percent: sampler.cpu.percent(),
            memory_bytes: process::resident_bytes(),
            broker: BrokerView {
                reachable: self.broker.status().ready,
                pubsub_probe_age_ms: pubsub
                    .and_then(|p| p.probe_age)
                    .map(|age| age.as_millis() as u64),
                pubsub_lag_seconds: pubsub.map(|p| (p.lag_seconds * 1000.0).round() / 1000.0),
            },
            top_rooms,
            recent: RecentEvents {
                slow_consumer_disconnects,
                recoveries,
            },
        }
    }

    /// `GET /api/v1/admin/cluster`: the whole cluster as this instance sees it.
    pub async fn overview(&self) -> Value {
        let (members, answered) = self.current_members().await;
        let instances: Vec<Value> = members
            .iter()
            .map(|seen| {
                let m = &seen.member;
                json!({
                    "id": m.id,
                    "advertise_url": m.advertise_url,
                    "version": m.version,
                    "started_at": m.started_at,
                    "uptime_secs": m.uptime_secs + seen.last_seen_ms / 1000,
                    "state": m.state,
                    "connections": m.connections,
                    "rooms": m.rooms,
                    "subscriptions": m.subscriptions,
                    "cpu_percent": m.cpu_percent,
                    "memory_bytes": m.memory_bytes,
                    "last_seen_ms": seen.last_seen_ms,
                    "broker": m.broker,
                })
            })
            .collect();
        json!({
            "generated_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "self_id": self.id,
            "ttl_ms": self.config.member_ttl_ms,
            "instances": instances,
            "broker": {
                "kind": self.broker.kind(),
                "reachable": answered && self.broker.status().ready,
            },
            "top_rooms": merged_top_rooms(&members),
            "recent": merged_recent(&members),
        })
    }
}

/// The ready instances' load, as the rebalancer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load {
    /// Mean connections per ready instance (this one counted with its live count).
    mean: f64,
    /// Whether another ready instance is below the mean (somewhere to shed to).
    room_elsewhere: bool,
}

impl Load {
    /// `None` when fewer than two instances are ready.
    fn of(members: &[Seen], own_id: &str, own: u64) -> Option<Load> {
        let others: Vec<u64> = members
            .iter()
            .filter(|s| s.member.id != own_id && s.member.state == MemberState::Ready)
            .map(|s| s.member.connections)
            .collect();
        if others.is_empty() {
            return None;
        }
        let mean = (others.iter().sum::<u64>() + own) as f64 / (others.len() + 1) as f64;
        Some(Load {
            mean,
            room_elsewhere: others.iter().any(|&c| (c as f64) < mean),
        })
    }

    /// How many connections to shed now: over the mean once `own` has stayed above
    /// mean + margin for `rebalance_after_ms` (tracked in `above_since`), until it is
    /// down to the mean; else 0.
    fn excess(&self, own: u64, config: &ClusterConfig, above_since: &mut Option<Instant>) -> u64 {
        let margin = (self.mean * config.rebalance_margin_percent as f64 / 100.0)
            .max(config.rebalance_margin_min as f64);
        if own as f64 > self.mean + margin {
            above_since.get_or_insert_with(Instant::now);
        } else if own as f64 <= self.mean {
            *above_since = None;
        }
        let due = above_since.is_some_and(|since| {
            since.elapsed() >= Duration::from_millis(config.rebalance_after_ms)
        });
        if due && self.room_elsewhere {
            (own as f64 - self.mean).floor().max(0.0) as u64
        } else {
            0
        }
    }
}

/// Samples kept between announcements, for rates.
struct Sampler {
    cpu: process::CpuSampler,
    publications: HashMap<RoomName, u64>,
    at: Instant,
}

impl Sampler {
    fn new() -> Self {
        Sampler {
            cpu: process::CpuSampler::new(),
            publications: HashMap::new(),
            at: Instant::now(),
        }
    }

    /// The busiest rooms, with message rates since the previous call.
    fn top_rooms(&mut self, loads: &[crate::room::RoomLoad]) -> TopRooms {
        let elapsed = self.at.elapsed().as_secs_f64().max(0.001);
        let rooms: Vec<RoomLoad> = loads
            .iter()
            .map(|load| {
                let before = self.publications.get(&load.room).copied().unwrap_or(0);
                // A room whose actor started again counts from 0.
                let delivered = if load.publications >= before {
                    load.publications - before
                } else {
                    load.publications
                };
                RoomLoad {
                    room: load.room.to_string(),
                    subscribers: load.subscribers as u64,
                    messages_per_sec: ((delivered as f64 / elapsed) * 100.0).round() / 100.0,
                }
            })
            .collect();
        self.publications = loads
            .iter()
            .map(|l| (l.room.clone(), l.publications))
            .collect();
        self.at = Instant::now();
        top_rooms(rooms)
    }
}

/// The [`TOP_ROOMS`] rooms with most subscribers and with the highest message rate.
fn top_rooms(mut rooms: Vec<RoomLoad>) -> TopRooms {
    rooms.sort_by(|a, b| {
        b.subscribers
            .cmp(&a.subscribers)
            .then_with(|| a.room.cmp(&b.room))
    });
    let by_subscribers = rooms.iter().take(TOP_ROOMS).cloned().collect();
    rooms.retain(|r| r.messages_per_sec > 0.0);
    rooms.sort_by(|a, b| {
        b.messages_per_sec
            .total_cmp(&a.messages_per_sec)
            .then_with(|| a.room.cmp(&b.room))
    });
    rooms.truncate(TOP_ROOMS);
    TopRooms {
        by_subscribers,
        by_message_rate: rooms,
    }
}

/// Every instance's top rooms, summed per room (subscribers and rates), re-ranked.
fn merged_top_rooms(members: &[Seen]) -> TopRooms {
    let mut sums: HashMap<&str, (u64, f64)> = HashMap::new();
    for seen in members {
        let top = &seen.member.top_rooms;
        let mut counted: Vec<&str> = Vec::new();
        for load in top.by_subscribers.iter().chain(&top.by_message_rate) {
            if counted.contains(&load.room.as_str()) {
                continue;
            }
            counted.push(&load.room);
            let sum = sums.entry(&load.room).or_default();
            sum.0 += load.subscribers;
            sum.1 += load.messages_per_sec;
        }
    }
    top_rooms(
        sums.into_iter()
            .map(|(room, (subscribers, rate))| RoomLoad {
                room: room.to_owned(),
                subscribers,
                messages_per_sec: (rate * 100.0).round() / 100.0,
            })
            .collect(),
    )
}

/// Every instance's latest events, newest first, at most [`recent::RING`] of each kind.
fn merged_recent(members: &[Seen]) -> RecentEvents {
    let mut slow: Vec<recent::SlowConsumer> = members
        .iter()
        .flat_map(|s| s.member.recent.slow_consumer_disconnects.iter().cloned())
        .collect();
    let mut recoveries: Vec<recent::Recovery> = members
        .iter()
        .flat_map(|s| s.member.recent.recoveries.iter().cloned())
        .collect();
    // RFC 3339 times in UTC with the same precision sort as text.
    slow.sort_by(|a, b| b.at.cmp(&a.at));
    recoveries.sort_by(|a, b| b.at.cmp(&a.at));
    slow.truncate(recent::RING);
    recoveries.truncate(recent::RING);
    RecentEvents {
        slow_consumer_disconnects: slow,
        recoveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(room: &str, subscribers: u64, rate: f64) -> RoomLoad {
        RoomLoad {
            room: room.into(),
            subscribers,
            messages_per_sec: rate,
        }
    }

    fn member(id: &str, rooms: Vec<RoomLoad>) -> Seen {
        Seen {
            member: Member {
                id: id.into(),
                advertise_url: None,
                version: "0".into(),
                started_at: "2024-01-01T00:00:00Z".into(),
                uptime_secs: 1,
                state: MemberState::Ready,
                connections: 0,
                rooms: 0,
                subscriptions: 0,
                cpu_percent: 0.0,
                memory_bytes: 0,
                broker: BrokerView {
                    reachable: true,
                    pubsub_probe_age_ms: None,
                    pubsub_lag_seconds: None,
                },
                top_rooms: top_rooms(rooms),
                recent: RecentEvents::default(),
            },
            last_seen_ms: 0,
        }
    }

    #[test]
    fn top_rooms_are_summed_across_instances_and_ranked() {
        let members = [
            member("a", vec![load("x", 5, 1.0), load("y", 1, 9.0)]),
            member("b", vec![load("x", 7, 2.0), load("z", 3, 0.0)]),
        ];
        let merged = merged_top_rooms(&members);
        assert_eq!(
            merged.by_subscribers,
            vec![load("x", 12, 3.0), load("z", 3, 0.0), load("y", 1, 9.0)]
        );
        assert_eq!(
            merged.by_message_rate,
            vec![load("y", 1, 9.0), load("x", 12, 3.0)],
            "rooms without messages are not ranked by rate"
        );
        let many: Vec<RoomLoad> = (0..30).map(|i| load(&format!("r{i}"), i, 1.0)).collect();
        let top = top_rooms(many);
        assert_eq!(top.by_subscribers.len(), TOP_ROOMS);
        assert_eq!(top.by_subscribers[0].subscribers, 29);
    }

    #[test]
    fn hints_fill_the_emptiest_ready_instances_first_and_skip_draining_ones() {
        let seen = |id: &str, state: MemberState, connections: u64, url: bool| {
            let mut s = member(id, Vec::new());
            s.member.state = state;
            s.member.connections = connections;
            s.member.advertise_url = url.then(|| format!("ws://{id}/ws"));
            s
        };
        let view = View {
            members: vec![
                seen("me", MemberState::Draining, 90, true),
                seen("a", MemberState::Ready, 10, true),
                seen("b", MemberState::Ready, 13, true),
                seen("c", MemberState::Draining, 0, true),
                seen("d", MemberState::Starting, 0, true),
                seen("e", MemberState::Ready, 0, false),
            ],
            read_at: Instant::now(),
        };
        let mut planner = Planner::default();
        planner.rebuild(&view, "me", 6000);
        let firsts: Vec<String> = (0..9).map(|_| planner.next()[0].clone()).collect();
        // a takes 3 to catch up with b, then they alternate.
        assert_eq!(
            firsts,
            ["a", "a", "a", "a", "b", "a", "b", "a", "b"].map(|id| format!("ws://{id}/ws"))
        );
        assert_eq!(
            planner.next().len(),
            2,
            "only the ready ones with an address"
        );
        let empty = View {
            members: vec![seen("me", MemberState::Draining, 5, true)],
            read_at: Instant::now(),
        };
        planner.rebuild(&empty, "me", 6000);
        assert!(planner.next().is_empty());
    }

    #[test]
    fn an_instance_sheds_only_after_staying_above_mean_plus_margin_and_down_to_the_mean() {
        let mut config = ClusterConfig {
            advertise_url: String::new(),
            announce_interval_ms: 2000,
            member_ttl_ms: 6000,
            rebalance: true,
            rebalance_margin_percent: 10,
            rebalance_margin_min: 5,
            rebalance_after_ms: 0,
            rebalance_rate_percent: 1.0,
        };
        let with = |id: &str, state: MemberState, connections: u64| {
            let mut s = member(id, Vec::new());
            s.member.state = state;
            s.member.connections = connections;
            s
        };
        let members = vec![
            with("me", MemberState::Ready, 0),
            with("a", MemberState::Ready, 0),
            with("b", MemberState::Ready, 0),
            with("c", MemberState::Draining, 500),
        ];
        // 300, 0, 0: mean 100, margin 10.
        let load = Load::of(&members, "me", 300).unwrap();
        assert_eq!(load.mean, 100.0);
        let mut since = None;
        assert_eq!(load.excess(300, &config, &mut since), 200);
        // Within the margin, not yet above: nothing; once above, down to the mean.
        let mut since = None;
        assert_eq!(load.excess(105, &config, &mut since), 0);
        assert_eq!(load.excess(111, &config, &mut since), 11);
        assert_eq!(load.excess(105, &config, &mut since), 5, "keeps going");
        assert_eq!(load.excess(100, &config, &mut since), 0);
        assert_eq!(
            load.excess(105, &config, &mut since),
            0,
            "stopped at the mean"
        );
        // Not before it stayed above for the configured time.
        config.rebalance_after_ms = 60_000;
        let mut since = None;
        assert_eq!(load.excess(300, &config, &mut since), 0);
        assert!(since.is_some());
        // Alone (no other ready instance): nothing to compare with.
        assert_eq!(Load::of(&members[..1], "me", 300), None);
    }

    #[test]
    fn the_advertised_url_comes_from_the_listener_unless_it_is_a_wildcard() {
        let mut config = ClusterConfig {
            advertise_url: String::new(),
            announce_interval_ms: 2000,
            member_ttl_ms: 6000,
            rebalance: false,
            rebalance_margin_percent: 10,
            rebalance_margin_min: 20,
            rebalance_after_ms: 30_000,
            rebalance_rate_percent: 1.0,
        };
        assert_eq!(
            config.advertise_url("127.0.0.1:8080".parse().unwrap(), false),
            Some("ws://127.0.0.1:8080/ws".into())
        );
        assert_eq!(
            config.advertise_url("127.0.0.1:8443".parse().unwrap(), true),
            Some("wss://127.0.0.1:8443/ws".into())
        );
        assert_eq!(
            config.advertise_url("0.0.0.0:8080".parse().unwrap(), false),
            None
        );
        config.advertise_url = "wss://a.example/ws".into();
        assert_eq!(
            config.advertise_url("0.0.0.0:8080".parse().unwrap(), false),
            Some("wss://a.example/ws".into())
        );
        assert!(config.validate().is_ok());
        config.advertise_url = "http://a".into();
        assert_eq!(config.validate().unwrap_err().0, "cluster.advertise_url");
    }
}
