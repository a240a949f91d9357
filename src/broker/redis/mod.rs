//! The Redis broker: rooms shared by every instance pointed at one Redis (one Redis
//! Cluster, or one Redis whose master the sentinels name: see `sentinel.rs`).
//!
//! - Sequencing, replay buffer, idempotency and fan-out happen in one Lua function per
//!   publish (`publish.lua`, see `function.rs`); reads of position and buffer in a
//!   script (`history.lua`). Each costs one round trip, and publishes of all rooms share
//!   one multiplexed connection, so many are in flight at once.
//! - The replay buffer is a stream per room, bounded by count (`MAXLEN`) and age, and
//!   expires with the room, so idle rooms cost nothing.
//! - Each room has its own channel (`{prefix}:{room}:ch`); an instance subscribes only
//!   to rooms with local subscribers, so Redis does no per-message work for other rooms.
//!   In a cluster, channels are sharded (`SSUBSCRIBE`/`SPUBLISH`) and all of a room's
//!   keys and its channel share the room's hash slot.
//! - A room's epoch is bound to the Redis process holding it, so a Redis that restarts —
//!   empty, from an older snapshot, or as a promoted replica — gives rooms new epochs
//!   instead of reusing sequence numbers (see `publish.lua`).

mod batch;
mod breaker;
mod cluster;
mod commands;
mod envelope;
mod function;
mod health;
mod keys;
mod link;
mod members;
mod presence;
mod pushes;
mod sentinel;
mod shard;
mod slots;
mod subscriber;

use super::{
    Broker, BrokerError, BrokerStatus, EventSender, HistoryPage, HistoryQuery, HistorySettings,
    PublishAck, PublishRequest,
};
use crate::protocol::RoomName;
use crate::stream::{Epoch, Position};
use async_trait::async_trait;
use batch::Batcher;
use breaker::Breaker;
use commands::Commands;
use envelope::Body;
use function::{PUBLISH, PublishCall, parse_ack};
use health::Health;
use keys::Keys;
use link::{Link, Target};
use redis::{FromRedisValue, Script, Value};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use subscriber::{Request, Subscriber};
use tokio::sync::{mpsc, oneshot};

static HISTORY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("history.lua")));
static RESET_EPOCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("reset_epoch.lua")));

/// Connection timings of the Redis broker.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer: a publish fails (never acks) after it.
    pub command_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How often the Pub/Sub connection is probed.
    pub probe_interval: Duration,
    /// A probe not received within this is a dead Pub/Sub connection.
    pub probe_timeout: Duration,
    /// PEM certificates trusted for `rediss://` instead of the system's trust store.
    pub tls_ca: Option<Vec<u8>>,
    /// Publication bodies of at least this many bytes travel compressed (0: never).
    pub compress_above: usize,
}

impl RedisSettings {
    /// Settings from the `[redis]` configuration section.
    pub fn from_config(config: &crate::config::RedisConfig) -> Self {
        RedisSettings {
            key_prefix: config.key_prefix.clone(),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(config.reconnect_max_ms),
            probe_interval: Duration::from_millis(config.probe_interval_ms),
            probe_timeout: Duration::from_millis(config.probe_timeout_ms),
            // Read (and checked) by the configuration check already; a file that went
            // away since is reported by the first TLS handshake.
            tls_ca: (!config.tls_ca_file.is_empty())
                .then(|| std::fs::read(&config.tls_ca_file).ok())
                .flatten(),
            compress_above: config.compress_above_bytes,
        }
    }
}

/// How the broker reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Cluster,
    /// One Redis whose master the sentinels name.
    Sentinel,
}

/// [`Broker`] over Redis.
pub struct RedisBroker {
    mode: Mode,
    commands: Commands,
    keys: Keys,
    history: HistorySettings,
    requests: mpsc::UnboundedSender<Request>,
    /// How publishes are called.
    publish: PublishCall,
    /// Collects publishes that wait together into one call (not in a cluster).
    batcher: Option<Batcher>,
}

/// What the subscriber task of either kind is built from.
struct Parts<'a> {
    node_id: &'a str,
    keys: Keys,
    events: EventSender,
    health: Arc<Health>,
    settings: RedisSettings,
    breaker: Arc<Breaker>,
    requests: mpsc::UnboundedReceiver<Request>,
}

impl Parts<'_> {
    /// A Redis Cluster from its seed nodes (`host:port,…`): the command connection,
    /// and the coordinator of one Pub/Sub task per master.
    fn spawn_cluster(self, scheme: &'static str, nodes: &str) -> Link {
        let nodes: Vec<&str> = nodes.split(',').map(str::trim).collect();
        // Credentials of the seed nodes (`user:password@host:port`) serve every
        // master the slot map names.
        let userinfo = nodes[0]
            .rsplit_once('@')
            .map(|(userinfo, _)| format!("{userinfo}@"))
            .unwrap_or_default();
        let seeds = nodes.iter().map(|n| format!("{scheme}://{n}")).collect();
        let link = Link::connect(Target::Cluster(seeds), self.settings.clone());
        let subscriber = cluster::ClusterSubscriber {
            keys: self.keys,
            node_id: self.node_id.to_owned(),
            userinfo,
            scheme,
            events: self.events,
            health: self.health,
            settings: self.settings,
            link: link.clone(),
            breaker: self.breaker,
        };
        tokio::spawn(cluster::run_cluster(subscriber, self.requests));
        link
    }

    /// One Redis (`redis://…`), or the one the sentinels name (`redis-sentinel://…`):
    /// the command connection and the Pub/Sub task, and for Sentinel the watcher that
    /// follows the master (with what wakes it).
    fn spawn_single(
        self,
        url: &str,
    ) -> Result<(Mode, Link, Option<Arc<tokio::sync::Notify>>), BrokerError> {
        fn invalid(e: impl std::fmt::Display) -> BrokerError {
            BrokerError::Internal(format!("invalid Redis URL: {e}"))
        }
        let (mode, link, master, master_lost) =
            match sentinel::parse(url).transpose().map_err(invalid)? {
                // The sentinels name the master, and move it.
                Some(sentinel) => {
                    let link = Link::default();
                    let (watcher, master) = sentinel::Watcher::new(
                        sentinel,
                        self.settings.clone(),
                        link.clone(),
                        self.breaker.clone(),
                        self.health.clone(),
                    )
                    .map_err(invalid)?;
                    let hint = watcher.hint();
                    tokio::spawn(watcher.run());
                    (Mode::Sentinel, link, master, Some(hint))
                }
                // One Redis: its client never changes.
                None => {
                    let client = client(url, &self.settings).map_err(invalid)?;
                    let target = Target::Single(Box::new(client.clone()));
                    let link = Link::connect(target, self.settings.clone());
                    let (_, master) = tokio::sync::watch::channel(Some(client));
                    (Mode::Single, link, master, None)
                }
            };
        let (min, max) = (self.settings.reconnect_min, self.settings.reconnect_max);
        let subscriber = Subscriber {
            probe_channel: self.keys.probe_channel(self.node_id),
            keys: self.keys,
            events: self.events,
            health: self.health,
            settings: self.settings,
            link: link.clone(),
            breaker: self.breaker,
        };
        let session = subscriber::Single::new(master, subscriber, self.requests);
        tokio::spawn(subscriber::run(session, min, max));
        Ok((mode, link, master_lost))
    }
}

impl RedisBroker {
    /// Starts connecting to `url` in the background (so it must be called inside a tokio
    /// runtime). `redis://…` is one Redis; `redis-cluster://host:port,host:port` the
    /// seed nodes of a Redis Cluster; `redis-sentinel://host:port,…/name` the sentinels
    /// that name the master. Fails only when the URL is invalid.
    pub fn start(
        url: &str,
        node_id: &str,
        history: HistorySettings,
        settings: RedisSettings,
        events: EventSender,
    ) -> Result<RedisBroker, BrokerError> {
        let keys = Keys::new(&settings.key_prefix);
        let health = Arc::new(Health::default());
        // Open circuits are retried after one probe interval.
        let breaker = Arc::new(Breaker::new(settings.probe_interval));
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let parts = Parts {
            node_id,
            keys: keys.clone(),
            events,
            health: health.clone(),
            settings: settings.clone(),
            breaker: breaker.clone(),
            requests: requests_rx,
        };
        let cluster = url
            .strip_prefix("redis-cluster://")
            .map(|nodes| ("redis", nodes))
            .or_else(|| url.strip_prefix("rediss-cluster://").map(|n| ("rediss", n)));
        let (mode, link, master_lost) = match cluster {
            Some((scheme, nodes)) => (Mode::Cluster, parts.spawn_cluster(scheme, nodes), None),
            None => parts.spawn_single(url)?,
        };
        let commands = Commands {
            link,
            health,
            breaker,
            master_lost,
            timeout: (mode != Mode::Cluster).then_some(settings.command_timeout),
        };
        let publish = PublishCall::new(
            keys.clone(),
            &history,
            mode == Mode::Cluster,
            settings.compress_above,
        );
        let batcher =
            (mode != Mode::Cluster).then(|| Batcher::start(commands.clone(), publish.clone()));
        Ok(RedisBroker {
            mode,
            commands,
            keys,
            history,
            requests,
            publish,
            batcher,
        })
    }

    /// Runs a script on the node holding `room` (see [`RedisBroker::call`]).
    async fn run(
        &self,
        room: &RoomName,
        invocation: redis::ScriptInvocation<'_>,
        op: &'static str,
    ) -> Result<Value, BrokerError> {
        self.call(room, op, async |connection| {
            invocation.invoke_async::<Value>(connection).await
        })
        .await
    }

    /// Runs `command` on the node holding `room` (see [`Commands::call`]).
    async fn call(
        &self,
        room: &RoomName,
        op: &'static str,
        command: impl AsyncFnOnce(&mut link::Connection) -> redis::RedisResult<Value>,
    ) -> Result<Value, BrokerError> {
        metrics::counter!("roomcast_broker_commands_total", "op" => op).increment(1);
        self.commands
            .call(&self.keys.meta(room), op, 1, command)
            .await
    }

    async fn subscription(&self, request: Request) -> Result<(), BrokerError> {
        self.requests
            .send(request)
            .map_err(|_| BrokerError::Internal("subscriber task is gone".into()))
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Single => "redis",
            Mode::Cluster => "redis-cluster",
            Mode::Sentinel => "redis-sentinel",
        }
    }

    async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        if let Some(batcher) = &self.batcher {
            return batcher.publish(room, request).await;
        }
        let call = self.publish.command(room, request);
        metrics::counter!("roomcast_broker_publish_calls_total").increment(1);
        let reply = self
            .call(room, "publish", async |connection| {
                PUBLISH.call(connection, &call).await
            })
            .await?;
        parse_ack(reply)
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let (mode, after, limit) = match query {
            HistoryQuery::Latest { limit } => ("latest", 0, limit),
            HistoryQuery::After { seq, limit } => ("after", seq, limit),
        };
        let mut invocation = HISTORY.prepare_invoke();
        invocation
            .key(self.keys.meta(room))
            .key(self.keys.log(room))
            .arg(Epoch::generate().as_str())
            .arg(mode)
            .arg(after)
            .arg(limit)
            .arg(self.history.ttl_ms)
            .arg(self.history.meta_ttl_ms)
            .arg(self.history.size);
        let reply = self.run(room, invocation, "history").await?;
        parse_history(room, reply)
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.subscription(Request::Subscribe(self.keys.channel(room), reply))
            .await?;
        answer
            .await
            .map_err(|_| BrokerError::Internal("subscriber task is gone".into()))?
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.subscription(Request::Unsubscribe(self.keys.channel(room)))
            .await
    }

    async fn reset_epoch(&self, room: &RoomName, stale: &Epoch) -> Result<Position, BrokerError> {
        let mut invocation = RESET_EPOCH.prepare_invoke();
        invocation
            .key(self.keys.meta(room))
            .key(self.keys.log(room))
            .arg(stale.as_str())
            .arg(Epoch::generate().as_str())
            .arg(self.history.meta_ttl_ms);
        let reply = self.run(room, invocation, "reset_epoch").await?;
        let (epoch, seq): (String, u64) = FromRedisValue::from_redis_value(reply)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        Ok(Position::new(Epoch::new(epoch), seq))
    }

    fn status(&self) -> BrokerStatus {
        self.commands.health.status()
    }

    fn pubsub_health(&self) -> Option<super::PubSubHealth> {
        Some(self.commands.health.pubsub())
    }

    fn membership_store(&self) -> Arc<dyn crate::broker::membership::MembershipStore> {
        Arc::new(members::RedisMembership::new(
            self.commands.link.clone(),
            self.keys.clone(),
        ))
    }

    fn presence_store(&self) -> Arc<dyn crate::broker::presence::PresenceStore> {
        Arc::new(presence::RedisPresence::new(
            self.commands.link.clone(),
            self.keys.clone(),
        ))
    }
}

/// The command that publishes `request` to `room` exactly as the broker sends a publish
/// that goes alone (an `FCALL` of the publish library; on one Redis, not a cluster), for
/// drivers that measure what Redis alone can sequence. Load the library first with
/// [`publish_library_load`]. `compress_above` is `redis.compress_above_bytes`.
pub fn publish_command(
    key_prefix: &str,
    history: &HistorySettings,
    compress_above: usize,
    room: &RoomName,
    request: PublishRequest,
) -> redis::Cmd {
    driver_call(key_prefix, history, compress_above).command(room, request)
}

/// The command that publishes several requests, each to its room, exactly as the broker
/// sends publishes that waited together (at most [`PUBLISH_BATCH_MAX`]); otherwise as
/// [`publish_command`].
pub fn publish_batch_command(
    key_prefix: &str,
    history: &HistorySettings,
    compress_above: usize,
    publications: impl IntoIterator<Item = (RoomName, PublishRequest)>,
) -> redis::Cmd {
    driver_call(key_prefix, history, compress_above).batch_command(publications)
}

/// Most publications the broker sends in one call.
pub const PUBLISH_BATCH_MAX: usize = batch::MAX_BATCH;

fn driver_call(key_prefix: &str, history: &HistorySettings, compress_above: usize) -> PublishCall {
    PublishCall::new(Keys::new(key_prefix), history, false, compress_above)
}

/// The command that loads the publish library (`FUNCTION LOAD REPLACE`).
pub fn publish_library_load() -> redis::Cmd {
    PUBLISH.load()
}

/// Turns the history script's reply into a page.
fn parse_history(room: &RoomName, reply: Value) -> Result<HistoryPage, BrokerError> {
    let bad = |what: &str| BrokerError::Internal(format!("unexpected history reply: {what}"));
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    let mut items = items.into_iter();
    let mut next = |what: &str| items.next().ok_or_else(|| bad(what));
    let epoch: String =
        FromRedisValue::from_redis_value(next("epoch")?).map_err(|_| bad("epoch"))?;
    let top: u64 = FromRedisValue::from_redis_value(next("top")?).map_err(|_| bad("top"))?;
    let first: i64 = FromRedisValue::from_redis_value(next("first")?).map_err(|_| bad("first"))?;
    let epoch = Epoch::new(epoch);
    let mut publications = Vec::new();
    while let Some(seq) = items.next() {
        let seq: u64 = FromRedisValue::from_redis_value(seq).map_err(|_| bad("seq"))?;
        let time: u64 = FromRedisValue::from_redis_value(items.next().ok_or_else(|| bad("time"))?)
            .map_err(|_| bad("time"))?;
        let body: Vec<u8> =
            FromRedisValue::from_redis_value(items.next().ok_or_else(|| bad("body"))?)
                .map_err(|_| bad("body"))?;
        let body = Body::decode(&body).map_err(|e| BrokerError::Internal(e.to_string()))?;
        publications.push(Arc::new(body.into_publication(
            room.clone(),
            epoch.clone(),
            seq,
            time,
        )));
    }
    Ok(HistoryPage {
        top: Position::new(epoch, top),
        first_seq: u64::try_from(first).ok(),
        publications,
    })
}

/// A client for one Redis node: over TLS for `rediss://`, trusting `settings.tls_ca`
/// when set (else the system's trust store).
fn client(url: &str, settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    match &settings.tls_ca {
        Some(ca) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

/// Checks `redis_url` without connecting: a scheme the broker knows and a host in every
/// node, so that a URL such as `redis://` is refused by `--check-config` instead of
/// failing after the start. The message never repeats a password.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = crate::config::redact_url(url);
    let forms = format!(
        "write redis://[:password@]host:port[/db], \
         redis-cluster://[user:password@]host:port,host:port,… \
         (rediss://, rediss-cluster:// for TLS) or {}",
        sentinel::FORM
    );
    if let Some(sentinel) = sentinel::parse(url) {
        return sentinel
            .map(|_| ())
            .map_err(|why| format!("{shown} is not a usable Sentinel URL: {why}; {forms}"));
    }
    let cluster = url
        .strip_prefix("redis-cluster://")
        .map(|nodes| ("redis", nodes))
        .or_else(|| url.strip_prefix("rediss-cluster://").map(|n| ("rediss", n)));
    let nodes: Vec<String> = match cluster {
        Some((scheme, nodes)) => nodes
            .split(',')
            .map(|node| format!("{scheme}://{}", node.trim()))
            .collect(),
        None if url.starts_with("redis://") || url.starts_with("rediss://") => {
            vec![url.to_owned()]
        }
        None => return Err(format!("{shown} is not a Redis URL; {forms}")),
    };
    for node in nodes {
        let client = redis::Client::open(node.as_str())
            .map_err(|e| format!("{shown} is not a usable Redis URL ({e}); {forms}"))?;
        if let redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } =
            client.get_connection_info().addr()
            && host.is_empty()
        {
            return Err(format!("{shown} names no host; {forms}"));
        }
    }
    Ok(())
}

/// Where a Redis URL points, for log lines: `host:port` of each node, no credentials.
pub(crate) fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .split(',')
        .map(|node| node.rsplit_once('@').map_or(node, |(_, host)| host).trim())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_without_a_host_are_refused() {
        for bad in [
            "redis://",
            "redis://:pw@",
            "redis-cluster://a:7000,",
            "http://x:1",
            "redis-sentinel://:pw@a:26379",
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.contains("redis://"), "{bad}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
        for good in [
            "redis://127.0.0.1:6379",
            "redis://:pw@redis:6379/2?protocol=resp3",
            "redis-cluster://a:7000,b:7001",
            "redis-sentinel://:pw@a:26379,b/mymaster?db=1",
            "rediss-sentinel://a/mymaster",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        assert_eq!(address_of("redis://:pw@redis:6379/0"), "redis:6379");
        assert_eq!(address_of("redis-cluster://u:p@a:1,b:2"), "a:1,b:2");
    }
}
