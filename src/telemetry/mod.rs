//! Logs, metrics and traces.
//!
//! - [`init_logging`]: `tracing` to stdout, human-readable or JSON.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`, and the description of
//!   every metric roomcast exports.
//! - [`traces`]: OpenTelemetry spans over OTLP, and the W3C trace context carried in
//!   outbox rows and message envelopes.

mod logging;
pub mod metrics;
pub mod recent;
pub mod traces;

pub use logging::init_logging;
