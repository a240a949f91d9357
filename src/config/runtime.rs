//! `[runtime]`: the threads that run the server's tasks.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;

/// The most worker threads a configuration may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// `[runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per core this process may use.
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// The number of worker threads asked for, if not left to the runtime.
    pub fn worker_threads(&self) -> Option<usize> {
        (self.worker_threads > 0).then_some(self.worker_threads)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.worker_threads <= MAX_WORKER_THREADS,
            "runtime.worker_threads",
            "must be at most 1024 (0: one per core)",
        )
    }
}
