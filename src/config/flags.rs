//! `[flags]`: feature-flag rollout percentages and the file that overrides them.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;

/// `[flags]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// File with percentages that override these, re-read on SIGHUP and on change.
    pub file: String,
    /// Rollout percentage of `coalesce_writes`.
    pub coalesce_writes: u8,
}

impl FlagsConfig {
    /// Percentages must be percentages.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.coalesce_writes <= 100,
            "flags.coalesce_writes",
            "must be a percentage from 0 to 100",
        )
    }
}
