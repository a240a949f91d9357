//! `[api]`, `[audit]` and `[rate_limits]`: the limits of the HTTP API, how long its
//! audit log is kept, and how fast users and services may call it (and publish over
//! WebSocket).

use super::ConfigError;
use super::error::check;
use serde::Deserialize;

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

impl ApiConfig {
    /// Checks ranges; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1024..=64 << 20).contains(&self.max_body_bytes),
            "api.max_body_bytes",
            "must be between 1024 and 67108864",
        )?;
        check(
            self.page_default >= 1 && self.page_default <= self.page_max,
            "api.page_default",
            "must be between 1 and api.page_max",
        )
    }
}

impl AuditConfig {
    /// Checks ranges; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.retention_days >= 1,
            "audit.retention_days",
            "must be at least 1",
        )?;
        check(
            self.retention_interval_secs >= 1,
            "audit.retention_interval_secs",
            "must be at least 1",
        )
    }
}

impl RateLimitConfig {
    /// Every rate must be positive and every burst at least 1; the error names the
    /// rate's key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (per_second, burst, key) in [
            (
                self.user_reads_per_second,
                self.user_read_burst,
                "rate_limits.user_reads_per_second",
            ),
            (
                self.user_writes_per_second,
                self.user_write_burst,
                "rate_limits.user_writes_per_second",
            ),
            (
                self.service_reads_per_second,
                self.service_read_burst,
                "rate_limits.service_reads_per_second",
            ),
            (
                self.service_writes_per_second,
                self.service_write_burst,
                "rate_limits.service_writes_per_second",
            ),
            (
                self.ws_publishes_per_second,
                self.ws_publish_burst,
                "rate_limits.ws_publishes_per_second",
            ),
        ] {
            check(
                per_second > 0.0 && burst >= 1,
                key,
                "rates must be positive and bursts at least 1",
            )?;
        }
        Ok(())
    }
}
