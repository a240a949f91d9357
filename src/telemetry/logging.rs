//! Logging through `tracing`: human-readable or JSON lines on stdout.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber. `RUST_LOG`, when set, replaces the configured
/// filter. ractor's own per-actor spans are kept at `warn` unless a directive names
/// ractor: at `info` they would cost a span per connection.
pub fn init_logging(config: &LogConfig) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let directives = if directives.contains("ractor") {
        directives
    } else {
        format!("{directives},ractor=warn")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    match config.format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
