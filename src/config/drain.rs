//! `[drain]`: how an instance that is stopped lets its clients go.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;
use std::time::Duration;

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

    /// The deadline must leave time after the window.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.deadline_ms > self.window_ms,
            "drain.deadline_ms",
            "must be longer than drain.window_ms",
        )
    }
}
