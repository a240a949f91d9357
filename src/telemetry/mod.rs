//! Logs, metrics and traces.
//!
//! - [`init_logging`]: `tracing` to stdout, human-readable or JSON.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`, and the description of
//!   every metric roomcast exports.

mod logging;
pub mod metrics;

pub use logging::init_logging;
