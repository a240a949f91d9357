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
//! One Redis: a dedicated Pub/Sub connection owned by one task ([`run_single`]).
//! A Redis Cluster: one connection per master, see the `cluster` and `shard` modules,
//! which share [`deliver`] and [`publish_probe`] with this one.

use super::health::Health;
use super::keys::Keys;
use super::link::{Link, broker_error};
use super::sentinel::Master;
use super::{RedisSettings, envelope};
use crate::broker::{BrokerError, BrokerEvent, EventSender, ResyncScope};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
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
            metrics::histogram!("roomcast_broker_pubsub_lag_seconds").record(lag);
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

/// `first` and the subscribes queued right behind it, in order; an unsubscribe met on
/// the way is held back for [`next_request`], so the order of changes is kept.
fn more_subscribes(
    first: (String, oneshot::Sender<Result<(), BrokerError>>),
    requests: &mut mpsc::UnboundedReceiver<Request>,
    held: &mut Option<String>,
) -> Vec<(String, oneshot::Sender<Result<(), BrokerError>>)> {
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

/// One Redis: owns the Pub/Sub connection, reconnects it, probes it. `master` holds
/// the server to use (`None` while unknown); when it changes (Sentinel moved the
/// master), the connection moves to the new one.
pub async fn run_single(
    mut master: Master,
    this: Subscriber,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    // An unsubscribe read while batching subscribes, handled before any later request.
    let mut held: Option<String> = None;
    let mut delay = this.settings.reconnect_min;
    loop {
        if let Some(channel) = held.take() {
            wanted.remove(&channel);
        }
        let client = master.borrow_and_update().clone();
        let connected = match client {
            Some(client) => {
                tokio::time::timeout(this.settings.connect_timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| "connect timed out".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|pubsub| (pubsub, client))
            }
            None => Err("no Redis master known yet".to_owned()),
        };
        let (pubsub, client) = match connected {
            Ok(connected) => connected,
            Err(reason) => {
                this.health.set_pubsub(Err(reason));
                // Meanwhile, refuse subscriptions (rooms retry) but remember removals.
                let deadline = tokio::time::sleep(delay);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        Ok(()) = master.changed() => break,
                        request = requests.recv() => match request {
                            None => return,
                            Some(Request::Subscribe(_, reply)) => {
                                let _ = reply.send(Err(BrokerError::Unavailable("Redis Pub/Sub is down".into())));
                            }
                            Some(Request::Unsubscribe(channel)) => { wanted.remove(&channel); }
                        }
                    }
                }
                delay = (delay * 2).min(this.settings.reconnect_max);
                continue;
            }
        };
        delay = this.settings.reconnect_min;
        let (mut sink, mut stream) = pubsub.split();
        let mut channels: Vec<&String> = wanted.iter().collect();
        channels.push(&this.probe_channel);
        if let Err(err) =
            tokio::time::timeout(this.settings.command_timeout, sink.subscribe(channels))
                .await
                .map_err(|_| "timeout".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        {
            this.health
                .set_pubsub(Err(format!("resubscribe failed: {err}")));
            continue;
        }
        metrics::counter!("roomcast_broker_pubsub_connects_total").increment(1);
        this.health.set_pubsub(Ok(()));
        // Anything published while we were not subscribed is in the replay buffers.
        let _ = this.events.send(BrokerEvent::Resync(ResyncScope::All));

        let mut probe = tokio::time::interval(this.settings.probe_interval);
        let mut last_probe = Instant::now();
        let why = loop {
            tokio::select! {
                Ok(()) = master.changed() => break "the Redis master moved".to_owned(),
                message = stream.next() => {
                    let Some(message) = message else { break "connection closed".to_owned() };
                    let channel = message.get_channel_name().as_bytes();
                    if channel == this.probe_channel.as_bytes() {
                        last_probe = Instant::now();
                        this.health.probe_received();
                    } else {
                        deliver(&this.keys, &this.events, &this.health, channel, message.get_payload_bytes());
                    }
                }
                request = next_request(&mut held, &mut requests) => match request {
                    None => return,
                    Some(Request::Subscribe(channel, reply)) => {
                        // Rooms starting together (a reconnect storm) share one round trip.
                        let batch = more_subscribes((channel, reply), &mut requests, &mut held);
                        let channels: Vec<&String> = batch.iter().map(|(channel, _)| channel).collect();
                        let result = tokio::time::timeout(this.settings.command_timeout, sink.subscribe(channels)).await;
                        let outcome = match result {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(err)) => Err((broker_error(err), "subscribe failed")),
                            Err(_) => Err((BrokerError::Timeout("subscribe".into()), "subscribe timed out")),
                        };
                        for (channel, reply) in batch {
                            match &outcome {
                                Ok(()) => {
                                    wanted.insert(channel);
                                    let _ = reply.send(Ok(()));
                                }
                                Err((err, _)) => {
                                    let _ = reply.send(Err(err.clone()));
                                }
                            }
                        }
                        if let Err((_, why)) = outcome {
                            break why.to_owned();
                        }
                    }
                    Some(Request::Unsubscribe(channel)) => {
                        wanted.remove(&channel);
                        if !matches!(tokio::time::timeout(this.settings.command_timeout, sink.unsubscribe(&channel)).await, Ok(Ok(()))) {
                            break "unsubscribe failed".to_owned();
                        }
                    }
                },
                _ = probe.tick() => {
                    if last_probe.elapsed() > this.settings.probe_timeout {
                        metrics::counter!("roomcast_broker_probe_failures_total").increment(1);
                        break format!("no probe received for {:?}", last_probe.elapsed());
                    }
                    publish_probe(
                        &this.link,
                        &this.health,
                        &this.breaker,
                        "PUBLISH",
                        &this.probe_channel,
                    );
                }
            }
        };
        let address = client.get_connection_info().addr();
        tracing::warn!(%address, reason = %why, "Redis Pub/Sub connection lost; reconnecting");
        metrics::counter!("roomcast_broker_reconnects_total").increment(1);
        this.health.set_pubsub(Err(why));
    }
}
