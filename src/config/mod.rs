//! Typed configuration: defaults compiled from `config/default.toml`, then an optional
//! file, then `ROOMCAST_*` environment variables; validated before anything binds.

mod access;
mod checks;
mod cluster;
mod console;
mod layers;
mod presence;
mod show;
mod tls;

pub use access::{AuthMode, CorsConfig, OriginList, TrustedProxies, WebSocketConfig};
pub use cluster::ClusterConfig;
pub use console::ConsoleConfig;
pub use layers::{ENV_PREFIX, ENV_SECTION_SEPARATOR};
pub use presence::PresenceConfig;
pub use show::{REDACTED, redact_url};
pub use tls::{TlsConfig, TlsError};

use crate::protocol::RoomNameRules;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The defaults, which double as the documentation of every key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Everything the server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener address for WebSocket and HTTP.
    pub listen: SocketAddr,
    /// TLS on the listener (`[tls]`); off when no certificate is configured.
    pub tls: TlsConfig,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Instance name; empty means "generate one".
    pub node_id: String,
    /// Redis shared by the cluster; empty means the embedded broker.
    pub redis_url: String,
    /// Database of the issue tracker.
    pub database_url: String,
    /// Logging.
    pub log: LogConfig,
    /// Per-connection limits.
    pub connection: ConnectionConfig,
    /// Room actors and room names.
    pub rooms: RoomsConfig,
    /// Replay buffer and idempotency window.
    pub history: HistoryConfig,
    /// Redis connection tuning.
    pub redis: RedisConfig,
    /// HTTP API limits.
    pub api: ApiConfig,
    /// Audit retention.
    pub audit: AuditConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// `[cors]`
    pub cors: CorsConfig,
    /// `[websocket]`
    pub websocket: WebSocketConfig,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Graceful drain.
    pub drain: DrainConfig,
    /// Feature flags.
    pub flags: FlagsConfig,
    /// OpenTelemetry traces.
    pub tracing: TracingConfig,
    /// Presence (who is in a room).
    pub presence: PresenceConfig,
    /// Cluster membership, reconnect hints and rebalancing.
    pub cluster: ClusterConfig,
    /// The web console.
    pub console: ConsoleConfig,
}

/// `[tracing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/HTTP endpoint for traces; empty: no export.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces sampled (0.0 to 1.0); incoming sampled traces are followed.
    pub sample_ratio: f64,
}

/// `[flags]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// File with percentages that override these, re-read on SIGHUP and on change.
    pub file: String,
    /// Rollout percentage of `coalesce_writes`.
    pub coalesce_writes: u8,
}

/// `[drain]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainConfig {
    /// Clients are told to reconnect spread over this window (ms).
    pub window_ms: u64,
    /// The drain ends by then at the latest (ms).
    pub deadline_ms: u64,
}

impl DrainConfig {
    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Separate listener for `/metrics`; empty: the main listener.
    pub listen: String,
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Default page size.
    pub page_default: i64,
    /// Largest page size.
    pub page_max: i64,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Age at which entries are deleted (days).
    pub retention_days: u64,
    /// Interval of the retention job (s).
    pub retention_interval_secs: u64,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret.
    pub jwt_hs256_secret: String,
    /// RS256 public key file (PEM).
    pub jwt_rs256_public_key_file: String,
    /// Tolerated clock skew (s).
    pub clock_skew_secs: u64,
    /// Required issuer.
    pub jwt_issuer: String,
    /// Required audience.
    pub jwt_audience: String,
    /// `name:token,…`
    pub service_tokens: String,
    /// Whether anonymous clients are allowed on a public address.
    pub mode: AuthMode,
}

/// `[rate_limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// User reads per second.
    pub user_reads_per_second: f64,
    /// User read burst.
    pub user_read_burst: u32,
    /// User mutations per second.
    pub user_writes_per_second: f64,
    /// User mutation burst.
    pub user_write_burst: u32,
    /// Service reads per second.
    pub service_reads_per_second: f64,
    /// Service read burst.
    pub service_read_burst: u32,
    /// Service mutations per second.
    pub service_writes_per_second: f64,
    /// Service mutation burst.
    pub service_write_burst: u32,
    /// WebSocket publishes per second per principal.
    pub ws_publishes_per_second: f64,
    /// WebSocket publish burst per principal.
    pub ws_publish_burst: u32,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// tracing filter directives.
    pub level: String,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (a container, a file, a pipe), else pretty.
    Auto,
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[connection]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Time allowed for the WebSocket upgrade request (ms).
    pub handshake_timeout_ms: u64,
    /// Largest accepted client frame (bytes).
    pub max_frame_bytes: usize,
    /// Most rooms per connection.
    pub max_rooms: usize,
    /// Outbound queue bound (frames) before a slow-consumer close.
    pub outbound_queue: usize,
    /// Heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// SO_SNDBUF of client sockets; 0 keeps the OS default.
    pub send_buffer_bytes: usize,
    /// Pending-connection queue of the listener (capped by the kernel's somaxconn).
    pub listen_backlog: u32,
    /// Whether publishing requires a subscription.
    pub publish_requires_subscription: bool,
    /// Most WebSocket connections on this instance.
    pub max_connections: usize,
    /// Most connections of one user or service on this instance (0: no limit).
    pub max_connections_per_user: usize,
}

/// `[rooms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Longest room name (bytes).
    pub name_max_len: usize,
    /// Punctuation allowed in room names.
    pub name_extra_chars: String,
    /// Messages cached per room actor.
    pub cache_size: usize,
    /// Linger of an empty room actor (ms).
    pub linger_ms: u64,
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Restart-intensity window (ms).
    pub restart_window_ms: u64,
}

/// `[history]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Replay buffer length per room.
    pub size: usize,
    /// Replay buffer age bound (s).
    pub ttl_secs: u64,
    /// Lifetime of an idle room's epoch and seq (s).
    pub meta_ttl_secs: u64,
    /// Idempotency window (s).
    pub idempotency_window_secs: u64,
    /// Idempotency keys remembered per room.
    pub idempotency_max_keys: usize,
    /// Most messages per history reply.
    pub max_page: usize,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Command timeout (ms).
    pub command_timeout_ms: u64,
    /// Longest reconnect backoff (ms).
    pub reconnect_max_ms: u64,
    /// Pub/Sub probe interval (ms).
    pub probe_interval_ms: u64,
    /// Pub/Sub probe timeout (ms).
    pub probe_timeout_ms: u64,
    /// PEM file of the certificates trusted for `rediss://` (empty: the system's).
    pub tls_ca_file: String,
    /// Publication bodies of at least this many bytes are compressed between instances
    /// (0: never).
    pub compress_above_bytes: usize,
}

/// A configuration that cannot be used, naming where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A key that does not exist (in a file or an environment variable).
    #[error("unknown configuration key `{key}` (from {origin})")]
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// The file path or environment variable name.
        origin: String,
    },
    /// A value of the wrong type or shape.
    #[error("configuration key `{key}`: {message}")]
    Type {
        /// Dotted key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A value outside its allowed range.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// Dotted key path.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl Config {
    /// Loads defaults, then `file`, then the `ROOMCAST_*` entries of `env`, and validates.
    /// Tests pass their own `env` instead of touching the process environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env = with_database_url_alias(env);
        let table = layers::merged(file, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                ConfigError::Type {
                    key: err.path().to_string(),
                    message: checks::user_words(err.inner().message()),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The compiled-in defaults (always valid; a unit test checks it).
    pub fn defaults() -> Config {
        Config::load(None, std::iter::empty()).expect("compiled-in defaults are valid")
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    message: message.to_owned(),
                })
            }
        }
        let c = &self.connection;
        check(
            c.handshake_timeout_ms >= 100,
            "connection.handshake_timeout_ms",
            "must be at least 100",
        )?;
        check(
            (256..=64 << 20).contains(&c.max_frame_bytes),
            "connection.max_frame_bytes",
            "must be between 256 and 67108864",
        )?;
        check(
            c.max_rooms >= 1,
            "connection.max_rooms",
            "must be at least 1",
        )?;
        check(
            (1..=65535).contains(&c.listen_backlog),
            "connection.listen_backlog",
            "must be between 1 and 65535",
        )?;
        check(
            c.heartbeat_ms >= 100,
            "connection.heartbeat_ms",
            "must be at least 100",
        )?;
        check(
            (8..=1 << 20).contains(&c.outbound_queue),
            "connection.outbound_queue",
            "must be between 8 and 1048576",
        )?;
        let r = &self.rooms;
        check(
            (1..=1024).contains(&r.name_max_len),
            "rooms.name_max_len",
            "must be between 1 and 1024",
        )?;
        check(
            r.name_extra_chars
                .chars()
                .all(|ch| ch.is_ascii_punctuation()),
            "rooms.name_extra_chars",
            "may only hold ASCII punctuation",
        )?;
        check(
            r.restart_window_ms >= 1,
            "rooms.restart_window_ms",
            "must be at least 1",
        )?;
        let h = &self.history;
        check(h.size >= 1, "history.size", "must be at least 1")?;
        check(h.ttl_secs >= 1, "history.ttl_secs", "must be at least 1")?;
        check(
            h.meta_ttl_secs >= h.ttl_secs,
            "history.meta_ttl_secs",
            "must be at least history.ttl_secs",
        )?;
        check(h.max_page >= 1, "history.max_page", "must be at least 1")?;
        let r = &self.redis;
        check(
            !r.key_prefix.is_empty() && !r.key_prefix.contains(['{', '}']),
            "redis.key_prefix",
            "must be non-empty and free of braces",
        )?;
        check(
            r.command_timeout_ms >= 10,
            "redis.command_timeout_ms",
            "must be at least 10",
        )?;
        check(
            r.connect_timeout_ms >= 10,
            "redis.connect_timeout_ms",
            "must be at least 10",
        )?;
        check(
            r.reconnect_max_ms >= 50,
            "redis.reconnect_max_ms",
            "must be at least 50",
        )?;
        check(
            r.probe_interval_ms >= 10,
            "redis.probe_interval_ms",
            "must be at least 10",
        )?;
        check(
            r.probe_timeout_ms > r.probe_interval_ms,
            "redis.probe_timeout_ms",
            "must be longer than redis.probe_interval_ms",
        )?;
        check(
            self.database_url.starts_with("sqlite:")
                || self.database_url.starts_with("postgres://")
                || self.database_url.starts_with("postgresql://"),
            "database_url",
            "must be sqlite:… or postgres://…",
        )?;
        check(
            (1024..=64 << 20).contains(&self.api.max_body_bytes),
            "api.max_body_bytes",
            "must be between 1024 and 67108864",
        )?;
        check(
            self.api.page_default >= 1 && self.api.page_default <= self.api.page_max,
            "api.page_default",
            "must be between 1 and api.page_max",
        )?;
        check(
            self.audit.retention_days >= 1,
            "audit.retention_days",
            "must be at least 1",
        )?;
        check(
            self.audit.retention_interval_secs >= 1,
            "audit.retention_interval_secs",
            "must be at least 1",
        )?;
        let l = &self.rate_limits;
        for (ok, key) in [
            (
                l.user_reads_per_second > 0.0 && l.user_read_burst >= 1,
                "rate_limits.user_reads_per_second",
            ),
            (
                l.user_writes_per_second > 0.0 && l.user_write_burst >= 1,
                "rate_limits.user_writes_per_second",
            ),
            (
                l.service_reads_per_second > 0.0 && l.service_read_burst >= 1,
                "rate_limits.service_reads_per_second",
            ),
            (
                l.service_writes_per_second > 0.0 && l.service_write_burst >= 1,
                "rate_limits.service_writes_per_second",
            ),
            (
                l.ws_publishes_per_second > 0.0 && l.ws_publish_burst >= 1,
                "rate_limits.ws_publishes_per_second",
            ),
        ] {
            check(ok, key, "rates must be positive and bursts at least 1")?;
        }
        check(
            self.connection.max_connections >= 1,
            "connection.max_connections",
            "must be at least 1",
        )?;
        access::validate(self)?;
        check(
            self.tracing.otlp_endpoint.is_empty()
                || self.tracing.otlp_endpoint.starts_with("http://"),
            "tracing.otlp_endpoint",
            "must be empty or an http:// URL such as http://collector:4318/v1/traces (no TLS: send to a local collector)",
        )?;
        check(
            (0.0..=1.0).contains(&self.tracing.sample_ratio),
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        )?;
        check(
            self.flags.coalesce_writes <= 100,
            "flags.coalesce_writes",
            "must be a percentage from 0 to 100",
        )?;
        self.presence
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })?;
        self.cluster
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })?;
        check(
            self.drain.deadline_ms > self.drain.window_ms,
            "drain.deadline_ms",
            "must be longer than drain.window_ms",
        )?;
        check(
            self.metrics.listen.is_empty() || self.metrics.listen.parse::<SocketAddr>().is_ok(),
            "metrics.listen",
            "must be empty or an address like 0.0.0.0:9100",
        )?;
        check(
            !self.rooms.name_extra_chars.contains(['{', '}']),
            "rooms.name_extra_chars",
            "may not contain braces (they delimit Redis hash tags)",
        )?;
        check(
            !self.rooms.name_extra_chars.contains('$'),
            "rooms.name_extra_chars",
            "may not contain `$` (it starts the server's internal rooms)",
        )?;
        check(
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "log.level",
            "is not a valid tracing filter",
        )?;
        checks::validate(self)?;
        Ok(())
    }

    /// Advice about settings that are valid but weaken a guarantee, for the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.history.size <= self.connection.outbound_queue {
            warnings.push(format!(
                "history.size ({}) is not above connection.outbound_queue ({}): a client \
                 disconnected as a slow consumer will usually be too far behind to resume",
                self.history.size, self.connection.outbound_queue
            ));
        }
        warnings
    }

    /// Room-name rules derived from `[rooms]`.
    pub fn room_name_rules(&self) -> RoomNameRules {
        RoomNameRules {
            max_len: self.rooms.name_max_len,
            extra_chars: self.rooms.name_extra_chars.clone(),
        }
    }
}

/// `env` with the conventional DATABASE_URL standing for ROOMCAST_DATABASE_URL unless
/// that is set.
fn with_database_url_alias(
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    if !env.iter().any(|(k, _)| k == "ROOMCAST_DATABASE_URL")
        && let Some((_, url)) = env.iter().find(|(k, _)| k == "DATABASE_URL")
    {
        env.push(("ROOMCAST_DATABASE_URL".into(), url.clone()));
    }
    env
}

impl ConnectionConfig {
    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::defaults();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.log.format, LogFormat::Auto);
        assert!(config.history.size > config.connection.outbound_queue);
    }

    #[test]
    fn environment_overrides_top_level_and_section_keys() {
        let config = Config::load(
            None,
            env(&[
                ("ROOMCAST_LISTEN", "0.0.0.0:9000"),
                ("ROOMCAST_AUTH__MODE", "open"),
                ("ROOMCAST_NODE_ID", "1234"),
                ("ROOMCAST_CONNECTION__MAX_ROOMS", "7"),
                ("ROOMCAST_CONNECTION__PUBLISH_REQUIRES_SUBSCRIPTION", "true"),
                ("ROOMCAST_LOG__FORMAT", "json"),
                ("UNRELATED", "x"),
                // Injected by Kubernetes for a Service named roomcast: not ours, ignored.
                ("ROOMCAST_SERVICE_HOST", "10.0.0.1"),
                ("ROOMCAST_PORT", "tcp://10.0.0.1:80"),
                ("ROOMCAST_PORT_80_TCP_ADDR", "10.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.node_id, "1234", "string keys keep digits as text");
        assert_eq!(config.connection.max_rooms, 7);
        assert!(config.connection.publish_requires_subscription);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let mut file = tempfile();
        writeln!(
            file.1,
            "listen = \"127.0.0.1:7000\"\n[rooms]\ncache_size = 9"
        )
        .unwrap();
        let config =
            Config::load(Some(&file.0), env(&[("ROOMCAST_LISTEN", "127.0.0.1:7001")])).unwrap();
        assert_eq!(config.listen.port(), 7001);
        assert_eq!(config.rooms.cache_size, 9);
        assert_eq!(config.rooms.linger_ms, 2000, "untouched keys keep defaults");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load(None, env(&[("ROOMCAST_CONNECTION__MAX_ROOMS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection.max_rooms"), "{err}");
        assert!(err.contains("ROOMCAST_CONNECTION__MAX_ROOMS"), "{err}");

        let err = Config::load(None, env(&[("ROOMCAST_CONNECTION__MAX_ROMS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection.max_roms"), "{err}");

        let err = Config::load(None, env(&[("ROOMCAST_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");

        let err = Config::load(None, env(&[("ROOMCAST_CONNECTION__OUTBOUND_QUEUE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection.outbound_queue"), "{err}");

        let err = Config::load(None, env(&[("ROOMCAST_LOG__FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format"), "{err}");

        let mut file = tempfile();
        writeln!(file.1, "[history]\nsizes = 3").unwrap();
        let err = Config::load(Some(&file.0), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("history.sizes"), "{err}");
    }

    fn tempfile() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!(
            "roomcast-config-test-{}.toml",
            uuid::Uuid::new_v4()
        ));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }
}
