//! `[redis]`: key names and timings of the Redis broker, and the certificates trusted
//! for `rediss://`.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;

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

impl RedisConfig {
    /// Checks ranges; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.key_prefix.is_empty() && !self.key_prefix.contains(['{', '}']),
            "redis.key_prefix",
            "must be non-empty and free of braces",
        )?;
        check(
            self.command_timeout_ms >= 10,
            "redis.command_timeout_ms",
            "must be at least 10",
        )?;
        check(
            self.connect_timeout_ms >= 10,
            "redis.connect_timeout_ms",
            "must be at least 10",
        )?;
        check(
            self.reconnect_max_ms >= 50,
            "redis.reconnect_max_ms",
            "must be at least 50",
        )?;
        check(
            self.probe_interval_ms >= 10,
            "redis.probe_interval_ms",
            "must be at least 10",
        )?;
        check(
            self.probe_timeout_ms > self.probe_interval_ms,
            "redis.probe_timeout_ms",
            "must be longer than redis.probe_interval_ms",
        )
    }

    /// `redis.tls_ca_file`, when set, must be a readable file holding a PEM certificate.
    pub(super) fn check_ca_file(&self) -> Result<(), ConfigError> {
        let ca = &self.tls_ca_file;
        if ca.is_empty() {
            return Ok(());
        }
        let pem = std::fs::read_to_string(ca).map_err(|e| {
            ConfigError::invalid("redis.tls_ca_file", format!("cannot read {ca}: {e}"))
        })?;
        check(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "redis.tls_ca_file",
            &format!("{ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )
    }
}
