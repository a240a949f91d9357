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
//! A Redis Cluster: sharded Pub/Sub on the cluster connection, which resubscribes by
//! itself after reconnects and reports disconnections as push messages ([`run_cluster`]).

use super::health::Health;
use super::keys::Keys;
use super::link::{Connection, Link, broker_error};
use super::{RedisSettings, envelope};
use crate::broker::{BrokerError, BrokerEvent, EventSender};
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
}

impl Subscriber {
    fn deliver(&self, channel: &[u8], payload: &[u8]) {
        let Some(room) = self.keys.room_of_channel(channel) else {
            return;
        };
        match envelope::decode(room, payload) {
            Ok(publication) => {
                let _ = self
                    .events
                    .send(BrokerEvent::Publication(Arc::new(publication)));
            }
            Err(err) => tracing::warn!(error = %err, "dropping a malformed publication"),
        }
    }

    /// Publishes one probe in the background; records whether Redis took it.
    fn send_probe(&self, command: &'static str) {
        let link = self.link.clone();
        let channel = self.probe_channel.clone();
        let health = self.health.clone();
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
            health.set_commands(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        });
    }
}

/// One Redis: owns the Pub/Sub connection, reconnects it, probes it.
pub async fn run_single(
    client: redis::Client,
    this: Subscriber,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut delay = this.settings.reconnect_min;
    loop {
        let connected =
            tokio::time::timeout(this.settings.connect_timeout, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failure => {
                let reason = match failure {
                    Ok(Err(err)) => err.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                this.health.set_pubsub(Err(reason));
                // Meanwhile, refuse subscriptions (rooms retry) but remember removals.
                let deadline = tokio::time::sleep(delay);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
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
        let _ = this.events.send(BrokerEvent::Resync);

        let mut probe = tokio::time::interval(this.settings.probe_interval);
        let mut last_probe = Instant::now();
        let why = loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break "connection closed".to_owned() };
                    let channel = message.get_channel_name().as_bytes();
                    if channel == this.probe_channel.as_bytes() {
                        last_probe = Instant::now();
                    } else {
                        this.deliver(channel, message.get_payload_bytes());
                    }
                }
                request = requests.recv() => match request {
                    None => return,
                    Some(Request::Subscribe(channel, reply)) => {
                        let result = tokio::time::timeout(this.settings.command_timeout, sink.subscribe(&channel)).await;
                        match result {
                            Ok(Ok(())) => {
                                wanted.insert(channel);
                                let _ = reply.send(Ok(()));
                            }
                            Ok(Err(err)) => {
                                let _ = reply.send(Err(broker_error(err)));
                                break "subscribe failed".to_owned();
                            }
                            Err(_) => {
                                let _ = reply.send(Err(BrokerError::Timeout("subscribe".into())));
                                break "subscribe timed out".to_owned();
                            }
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
                    this.send_probe("PUBLISH");
                }
            }
        };
        tracing::warn!(reason = %why, "Redis Pub/Sub connection lost; reconnecting");
        metrics::counter!("roomcast_broker_reconnects_total").increment(1);
        this.health.set_pubsub(Err(why));
    }
}

/// A Redis Cluster: sharded subscriptions go through the cluster connection (which
/// resubscribes after reconnects); this task reads its push messages, probes, and asks
/// rooms to resync after any disconnection.
pub async fn run_cluster(
    this: Subscriber,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut probe = tokio::time::interval(this.settings.probe_interval);
    let mut last_probe = Instant::now();
    let mut probe_subscribed = false;
    let mut resync_at: Option<Instant> = None;
    loop {
        let resync_due = async {
            match resync_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        if let [redis::Value::BulkString(channel), redis::Value::BulkString(payload), ..] = push.data.as_slice() {
                            if channel.as_slice() == this.probe_channel.as_bytes() {
                                last_probe = Instant::now();
                                if !this.health.pubsub_ready() {
                                    // Back after an outage: rooms compare and fill.
                                    resync_at = Some(Instant::now());
                                }
                                this.health.set_pubsub(Ok(()));
                            } else {
                                this.deliver(channel, payload);
                            }
                        }
                    }
                    redis::PushKind::Disconnection => {
                        metrics::counter!("roomcast_broker_reconnects_total").increment(1);
                        // The cluster connection resubscribes after reconnecting; resync
                        // once that had a moment, and again when probes flow.
                        resync_at = Some(Instant::now() + this.settings.probe_interval);
                    }
                    _ => {}
                }
            }
            request = requests.recv() => match request {
                None => return,
                Some(Request::Subscribe(channel, reply)) => {
                    let result = match this.link.get() {
                        Ok(Connection::Cluster(mut connection)) => connection.ssubscribe(&channel).await.map_err(broker_error),
                        Ok(Connection::Single(_)) => Err(BrokerError::Internal("cluster subscriber on a single-node link".into())),
                        Err(err) => Err(err),
                    };
                    let _ = reply.send(result);
                }
                Some(Request::Unsubscribe(channel)) => {
                    if let Ok(Connection::Cluster(mut connection)) = this.link.get() {
                        let _ = connection.sunsubscribe(&channel).await;
                    }
                }
            },
            _ = resync_due => {
                resync_at = None;
                let _ = this.events.send(BrokerEvent::Resync);
            }
            _ = probe.tick() => {
                if !probe_subscribed {
                    if let Ok(Connection::Cluster(mut connection)) = this.link.get()
                        && connection.ssubscribe(&this.probe_channel).await.is_ok()
                    {
                        probe_subscribed = true;
                        last_probe = Instant::now();
                    }
                    continue;
                }
                if last_probe.elapsed() > this.settings.probe_timeout {
                    if this.health.pubsub_ready() {
                        metrics::counter!("roomcast_broker_probe_failures_total").increment(1);
                        tracing::warn!("no Pub/Sub probe received from the cluster; not ready");
                        resync_at = Some(Instant::now() + this.settings.probe_interval);
                    }
                    this.health.set_pubsub(Err(format!("no probe received for {:?}", last_probe.elapsed())));
                }
                this.send_probe("SPUBLISH");
            }
        }
    }
}
