//! Logs through `tracing` (human-readable or JSON lines on stdout), and, when an OTLP
//! endpoint is configured, the OpenTelemetry layer beside them.

use super::traces;
use crate::config::{Config, LogFormat};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber: log lines filtered by `log.level` (or `RUST_LOG`),
/// and roomcast's spans exported to OTLP when `tracing.otlp_endpoint` is set. Returns the
/// tracer provider to flush at exit. Must be called inside a tokio runtime.
///
/// ractor's own per-actor spans are kept at `warn` unless a directive names ractor: at
/// `info` they would cost a span per connection.
pub fn init_logging(config: &Config) -> Option<SdkTracerProvider> {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    let directives = if directives.contains("ractor") {
        directives
    } else {
        format!("{directives},ractor=warn")
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a file, a pipe or a
    // container log are noise. `auto` writes JSON to anything that is not a terminal.
    let terminal = std::io::stdout().is_terminal();
    let json = match config.log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    let lines = match json {
        false => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .boxed(),
        true => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    }
    .with_filter(filter);
    let provider = traces::provider(&config.tracing, &config.node_id);
    let registry = tracing_subscriber::registry().with(lines);
    // Not an `Option` layer: a `None` one says it wants every span, and the registry
    // would then keep the spans the log filter turned away — ractor's span of every
    // connection actor among them, ~0.3 KiB per idle connection.
    match &provider {
        Some(provider) => registry
            .with(
                traces::layer(provider)
                    .with_filter(Targets::new().with_target("roomcast", Level::INFO)),
            )
            .init(),
        None => registry.init(),
    }
    provider
}
