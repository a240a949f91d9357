//! `[console]`: the web console.

use serde::Deserialize;

/// `[console]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether `/console/` is served.
    pub enabled: bool,
}
