//! Sharded Pub/Sub over a Redis Cluster: one coordinator task that knows the slot map
//! and which room channels this instance needs, and one [`Shard`] task per master that
//! holds those channels' subscriptions on that master.
//!
//! The slot map is read with `CLUSTER SLOTS` at start, every few probe intervals, and at
//! once when a shard reports a hint that it changed (a `MOVED`, a server-side
//! `sunsubscribe`, a lost node). When a slot's owner changes — a failover, a killed
//! master replaced by its replica, a migrated slot — its channels are moved to the new
//! owner's task, which subscribes them and tells their rooms to fill the gap from the
//! replay buffer. Until every master's shard is healthy (all its channels confirmed,
//! its probe arriving) the instance reports Pub/Sub as not ready.

use super::RedisSettings;
use super::health::Health;
use super::keys::Keys;
use super::link::{Connection, Link};
use super::shard::{Report, Shard, ShardCmd};
use super::slots::{SlotMap, slot_of};
use super::subscriber::Request;
use crate::broker::{BrokerError, EventSender};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many probe intervals pass between routine slot-map reads while all is well.
const ROUTINE_REFRESH_PROBES: u32 = 5;

/// Everything the coordinator needs.
pub struct ClusterSubscriber {
    /// Channel and key names.
    pub keys: Keys,
    /// This instance's id (names its probe channels).
    pub node_id: String,
    /// `user:password@` of the seed URLs, if any, reused for every master.
    pub userinfo: String,
    /// `rediss` when the seeds are reached over TLS (`rediss-cluster://`), else `redis`.
    pub scheme: &'static str,
    /// Where publications and resyncs go.
    pub events: EventSender,
    /// Shared health flags (`/readyz`).
    pub health: Arc<Health>,
    /// Timings.
    pub settings: RedisSettings,
    /// The cluster command connection (slot-map reads, probe publishes).
    pub link: Link,
    /// Circuits per master; told the slot map.
    pub breaker: Arc<super::breaker::Breaker>,
}

/// A running shard task.
struct ShardHandle {
    commands: mpsc::UnboundedSender<ShardCmd>,
    probe: String,
}

/// The coordinator's state.
struct Coordinator {
    this: ClusterSubscriber,
    /// Room channels this instance needs, with their slots.
    wanted: HashMap<String, u16>,
    slots: Option<SlotMap>,
    shards: HashMap<String, ShardHandle>,
    shard_health: HashMap<String, Result<(), String>>,
    reports: mpsc::UnboundedSender<Report>,
    refreshing: bool,
    refresh_wanted: bool,
    last_refresh: Option<Instant>,
    last_error: Option<String>,
}

/// Runs the coordinator until the broker is dropped.
pub async fn run_cluster(this: ClusterSubscriber, mut requests: mpsc::UnboundedReceiver<Request>) {
    let (reports, mut reports_rx) = mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(this.settings.probe_interval);
    let mut coordinator = Coordinator {
        this,
        wanted: HashMap::new(),
        slots: None,
        shards: HashMap::new(),
        shard_health: HashMap::new(),
        reports,
        refreshing: false,
        refresh_wanted: true,
        last_refresh: None,
        last_error: None,
    };
    coordinator.publish_health();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                None => return,
                Some(request) => coordinator.on_request(request),
            },
            Some(report) = reports_rx.recv() => coordinator.on_report(report),
            _ = tick.tick() => coordinator.on_tick(),
        }
    }
}

impl Coordinator {
    fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe(channel, reply) => {
                let slot = slot_of(channel.as_bytes());
                self.wanted.insert(channel.clone(), slot);
                match self.owner_shard(slot) {
                    Some(shard) => {
                        let _ = shard
                            .commands
                            .send(ShardCmd::Subscribe(channel, Some(reply)));
                    }
                    None => {
                        self.refresh_wanted = true;
                        let _ = reply.send(Err(BrokerError::Unavailable(format!(
                            "no known Redis Cluster master serves slot {slot} yet"
                        ))));
                    }
                }
            }
            Request::Unsubscribe(channel) => {
                if let Some(slot) = self.wanted.remove(&channel)
                    && let Some(shard) = self.owner_shard(slot)
                {
                    let _ = shard.commands.send(ShardCmd::Forget(channel));
                }
            }
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Health { master, state } => {
                if self.shards.contains_key(&master) {
                    self.shard_health.insert(master, state);
                    self.publish_health();
                }
            }
            Report::TopologyHint => self.refresh_wanted = true,
            Report::Topology(result) => {
                self.refreshing = false;
                match result {
                    Ok(map) => {
                        self.last_error = None;
                        self.apply(map);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the Redis Cluster slot map; will retry");
                        self.last_error = Some(err);
                        self.refresh_wanted = true;
                    }
                }
                self.publish_health();
            }
        }
    }

    fn on_tick(&mut self) {
        let healthy = self.ready().is_ok();
        let routine = self.this.settings.probe_interval * ROUTINE_REFRESH_PROBES;
        let due = match self.last_refresh {
            None => true,
            Some(at) => {
                let every = if healthy && !self.refresh_wanted {
                    routine
                } else {
                    self.this.settings.probe_interval
                };
                at.elapsed() >= every
            }
        };
        if due && !self.refreshing {
            self.refresh();
        }
    }

    /// Reads the slot map in the background; the result comes back as a report.
    fn refresh(&mut self) {
        self.refreshing = true;
        self.refresh_wanted = false;
        self.last_refresh = Some(Instant::now());
        let link = self.this.link.clone();
        let reports = self.reports.clone();
        let timeout = self.this.settings.command_timeout;
        tokio::spawn(async move {
            let result = match link.get() {
                Ok(Connection::Cluster(mut connection)) => {
                    let mut command = redis::cmd("CLUSTER");
                    command.arg("SLOTS");
                    let read = command.query_async::<redis::Value>(&mut connection);
                    match tokio::time::timeout(timeout, read).await {
                        Ok(Ok(reply)) => SlotMap::parse(&reply),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err("CLUSTER SLOTS timed out".into()),
                    }
                }
                Ok(Connection::Single(_)) => Err("not a cluster connection".into()),
                Err(err) => Err(err.to_string()),
            };
            let _ = reports.send(Report::Topology(result));
        });
    }

    /// Moves every channel whose slot changed owner, starts and stops shard tasks.
    fn apply(&mut self, map: SlotMap) {
        if self.slots.as_ref() == Some(&map) {
            return;
        }
        let old = self.slots.replace(map.clone());
        self.this.breaker.set_topology(map.clone());
        if old.is_some() {
            tracing::info!(masters = ?map.masters(), "Redis Cluster slot map changed");
            metrics::counter!("roomcast_broker_topology_changes_total").increment(1);
        }
        let masters: HashSet<String> = map.masters().into_iter().collect();
        let map = &map;
        // Masters that own no slot any more: their task stops (the handle is dropped).
        self.shards.retain(|master, _| masters.contains(master));
        self.shard_health
            .retain(|master, _| masters.contains(master));
        // Channels whose owner changed move; new masters get a task with theirs.
        for (channel, &slot) in &self.wanted {
            let before = old.as_ref().and_then(|m| m.owner(slot));
            let after = map.owner(slot);
            if before == after {
                continue;
            }
            if let Some(shard) = before.and_then(|m| self.shards.get(m)) {
                let _ = shard.commands.send(ShardCmd::Forget(channel.clone()));
            }
            if let Some(shard) = after.and_then(|m| self.shards.get(m)) {
                let _ = shard
                    .commands
                    .send(ShardCmd::Subscribe(channel.clone(), None));
            }
        }
        for master in &masters {
            let Some(probe) =
                map.probe_channel(self.this.keys.prefix(), &self.this.node_id, master)
            else {
                continue;
            };
            match self.shards.get_mut(master) {
                Some(shard) => {
                    if shard.probe != probe {
                        shard.probe = probe.clone();
                        let _ = shard.commands.send(ShardCmd::Probe(probe));
                    }
                }
                None => {
                    let assigned: HashSet<String> = self
                        .wanted
                        .iter()
                        .filter(|&(_, &slot)| map.owner(slot) == Some(master.as_str()))
                        .map(|(channel, _)| channel.clone())
                        .collect();
                    self.start_shard(master.clone(), probe, assigned);
                }
            }
        }
    }

    fn start_shard(&mut self, master: String, probe: String, assigned: HashSet<String>) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let shard = Shard {
            url: format!(
                "{}://{}{master}/?protocol=resp3",
                self.this.scheme, self.this.userinfo
            ),
            master: master.clone(),
            keys: self.this.keys.clone(),
            events: self.this.events.clone(),
            settings: self.this.settings.clone(),
            link: self.this.link.clone(),
            health: self.this.health.clone(),
            reports: self.reports.clone(),
            breaker: self.this.breaker.clone(),
        };
        tokio::spawn(shard.run(probe.clone(), assigned, commands_rx));
        self.shard_health
            .insert(master.clone(), Err("connecting".into()));
        self.shards.insert(master, ShardHandle { commands, probe });
    }

    fn owner_shard(&self, slot: u16) -> Option<&ShardHandle> {
        let master = self.slots.as_ref()?.owner(slot)?;
        self.shards.get(master)
    }

    /// Ready when the slot map covers every slot and every master's shard is healthy.
    fn ready(&self) -> Result<(), String> {
        let Some(map) = &self.slots else {
            return Err(match &self.last_error {
                Some(err) => format!("cluster slot map unknown: {err}"),
                None => "reading the cluster slot map".into(),
            });
        };
        if !map.covers_all() {
            return Err("some cluster slots have no master".into());
        }
        let failing: Vec<String> = map
            .masters()
            .into_iter()
            .filter_map(|master| match self.shard_health.get(&master) {
                Some(Ok(())) => None,
                Some(Err(why)) => Some(format!("{master}: {why}")),
                None => Some(format!("{master}: not started")),
            })
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join(", "))
        }
    }

    fn publish_health(&self) {
        self.this.health.set_pubsub(self.ready());
    }
}
