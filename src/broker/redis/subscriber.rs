//! Receiving room publications from Redis Pub/Sub, and knowing when that stopped.
//!
//! Pub/Sub is at-most-once and its connection can die without notice (an established
//! socket on which nothing arrives). So:
//! - this instance subscribes only to the channels of rooms that have local subscribers;
//! - every `probe_interval` it publishes on its own probe channel and expects to receive
//!   it back within `probe_timeout`; when a probe is missing, the Pub/Sub connection is
//!   declared dead (metric `roomcast_broker_probe_failures_total`), the instance reports
//!   not ready, and the connection is replaced;
//! - after every (re)connection, every channel is subscribed again and a
//!   [`BrokerEvent::Resync`] tells every room to compare its position with Redis and
//!   fill what it missed.
//!
//! Both kinds of Pub/Sub connection are kept alive by one loop, [`run`]: connect, serve
//! until the connection is lost, reconnect with backoff, meanwhile answer what rooms
//! ask. What differs is a [`Session`]: one Redis (or the master the sentinels name,
//! followed when it moves) is [`Single`], here; a Redis Cluster has one session per
//! master (see the `cluster` and `shard` modules, which share [`deliver`] and
//! [`publish_probe`] with this one).

use super::health::Health;
use super::keys::Keys;
use super::link::{Link, broker_error};
use super::pushes::{self, Pushes};
use super::sentinel::Master;
use super::{RedisSettings, envelope};
use crate::broker::{BrokerError, BrokerEvent, EventSender, ResyncScope};
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A subscription change requested by a room.
pub enum Request {
    /// Subscribe to a channel; answered once Redis confirmed it.
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    /// Unsubscribe from a channel.
    Unsubscribe(String),
}

/// Everything a subscriber task needs.
pub struct Subscriber {
    /// Channel and key names.
    pub keys: Keys,
    /// This instance's probe channel.
    pub probe_channel: String,
    /// Where publications and resyncs go.
    pub events: EventSender,
    /// Shared health flags.
    pub health: Arc<Health>,
    /// Timings.
    pub settings: RedisSettings,
    /// The command connection (to publish probes).
    pub link: Link,
    /// Closed again by a probe that gets through.
    pub breaker: Arc<super::breaker::Breaker>,
}

/// Decodes a publication received on `channel` and hands it to the rooms.
pub fn deliver(keys: &Keys, events: &EventSender, health: &Health, channel: &[u8], payload: &[u8]) {
    let Some(room) = keys.room_of_channel(channel) else {
        return;
    };
    match envelope::decode(room, payload) {
        Ok(publication) => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let lag = now_ms.saturating_sub(publication.time_ms) as f64 / 1000.0;
            crate::telemetry::metrics::per_publication()
                .pubsub_lag
                .record(lag);
            health.lag(lag);
            let _ = events.send(BrokerEvent::Publication(Arc::new(publication)));
        }
        Err(err) => tracing::warn!(error = %err, "dropping a malformed publication"),
    }
}

/// Publishes one probe on `channel` in the background (`PUBLISH` or `SPUBLISH`, through
/// the command connection); records whether Redis took it.
pub fn publish_probe(
    link: &Link,
    health: &Arc<Health>,
    breaker: &Arc<super::breaker::Breaker>,
    command: &'static str,
    channel: &str,
) {
    let link = link.clone();
    let channel = channel.to_owned();
    let health = health.clone();
    let breaker = breaker.clone();
    tokio::spawn(async move {
        let result = match link.get() {
            Ok(mut connection) => redis::cmd(command)
                .arg(&channel)
                .arg("probe")
                .query_async::<i64>(&mut connection)
                .await
                .map_err(broker_error),
            Err(err) => Err(err),
        };
        if result.is_ok() {
            // The probe's channel lives on the node it probes: that node answers again.
            breaker.answered(&channel);
        }
        health.set_commands(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    });
}

/// One Pub/Sub connection as [`run`] keeps it alive: how to open it, what to do
/// without it, how to serve it, and what its loss means.
pub trait Session {
    /// An open connection, not subscribed yet.
    type Connection;

    /// Opens a connection.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Connection, String>> + Send;

    /// No connection could be opened (`why`): record it before waiting.
    fn unreachable(&mut self, why: String);

    /// Waits `delay` without a connection, answering what is asked meanwhile. Returns
    /// false when the task must stop.
    fn wait_offline(&mut self, delay: Duration) -> impl Future<Output = bool> + Send;

    /// Subscribes everything on a new connection, then serves it until it is lost
    /// (`Some(why)`) or the task must stop (`None`).
    fn serve(
        &mut self,
        connection: Self::Connection,
    ) -> impl Future<Output = Option<String>> + Send;

    /// The connection served was lost (`why`): record it, and tell the rooms that may
    /// miss messages until the next one is subscribed.
    fn lost(&mut self, why: String);
}

/// Keeps `session` connected until it says to stop: reconnects at once after a lost
/// connection, and with a delay doubling from `reconnect_min` to `reconnect_max` while
/// none can be opened.
pub async fn run(mut session: impl Session, reconnect_min: Duration, reconnect_max: Duration) {
    let mut delay = reconnect_min;
    loop {
        let connection = match session.connect().await {
            Ok(connection) => connection,
            Err(why) => {
                session.unreachable(why);
                if !session.wait_offline(delay).await {
                    return;
                }
                delay = (delay * 2).min(reconnect_max);
                continue;
            }
        };
        delay = reconnect_min;
        metrics::counter!("roomcast_broker_pubsub_connects_total").increment(1);
        let Some(why) = session.serve(connection).await else {
            return;
        };
        metrics::counter!("roomcast_broker_reconnects_total").increment(1);
        session.lost(why);
    }
}

/// One Redis: one Pub/Sub connection for every room channel and this instance's probe,
/// a RESP3 connection whose messages wait in a bounded queue (see `pushes.rs`).
/// `master` holds the server to use (`None` while unknown); when it changes (Sentinel
/// moved the master), the connection moves to the new one.
pub struct Single {
    this: Subscriber,
    master: Master,
    requests: mpsc::UnboundedReceiver<Request>,
    /// Channels rooms asked for and have not given up.
    wanted: HashSet<String>,
    /// The server of the current connection (named when it is lost).
    client: Option<redis::Client>,
    /// An unsubscribe read while batching subscribes, handled before any later request.
    held: Option<String>,
}

/// The next subscription change: the one held back by [`more_subscribes`] first.
async fn next_request(
    held: &mut Option<String>,
    requests: &mut mpsc::UnboundedReceiver<Request>,
) -> Option<Request> {
    match held.take() {
        Some(channel) => Some(Request::Unsubscribe(channel)),
        None => requests.recv().await,
    }
}

/// A subscribe's channel and whom to answer.
type SubscribeRequest = (String, oneshot::Sender<Result<(), BrokerError>>);

/// `first` and the subscribes queued right behind it, in order; an unsubscribe met on
/// the way is held back for [`next_request`], so the order of changes is kept.
fn more_subscribes(
    first: SubscribeRequest,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    held: &mut Option<String>,
) -> Vec<SubscribeRequest> {
    let mut batch = vec![first];
    while let Ok(request) = requests.try_recv() {
        match request {
            Request::Subscribe(channel, reply) => batch.push((channel, reply)),
            Request::Unsubscribe(channel) => {
                *held = Some(channel);
                break;
            }
        }
    }
    batch
}

impl Single {
    /// A session that serves `requests` until their sender is dropped.
    pub fn new(
        master: Master,
        this: Subscriber,
        requests: mpsc::UnboundedReceiver<Request>,
    ) -> Single {
        Single {
            this,
            master,
            requests,
            wanted: HashSet::new(),
            client: None,
            held: None,
        }
    }

    /// Answers a subscription change on the live connection; `Err` when the
    /// connection failed it, `Ok(false)` when the task must stop.
    async fn on_request(
        &mut self,
        request: Option<Request>,
        connection: &mut MultiplexedConnection,
    ) -> Result<bool, String> {
        let timeout = self.this.settings.command_timeout;
        match request {
            None => return Ok(false),
            Some(Request::Subscribe(channel, reply)) => {
                // Rooms starting together (a reconnect storm) share one round trip.
                let batch = more_subscribes((channel, reply), &mut self.requests, &mut self.held);
                let channels: Vec<&String> = batch.iter().map(|(channel, _)| channel).collect();
                let subscribing = connection.subscribe(channels);
                let outcome = match tokio::time::timeout(timeout, subscribing).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err((broker_error(err), "subscribe failed")),
                    Err(_) => Err((
                        BrokerError::Timeout("subscribe".into()),
                        "subscribe timed out",
                    )),
                };
                for (channel, reply) in batch {
                    match &outcome {
                        Ok(()) => {
                            self.wanted.insert(channel);
                            let _ = reply.send(Ok(()));
                        }
                        Err((err, _)) => {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
                if let Err((_, why)) = outcome {
                    return Err(why.to_owned());
                }
            }
            Some(Request::Unsubscribe(channel)) => {
                self.wanted.remove(&channel);
                if !matches!(
                    tokio::time::timeout(timeout, connection.unsubscribe(&channel)).await,
                    Ok(Ok(()))
                ) {
                    return Err("unsubscribe failed".to_owned());
                }
            }
        }
        Ok(true)
    }

    /// Subscribes every wanted channel and the probe on a new connection.
    async fn subscribe_all(&self, connection: &mut MultiplexedConnection) -> Result<(), String> {
        let mut channels: Vec<&String> = self.wanted.iter().collect();
        channels.push(&self.this.probe_channel);
        let subscribing = connection.subscribe(channels);
        tokio::time::timeout(self.this.settings.command_timeout, subscribing)
            .await
            .map_err(|_| "timeout".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|err| format!("resubscribe failed: {err}"))
    }

    /// A push on the connection: the probe coming back, a publication, or the
    /// connection's end (`Some(why)`).
    fn on_push(&self, push: PushInfo, last_probe: &mut Instant) -> Option<String> {
        if push.kind == PushKind::Disconnection {
            return Some("disconnected".to_owned());
        }
        let (channel, payload) = pushes::message(&push)?;
        let this = &self.this;
        if channel == this.probe_channel.as_bytes() {
            *last_probe = Instant::now();
            this.health.probe_received();
        } else {
            deliver(&this.keys, &this.events, &this.health, channel, payload);
        }
        None
    }

    /// After pushes were dropped at the queue's bound: every room fills what it missed
    /// from the replay buffers.
    fn resync_if_dropped(&self, pushes: &mut Pushes) {
        if pushes.take_dropped() {
            let _ = self.this.events.send(BrokerEvent::Resync(ResyncScope::All));
        }
    }
}

impl Session for Single {
    type Connection = (MultiplexedConnection, Pushes);

    async fn connect(&mut self) -> Result<Self::Connection, String> {
        let Some(client) = self.master.borrow_and_update().clone() else {
            return Err("no Redis master known yet".to_owned());
        };
        let connection = pushes::connect(&client, &self.this.settings, "pubsub_pushes").await?;
        self.client = Some(client);
        Ok(connection)
    }

    fn unreachable(&mut self, why: String) {
        self.this.health.set_pubsub(Err(why));
    }

    /// Meanwhile, refuses subscriptions (rooms retry) but remembers removals; a new
    /// master ends the wait.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                Ok(()) = self.master.changed() => return true,
                request = self.requests.recv() => match request {
                    None => return false,
                    Some(Request::Subscribe(_, reply)) => {
                        let _ = reply.send(Err(BrokerError::Unavailable("Redis Pub/Sub is down".into())));
                    }
                    Some(Request::Unsubscribe(channel)) => { self.wanted.remove(&channel); }
                }
            }
        }
    }

    async fn serve(&mut self, (mut connection, mut pushes): Self::Connection) -> Option<String> {
        if let Err(why) = self.subscribe_all(&mut connection).await {
            return Some(why);
        }
        self.this.health.set_pubsub(Ok(()));
        // Anything published while we were not subscribed is in the replay buffers.
        let _ = self.this.events.send(BrokerEvent::Resync(ResyncScope::All));
        let mut probe = tokio::time::interval(self.this.settings.probe_interval);
        let mut last_probe = Instant::now();
        loop {
            tokio::select! {
                Ok(()) = self.master.changed() => return Some("the Redis master moved".to_owned()),
                push = pushes.recv() => {
                    let Some(push) = push else { return Some("connection closed".to_owned()) };
                    if let Some(why) = self.on_push(push, &mut last_probe) {
                        return Some(why);
                    }
                    self.resync_if_dropped(&mut pushes);
                }
                request = next_request(&mut self.held, &mut self.requests) => match self.on_request(request, &mut connection).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(why) => return Some(why),
                },
                _ = probe.tick() => {
                    // Also here: a drop recorded just after the queue was emptied would
                    // otherwise wait for the next push.
                    self.resync_if_dropped(&mut pushes);
                    if last_probe.elapsed() > self.this.settings.probe_timeout {
                        metrics::counter!("roomcast_broker_probe_failures_total").increment(1);
                        return Some(format!("no probe received for {:?}", last_probe.elapsed()));
                    }
                    let this = &self.this;
                    publish_probe(&this.link, &this.health, &this.breaker, "PUBLISH", &this.probe_channel);
                }
            }
        }
    }

    fn lost(&mut self, why: String) {
        if let Some(channel) = self.held.take() {
            self.wanted.remove(&channel);
        }
        let address = (self.client.as_ref())
            .map(|client| client.get_connection_info().addr().to_string())
            .unwrap_or_default();
        tracing::warn!(%address, reason = %why, "Redis Pub/Sub connection lost; reconnecting");
        self.this.health.set_pubsub(Err(why));
    }
}
