//! One master of a Redis Cluster, as this instance's Pub/Sub sees it: a dedicated RESP3
//! connection to that node on which the room channels it owns are `SSUBSCRIBE`d, a probe
//! channel hashed into its slots that proves the subscription path end to end, and a
//! reconnect when either stops working.
//!
//! Redis drops sharded subscriptions when a slot changes owner (a failover, a migrated
//! slot): the old master sends an `sunsubscribe` for each channel, or simply dies. The
//! task notices both, marks the channel unconfirmed, tells its rooms to resync, and asks
//! the cluster coordinator to re-read the slot map, which moves the channel to its new
//! owner's task. A task whose subscriptions are not all confirmed, or whose probe is
//! overdue, reports itself unhealthy, and the instance is not ready until it recovers.
//!
//! Replies on this connection are checked against what was asked (an unsolicited
//! `sunsubscribe` can be mistaken by the client library for the reply of a command in
//! flight); any mismatch replaces the connection, which resubscribes everything.

use super::link::Link;
use super::pushes::{self, Pushes, confirms};
use super::slots::SlotMap;
use super::subscriber::{self, Session, deliver, publish_probe};
use super::{Keys, RedisSettings};
use crate::broker::{BrokerError, BrokerEvent, EventSender, ResyncScope};
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What the cluster coordinator asks of a shard task.
pub enum ShardCmd {
    /// Serve this room channel (this master owns its slot); answered once confirmed.
    Subscribe(String, Option<oneshot::Sender<Result<(), BrokerError>>>),
    /// Stop serving a channel (its room is gone, or its slot moved elsewhere).
    Forget(String),
    /// Use this probe channel from now on (the master's slots changed).
    Probe(String),
}

/// What a shard task tells the cluster coordinator.
pub enum Report {
    /// The shard's health changed (or was re-checked).
    Health {
        /// The master's address.
        master: String,
        /// `Ok` while every assigned channel is confirmed and probes arrive.
        state: Result<(), String>,
    },
    /// The slot map probably changed: a `MOVED`, a server-side unsubscribe, a lost node.
    TopologyHint,
    /// A slot map read finished.
    Topology(Result<SlotMap, String>),
}

/// Everything a shard task needs.
pub struct Shard {
    /// The master's `host:port`.
    pub master: String,
    /// `redis://…` URL of the master (credentials of the seed nodes, RESP3).
    pub url: String,
    /// Channel and key names.
    pub keys: Keys,
    /// Where publications and resyncs go.
    pub events: EventSender,
    /// Timings.
    pub settings: RedisSettings,
    /// The cluster command connection, which routes the probe to the slot's owner.
    pub link: Link,
    /// Shared health of the command connection (probe publishes record into it).
    pub health: std::sync::Arc<super::health::Health>,
    /// Where to report.
    pub reports: mpsc::UnboundedSender<Report>,
    /// Circuits per master; a probe that gets through closes this master's.
    pub breaker: std::sync::Arc<super::breaker::Breaker>,
}

/// Mutable state of a shard task.
struct State {
    probe: String,
    probe_confirmed: bool,
    last_probe: Instant,
    /// Channels this master should serve.
    assigned: HashSet<String>,
    /// Channels the server confirmed and has not dropped since.
    confirmed: HashSet<String>,
    last_health: Option<Result<(), String>>,
}

/// Why a connection is given up.
type Lost = String;

impl Shard {
    /// Runs until the coordinator drops its command sender.
    pub async fn run(
        self,
        probe: String,
        assigned: HashSet<String>,
        commands: mpsc::UnboundedReceiver<ShardCmd>,
    ) {
        let (min, max) = (self.settings.reconnect_min, self.settings.reconnect_max);
        let state = State {
            probe,
            probe_confirmed: false,
            last_probe: Instant::now(),
            assigned,
            confirmed: HashSet::new(),
            last_health: None,
        };
        let session = Live {
            shard: self,
            state,
            commands,
        };
        subscriber::run(session, min, max).await;
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, Pushes), String> {
        let client = super::client(&self.url, &self.settings).map_err(|e| e.to_string())?;
        pushes::connect(&client, &self.settings, "shard_pushes").await
    }

    /// Waits `delay` without a connection, keeping track of what is asked meanwhile.
    /// Returns false when the task must stop.
    async fn wait_offline(
        &self,
        state: &mut State,
        commands: &mut mpsc::UnboundedReceiver<ShardCmd>,
        delay: Duration,
    ) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                command = commands.recv() => match command {
                    None => return false,
                    Some(ShardCmd::Subscribe(channel, reply)) => {
                        state.assigned.insert(channel);
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(BrokerError::Unavailable(format!("Redis node {} is unreachable", self.master))));
                        }
                    }
                    Some(ShardCmd::Forget(channel)) => {
                        state.assigned.remove(&channel);
                    }
                    Some(ShardCmd::Probe(channel)) => state.probe = channel,
                }
            }
        }
    }

    /// Subscribes everything on a new connection, then serves it until it is lost
    /// (`Some(why)`) or the task must stop (`None`).
    async fn serve(
        &self,
        state: &mut State,
        mut connection: MultiplexedConnection,
        mut pushes: Pushes,
        commands: &mut mpsc::UnboundedReceiver<ShardCmd>,
    ) -> Option<Lost> {
        state.last_probe = Instant::now();
        if let Err(why) = self.subscribe_unconfirmed(state, &mut connection).await {
            return Some(why);
        }
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return Some("connection closed".into()) };
                    if let Some(why) = self.on_push(state, push) {
                        return Some(why);
                    }
                    self.resync_if_dropped(state, &mut pushes);
                }
                command = commands.recv() => {
                    let command = command?;
                    if let Err(why) = self.on_command(state, &mut connection, command).await {
                        return Some(why);
                    }
                }
                _ = tick.tick() => {
                    // Also here: a drop recorded just after the queue was emptied would
                    // otherwise wait for the next push.
                    self.resync_if_dropped(state, &mut pushes);
                    if state.probe_confirmed && state.last_probe.elapsed() > self.settings.probe_timeout {
                        metrics::counter!("roomcast_broker_probe_failures_total").increment(1);
                        return Some(format!("no probe received for {:?}", state.last_probe.elapsed()));
                    }
                    if let Err(why) = self.subscribe_unconfirmed(state, &mut connection).await {
                        return Some(why);
                    }
                    publish_probe(
                        &self.link,
                        &self.health,
                        &self.breaker,
                        "SPUBLISH",
                        &state.probe,
                    );
                }
            }
        }
    }

    fn on_push(&self, state: &mut State, push: PushInfo) -> Option<Lost> {
        match push.kind {
            PushKind::SMessage => {
                if let Some((channel, payload)) = pushes::message(&push) {
                    if channel == state.probe.as_bytes() {
                        state.last_probe = Instant::now();
                        self.health.probe_received();
                        if state.probe_confirmed {
                            self.check_health(state);
                        }
                    } else {
                        deliver(&self.keys, &self.events, &self.health, channel, payload);
                    }
                }
                None
            }
            PushKind::SUnsubscribe => {
                // Our own unsubscribes are of channels no longer assigned; anything else
                // is the server dropping a channel whose slot it no longer owns.
                if let Some(Value::BulkString(channel)) = push.data.first() {
                    let channel = String::from_utf8_lossy(channel).into_owned();
                    if channel == state.probe {
                        state.probe_confirmed = false;
                    } else if state.assigned.contains(&channel) {
                        state.confirmed.remove(&channel);
                        self.resync(std::iter::once(&channel));
                    } else {
                        return None;
                    }
                    tracing::info!(master = %self.master, %channel, "Redis dropped a sharded subscription (slot moved)");
                    metrics::counter!("roomcast_broker_subscriptions_dropped_total").increment(1);
                    let _ = self.reports.send(Report::TopologyHint);
                    self.check_health(state);
                }
                None
            }
            PushKind::Disconnection => Some("disconnected".into()),
            _ => None,
        }
    }

    async fn on_command(
        &self,
        state: &mut State,
        connection: &mut MultiplexedConnection,
        command: ShardCmd,
    ) -> Result<(), Lost> {
        match command {
            ShardCmd::Subscribe(channel, reply) => {
                state.assigned.insert(channel.clone());
                let result = if state.confirmed.contains(&channel) {
                    Ok(())
                } else {
                    match self.ssubscribe(connection, &channel).await {
                        Ok(true) => {
                            state.confirmed.insert(channel.clone());
                            Ok(())
                        }
                        Ok(false) => {
                            self.check_health(state);
                            Err(BrokerError::Unavailable(format!(
                                "Redis node {} no longer serves {channel}",
                                self.master
                            )))
                        }
                        Err(why) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(BrokerError::Unavailable(why.clone())));
                            }
                            return Err(why);
                        }
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if state.confirmed.contains(&channel) {
                    // A channel moved here from another master: its room may have
                    // missed messages in between.
                    self.resync(std::iter::once(&channel));
                }
                self.check_health(state);
            }
            ShardCmd::Forget(channel) => {
                state.assigned.remove(&channel);
                if state.confirmed.remove(&channel) {
                    self.sunsubscribe(connection, &channel).await?;
                }
                self.check_health(state);
            }
            ShardCmd::Probe(channel) => {
                if channel != state.probe {
                    if state.probe_confirmed {
                        self.sunsubscribe(connection, &state.probe).await?;
                    }
                    state.probe = channel;
                    state.probe_confirmed = false;
                    self.subscribe_unconfirmed(state, connection).await?;
                }
            }
        }
        Ok(())
    }

    /// Subscribes the probe and every assigned channel not confirmed yet; channels that
    /// subscribe again are resynced. A `MOVED` leaves a channel unconfirmed (the
    /// coordinator will move it); a failure of the connection is returned.
    async fn subscribe_unconfirmed(
        &self,
        state: &mut State,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), Lost> {
        if !state.probe_confirmed {
            let probe = state.probe.clone();
            state.probe_confirmed = self.ssubscribe(connection, &probe).await?;
            state.last_probe = Instant::now();
        }
        let missing: Vec<String> = state
            .assigned
            .difference(&state.confirmed)
            .cloned()
            .collect();
        let mut added = Vec::new();
        for channel in missing {
            if self.ssubscribe(connection, &channel).await? {
                state.confirmed.insert(channel.clone());
                added.push(channel);
            }
        }
        // Anything published while these were not subscribed is in the replay buffers.
        self.resync(added.iter());
        self.check_health(state);
        Ok(())
    }

    /// `SSUBSCRIBE` one channel: `Ok(true)` when confirmed, `Ok(false)` when this node
    /// does not own its slot (`MOVED`), `Err` when the connection failed.
    async fn ssubscribe(
        &self,
        connection: &mut MultiplexedConnection,
        channel: &str,
    ) -> Result<bool, Lost> {
        let reply = redis::cmd("SSUBSCRIBE")
            .arg(channel)
            .query_async::<Value>(connection)
            .await;
        match reply {
            Ok(value) if confirms(&value, PushKind::SSubscribe, channel) => Ok(true),
            Ok(value) => Err(format!("unexpected reply to SSUBSCRIBE: {value:?}")),
            Err(err) if err.code() == Some("MOVED") || err.code() == Some("ASK") => {
                let _ = self.reports.send(Report::TopologyHint);
                Ok(false)
            }
            Err(err) => Err(format!("SSUBSCRIBE failed: {err}")),
        }
    }

    async fn sunsubscribe(
        &self,
        connection: &mut MultiplexedConnection,
        channel: &str,
    ) -> Result<(), Lost> {
        let reply = redis::cmd("SUNSUBSCRIBE")
            .arg(channel)
            .query_async::<Value>(connection)
            .await;
        match reply {
            Ok(value) if confirms(&value, PushKind::SUnsubscribe, channel) => Ok(()),
            Ok(value) => Err(format!("unexpected reply to SUNSUBSCRIBE: {value:?}")),
            Err(err) => Err(format!("SUNSUBSCRIBE failed: {err}")),
        }
    }

    /// After pushes were dropped at the queue's bound: every room of this master fills
    /// what it missed from the replay buffer.
    fn resync_if_dropped(&self, state: &State, pushes: &mut Pushes) {
        if pushes.take_dropped() {
            self.resync(state.assigned.iter());
        }
    }

    /// Tells the rooms of these channels to compare with Redis and fill.
    fn resync<'a>(&self, channels: impl Iterator<Item = &'a String>) {
        let rooms: Vec<_> = channels
            .filter_map(|c| self.keys.room_of_channel(c.as_bytes()))
            .collect();
        if !rooms.is_empty() {
            let _ = self
                .events
                .send(BrokerEvent::Resync(ResyncScope::Rooms(rooms)));
        }
    }

    fn check_health(&self, state: &mut State) {
        let unconfirmed = state.assigned.difference(&state.confirmed).count();
        let health = if !state.probe_confirmed {
            Err("probe channel not subscribed".to_owned())
        } else if state.last_probe.elapsed() > self.settings.probe_timeout {
            Err("probe overdue".to_owned())
        } else if unconfirmed > 0 {
            Err(format!("{unconfirmed} channel(s) being moved"))
        } else {
            Ok(())
        };
        self.report_health(state, health);
    }

    fn report_health(&self, state: &mut State, health: Result<(), String>) {
        if state.last_health.as_ref() != Some(&health) {
            state.last_health = Some(health.clone());
            let _ = self.reports.send(Report::Health {
                master: self.master.clone(),
                state: health,
            });
        }
    }
}

/// A shard task's connection as the reconnect loop ([`subscriber::run`]) drives it.
struct Live {
    shard: Shard,
    state: State,
    commands: mpsc::UnboundedReceiver<ShardCmd>,
}

impl Session for Live {
    type Connection = (MultiplexedConnection, Pushes);

    async fn connect(&mut self) -> Result<Self::Connection, String> {
        self.shard.connect().await
    }

    fn unreachable(&mut self, why: String) {
        let health = Err(format!("cannot connect: {why}"));
        self.shard.report_health(&mut self.state, health);
        let _ = self.shard.reports.send(Report::TopologyHint);
    }

    async fn wait_offline(&mut self, delay: Duration) -> bool {
        (self.shard)
            .wait_offline(&mut self.state, &mut self.commands, delay)
            .await
    }

    async fn serve(&mut self, (connection, pushes): Self::Connection) -> Option<Lost> {
        (self.shard)
            .serve(&mut self.state, connection, pushes, &mut self.commands)
            .await
    }

    fn lost(&mut self, why: Lost) {
        let (shard, state) = (&self.shard, &mut self.state);
        tracing::warn!(master = %shard.master, reason = %why, "Redis Cluster Pub/Sub connection lost; reconnecting");
        state.confirmed.clear();
        state.probe_confirmed = false;
        shard.report_health(state, Err(why));
        // Messages may be being lost until the new connection is subscribed.
        shard.resync(state.assigned.iter());
    }
}
