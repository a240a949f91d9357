//! One Redis found through Redis Sentinel (`redis-sentinel://…`): the master is asked of
//! the sentinels, and followed when they move it to another server.
//!
//! A watcher task owns the lookup. It asks the sentinels (each in turn, see
//! [`redis::sentinel`]) which server is the master, checks with `ROLE` that the server
//! agrees, and hands a connection to that server to the command [`Link`] and its client
//! to the Pub/Sub subscriber (which reconnects there). It asks again
//! - at once when a sentinel announces `+switch-master` for our master (every sentinel's
//!   announcements are listened to, so one unreachable sentinel does not hide a switch);
//! - when a command fails on the connection (unreachable, timed out, or `READONLY`: the
//!   server was demoted to a replica), at most every [`MIN_LOOKUP_GAP`];
//! - every few probe intervals anyway (every probe interval while the last lookup
//!   failed), so a switch whose announcement was missed is still found.
//!
//! A new master is another Redis process, so the rooms it holds start new epochs at their
//! next script (see `publish.lua`): a replica that missed acknowledged writes can never
//! hand out a sequence number again. The subscriber's reconnection tells every room to
//! compare with the new master, which tells the rooms' subscribers (`reset`).

use super::RedisSettings;
use super::breaker::Breaker;
use super::health::Health;
use super::link::{Link, Target, open};
use futures_util::StreamExt;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates, TlsMode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// The port of a sentinel named without one.
const DEFAULT_PORT: u16 = 26379;

/// The shortest time between two lookups prompted by failing commands.
const MIN_LOOKUP_GAP: Duration = Duration::from_millis(100);

/// Routine lookups while all is well: every this many probe intervals.
const ROUTINE_LOOKUP_PROBES: u32 = 5;

/// The URL forms, for error messages.
pub const FORM: &str = "redis-sentinel://[user:password@]host[:port],host[:port],…/master-name\
                        [?db=N&sentinel_username=…&sentinel_password=…] \
                        (rediss-sentinel:// for TLS)";

/// A parsed `redis-sentinel://` URL.
#[derive(Debug, Clone)]
pub struct SentinelUrl {
    /// TLS to the sentinels and to the master (`rediss-sentinel://`).
    tls: bool,
    /// The sentinels: host and port.
    sentinels: Vec<(String, u16)>,
    /// The name the sentinels know the master by.
    master: String,
    /// Credentials and database for the master.
    redis: RedisConnectionInfo,
    /// Credentials for the sentinels.
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

/// Parses `url` if it is a Sentinel URL: `None` for any other scheme, `Err` (never
/// repeating a password) when it is one but malformed.
pub fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis-sentinel://") {
        (false, rest)
    } else {
        (true, url.strip_prefix("rediss-sentinel://")?)
    };
    Some(parse_parts(tls, rest))
}

fn parse_parts(tls: bool, rest: &str) -> Result<SentinelUrl, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (master, query) = path.split_once('?').unwrap_or((path, ""));
    if master.is_empty() || master.contains('/') {
        return Err(
            "names no master: put the sentinels' name of the master after the \
                    sentinels, e.g. /mymaster"
                .into(),
        );
    }
    let mut sentinels = Vec::new();
    for node in hosts.split(',').map(str::trim) {
        sentinels.push(sentinel_addr(node)?);
    }
    let mut redis = match userinfo {
        Some(userinfo) => format!("redis://{userinfo}@localhost/")
            .into_connection_info()
            .map_err(|_| "its user information is not user:password".to_owned())?
            .redis_settings()
            .clone(),
        None => RedisConnectionInfo::default(),
    };
    let (mut sentinel_username, mut sentinel_password) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "db" => {
                let db = value
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| format!("db={value} is not a database number"))?;
                redis = redis.set_db(db);
            }
            "sentinel_username" => sentinel_username = Some(decode(value)?),
            "sentinel_password" => sentinel_password = Some(decode(value)?),
            other => {
                return Err(format!(
                    "unknown option {other:?} (known: db, sentinel_username, sentinel_password)"
                ));
            }
        }
    }
    Ok(SentinelUrl {
        tls,
        sentinels,
        master: master.to_owned(),
        redis,
        sentinel_username,
        sentinel_password,
    })
}

/// One sentinel of the list: `host[:port]` (the port defaults to 26379).
fn sentinel_addr(node: &str) -> Result<(String, u16), String> {
    if node.is_empty() {
        return Err("a sentinel in the list names no host".into());
    }
    let has_port = if node.starts_with('[') {
        node.contains("]:")
    } else {
        node.contains(':')
    };
    let node = if has_port {
        node.to_owned()
    } else {
        format!("{node}:{DEFAULT_PORT}")
    };
    let info = format!("redis://{node}")
        .into_connection_info()
        .map_err(|e| format!("sentinel {node:?} is not host:port ({e})"))?;
    match info.addr() {
        ConnectionAddr::Tcp(host, port) if !host.is_empty() => Ok((host.clone(), *port)),
        _ => Err(format!("sentinel {node:?} names no host")),
    }
}

/// Percent-decodes a query value (the same rules as user information in a URL).
fn decode(value: &str) -> Result<String, String> {
    format!("redis://:{value}@localhost/")
        .into_connection_info()
        .ok()
        .and_then(|info| info.redis_settings().password().map(str::to_owned))
        .ok_or_else(|| "a sentinel credential is not percent-encoded correctly".to_owned())
}

impl SentinelUrl {
    /// `host:port` of every sentinel, for log lines.
    fn addresses(&self) -> String {
        self.sentinels
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn certificates(&self, settings: &RedisSettings) -> Option<TlsCertificates> {
        settings.tls_ca.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    fn address(&self, host: &str, port: u16) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        }
    }

    /// The lookup client: asks the sentinels for the master, connects to it over TLS
    /// and with the master's credentials as the URL says.
    fn lookup(&self, settings: &RedisSettings) -> redis::RedisResult<SentinelClient> {
        let sentinels = self
            .sentinels
            .iter()
            .map(|(host, port)| self.address(host, *port));
        let mut builder =
            SentinelClientBuilder::new(sentinels, &self.master, SentinelServerType::Master)?
                .set_client_to_redis_db(self.redis.db());
        if let Some(username) = self.redis.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = self.redis.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(username) = &self.sentinel_username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = &self.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if self.tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certificates) = self.certificates(settings) {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        builder.build()
    }

    /// A plain client per sentinel, for their announcements.
    fn announcers(&self, settings: &RedisSettings) -> redis::RedisResult<Vec<redis::Client>> {
        let mut credentials = RedisConnectionInfo::default();
        if let Some(username) = &self.sentinel_username {
            credentials = credentials.set_username(username);
        }
        if let Some(password) = &self.sentinel_password {
            credentials = credentials.set_password(password);
        }
        self.sentinels
            .iter()
            .map(|(host, port)| {
                let info = self
                    .address(host, *port)
                    .into_connection_info()?
                    .set_redis_settings(credentials.clone());
                match self.certificates(settings) {
                    Some(certificates) if self.tls => {
                        redis::Client::build_with_tls(info, certificates)
                    }
                    _ => redis::Client::open(info),
                }
            })
            .collect()
    }
}

/// The current master's client, for the Pub/Sub subscriber (`None` until found).
pub type Master = watch::Receiver<Option<redis::Client>>;

/// Follows the master the sentinels name.
pub struct Watcher {
    url: SentinelUrl,
    lookup: SentinelClient,
    settings: RedisSettings,
    link: Link,
    breaker: Arc<Breaker>,
    health: Arc<Health>,
    master: watch::Sender<Option<redis::Client>>,
    hint: Arc<Notify>,
}

impl Watcher {
    /// A watcher that will fill `link` with a connection to the master, and the
    /// receiver of the master's client for the subscriber. Fails only on a URL the
    /// client library refuses.
    pub fn new(
        url: SentinelUrl,
        settings: RedisSettings,
        link: Link,
        breaker: Arc<Breaker>,
        health: Arc<Health>,
    ) -> redis::RedisResult<(Watcher, Master)> {
        let lookup = url.lookup(&settings)?;
        let (master, receiver) = watch::channel(None);
        let watcher = Watcher {
            url,
            lookup,
            settings,
            link,
            breaker,
            health,
            master,
            hint: Arc::new(Notify::new()),
        };
        Ok((watcher, receiver))
    }

    /// Wakes the watcher to ask the sentinels again (a command failed).
    pub fn hint(&self) -> Arc<Notify> {
        self.hint.clone()
    }

    /// Runs until the subscriber is gone.
    pub async fn run(mut self) {
        let switched = Arc::new(Notify::new());
        let mut announcers = JoinSet::new();
        match self.url.announcers(&self.settings) {
            Ok(clients) => {
                for client in clients {
                    announcers.spawn(listen(
                        client,
                        self.url.master.clone(),
                        switched.clone(),
                        self.settings.clone(),
                    ));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen to the sentinels' announcements; asking them periodically only");
            }
        }
        let sentinels = self.url.addresses();
        let mut current: Option<String> = None;
        loop {
            let last_lookup = tokio::time::Instant::now();
            let found = self.follow(&mut current).await;
            if let Err(err) = &found {
                tracing::warn!(%sentinels, master = %self.url.master, error = %err, "cannot find the Redis master through the sentinels; asking again");
            }
            let pause = match found {
                Ok(()) => self.settings.probe_interval * ROUTINE_LOOKUP_PROBES,
                Err(_) => self.settings.probe_interval,
            };
            tokio::select! {
                _ = self.master.closed() => return,
                _ = switched.notified() => {}
                _ = self.hint.notified() => {
                    tokio::time::sleep_until(last_lookup + MIN_LOOKUP_GAP).await;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Asks the sentinels for the master and moves there if it changed.
    async fn follow(&mut self, current: &mut Option<String>) -> Result<(), String> {
        let limit = 2 * (self.settings.connect_timeout + self.settings.command_timeout);
        let client = match tokio::time::timeout(limit, self.lookup.async_get_client()).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer within {limit:?}")),
        };
        let address = client.get_connection_info().addr().to_string();
        if current.as_deref() == Some(address.as_str()) {
            return Ok(());
        }
        let connection = open(&Target::Single(Box::new(client.clone())), &self.settings)
            .await
            .map_err(|e| format!("cannot connect to the master at {address}: {e}"))?;
        self.link.set(connection);
        self.master.send_replace(Some(client));
        self.health.set_master(Some(address.clone()));
        // The new master answered (its role was checked): no wait for a cooldown that
        // the old one earned.
        self.breaker.answered(&address);
        match current.replace(address.clone()) {
            Some(old) => {
                metrics::counter!("roomcast_broker_topology_changes_total").increment(1);
                tracing::warn!(%old, new = %address, master = %self.url.master, "the sentinels moved the Redis master; following it (rooms start new epochs)");
            }
            None => {
                tracing::info!(%address, master = %self.url.master, "Redis master found through the sentinels");
            }
        }
        Ok(())
    }
}

/// Listens to one sentinel's `+switch-master` announcements and wakes the watcher for
/// those of `master`; reconnects with backoff.
async fn listen(
    client: redis::Client,
    master: String,
    switched: Arc<Notify>,
    settings: RedisSettings,
) {
    let mut delay = settings.reconnect_min;
    loop {
        let connected =
            tokio::time::timeout(settings.connect_timeout, client.get_async_pubsub()).await;
        if let Ok(Ok(mut pubsub)) = connected {
            let subscribed =
                tokio::time::timeout(settings.command_timeout, pubsub.subscribe("+switch-master"))
                    .await;
            if let Ok(Ok(())) = subscribed {
                delay = settings.reconnect_min;
                // A switch may have been announced while this sentinel was not heard.
                switched.notify_one();
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    // "<master name> <old ip> <old port> <new ip> <new port>"
                    let text: String = message.get_payload().unwrap_or_default();
                    if text.split(' ').next() == Some(master.as_str()) {
                        switched.notify_one();
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(settings.reconnect_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let url = parse("redis-sentinel://app:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]/main?db=2&sentinel_password=p%26w")
            .unwrap()
            .unwrap();
        assert!(!url.tls);
        assert_eq!(
            url.sentinels,
            vec![
                ("10.0.0.1".to_owned(), 26379),
                ("10.0.0.2".to_owned(), 26380),
                ("::1".to_owned(), 26379)
            ]
        );
        assert_eq!(url.master, "main");
        assert_eq!(url.redis.username(), Some("app"));
        assert_eq!(url.redis.password(), Some("s@cret"));
        assert_eq!(url.redis.db(), 2);
        assert_eq!(url.sentinel_password.as_deref(), Some("p&w"));
        assert_eq!(url.sentinel_username, None);
        assert!(parse("rediss-sentinel://h/m").unwrap().unwrap().tls);
        assert!(parse("redis://h:6379").is_none());
    }

    #[test]
    fn malformed_sentinel_urls_are_refused() {
        for (bad, why) in [
            ("redis-sentinel://h1:26379", "names no master"),
            ("redis-sentinel://h1:26379/", "names no master"),
            ("redis-sentinel:///m", "names no host"),
            ("redis-sentinel://h1,/m", "names no host"),
            ("redis-sentinel://h1:x/m", "not host:port"),
            ("redis-sentinel://h1/m?db=x", "not a database number"),
            ("redis-sentinel://h1/m?password=x", "unknown option"),
        ] {
            let err = parse(bad).unwrap().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
