//! Typed configuration: defaults compiled from `config/default.toml`, then an optional
//! file, then `ROOMCAST_*` environment variables; validated before anything binds.
//!
//! One file per concern holds its sections' types and their checks (`connection`,
//! `rooms` with `[history]`, `redis`, `api` with `[audit]` and `[rate_limits]`,
//! `access` with `[auth]`, `[cors]` and `[websocket]`, `telemetry` with `[log]`,
//! `[metrics]` and `[tracing]`, `presence`, `cluster`, `drain`, `flags`, `tls`,
//! `console`, `runtime`); `layers` merges the three layers, `words` rephrases type
//! errors, `show` prints the effective configuration. Every error names the key it is
//! about.

mod access;
mod api;
mod cluster;
mod connection;
mod console;
mod drain;
mod error;
mod flags;
mod layers;
mod presence;
mod redis;
mod rooms;
mod runtime;
mod show;
mod telemetry;
mod tls;
mod words;

pub use access::{AuthConfig, AuthMode, CorsConfig, OriginList, TrustedProxies, WebSocketConfig};
pub use api::{ApiConfig, AuditConfig, RateLimitConfig};
pub use cluster::ClusterConfig;
pub use connection::ConnectionConfig;
pub use console::ConsoleConfig;
pub use drain::DrainConfig;
pub use error::ConfigError;
pub use flags::FlagsConfig;
pub use layers::{ENV_PREFIX, ENV_SECTION_SEPARATOR};
pub use presence::PresenceConfig;
pub use redis::RedisConfig;
pub use rooms::{HistoryConfig, RoomsConfig};
pub use runtime::RuntimeConfig;
pub use show::{REDACTED, redact_url};
pub use telemetry::{LogConfig, LogFormat, MetricsConfig, TracingConfig};
pub use tls::{TlsConfig, TlsError};

use crate::protocol::RoomNameRules;
use error::check;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

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
    /// The threads that run the server's tasks.
    pub runtime: RuntimeConfig,
}

impl Config {
    /// Loads defaults, then `file`, then the `ROOMCAST_*` entries of `env`, and validates.
    /// Tests pass their own `env` instead of touching the process environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table = layers::merged(file, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                ConfigError::Type {
                    key: err.path().to_string(),
                    message: words::user_words(err.inner().message()),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The compiled-in defaults (always valid; a unit test checks it).
    pub fn defaults() -> Config {
        Config::load(None, std::iter::empty()).expect("compiled-in defaults are valid")
    }

    /// Checks ranges and relations between keys, section by section, then what needs
    /// a file read or two sections at once. The first problem found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connection.validate()?;
        self.rooms.validate()?;
        self.history.validate()?;
        self.redis.validate()?;
        check(
            self.database_url.starts_with("sqlite:")
                || self.database_url.starts_with("postgres://")
                || self.database_url.starts_with("postgresql://"),
            "database_url",
            "must be sqlite:… or postgres://…",
        )?;
        self.api.validate()?;
        self.audit.validate()?;
        self.rate_limits.validate()?;
        access::validate(self)?;
        self.tracing.validate()?;
        self.flags.validate()?;
        self.presence
            .validate()
            .map_err(|(key, message)| ConfigError::invalid(key, message))?;
        self.cluster
            .validate()
            .map_err(|(key, message)| ConfigError::invalid(key, message))?;
        self.drain.validate()?;
        self.runtime.validate()?;
        self.metrics.validate()?;
        self.log.validate()?;
        // Values that parse but cannot work.
        self.log.check_levels()?;
        if self.tls.enabled() {
            self.tls
                .load()
                .map_err(|e| ConfigError::invalid(e.key, e.message))?;
        }
        self.redis.check_ca_file()?;
        self.metrics.check_port(self.listen)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

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
