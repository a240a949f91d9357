//! `[log]`, `[metrics]` and `[tracing]`: what the server tells its operators, and
//! where. Besides ranges, the checks refuse values that parse but cannot work: a log
//! level that names no level, `/metrics` on the listener's own port.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// tracing filter directives.
    pub level: String,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (a container, a file, a pipe), else pretty.
    Auto,
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Separate listener for `/metrics`; empty: the main listener.
    pub listen: String,
}

/// `[tracing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/HTTP endpoint for traces; empty: no export.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces sampled (0.0 to 1.0); incoming sampled traces are followed.
    pub sample_ratio: f64,
}

/// The level names `log.level` accepts, alone or after `target=`.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl LogConfig {
    /// `log.level` must be a tracing filter.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            tracing_subscriber::EnvFilter::try_new(&self.level).is_ok(),
            "log.level",
            "is not a valid tracing filter",
        )
    }

    /// `log.level` must also say at which level to log (see [`log_level`]).
    pub(super) fn check_levels(&self) -> Result<(), ConfigError> {
        log_level(&self.level).map_err(|message| ConfigError::invalid("log.level", message))
    }
}

impl MetricsConfig {
    /// `metrics.listen` must be empty or an address.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.listen.is_empty() || self.listen.parse::<SocketAddr>().is_ok(),
            "metrics.listen",
            "must be empty or an address like 0.0.0.0:9100",
        )
    }

    /// `/metrics` may not take the port of the main listener `listen`.
    pub(super) fn check_port(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        match self.listen.parse::<SocketAddr>() {
            Ok(metrics) if overlaps(metrics, listen) => Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "{metrics} is the port of `listen` ({listen}) on an overlapping address: \
                     give /metrics a port of its own (e.g. 0.0.0.0:9100), or leave \
                     metrics.listen empty to serve /metrics on the main listener"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl TracingConfig {
    /// Checks the endpoint's form and the ratio's range; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.otlp_endpoint.is_empty() || self.otlp_endpoint.starts_with("http://"),
            "tracing.otlp_endpoint",
            "must be empty or an http:// URL such as http://collector:4318/v1/traces (no TLS: send to a local collector)",
        )?;
        check(
            (0.0..=1.0).contains(&self.sample_ratio),
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        )
    }
}

/// Whether two listeners would fight over one socket: the same fixed port on the same
/// address, or on any address when one of them is a wildcard (0.0.0.0 or ::).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `log.level` must say at which level to log. tracing reads a bare word such as
/// `verbose` as a *target* logged at every level, so a typo of a level passes its parser
/// and silences everything else; here a bare word must be a level, and a target is
/// written `target=level`.
fn log_level(directives: &str) -> Result<(), String> {
    let valid = || format!("valid levels are {}", LEVELS.join(", "));
    if tracing_subscriber::EnvFilter::try_new(directives).is_err() {
        return Err(format!(
            "{directives:?} is not a tracing filter; write a level (e.g. \"info\") or \
             comma-separated target=level directives (e.g. \"info,roomcast::room=debug\"); {}",
            valid()
        ));
    }
    for directive in directives.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            // `target[span]` or `a::b` without a level: name a target on purpose.
            None if directive.contains("::") || directive.contains('[') => continue,
            None => directive,
        };
        if !LEVELS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(level.trim()))
        {
            return Err(format!(
                "{level:?} (in {directives:?}) names no level; {}, alone or as \
                 target=level (e.g. \"info,roomcast::room=debug\")",
                valid()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_must_name_a_level() {
        for ok in [
            "info",
            "WARN",
            "info,roomcast::room=debug",
            "roomcast=trace",
            "roomcast::server",
            "off",
        ] {
            assert!(log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "info,roomcast=loud", "roomcast"] {
            let err = log_level(bad).unwrap_err();
            assert!(
                err.contains("off, error, warn, info, debug, trace"),
                "{err}"
            );
        }
    }

    #[test]
    fn overlapping_listeners() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(addr("127.0.0.1:8080"), addr("127.0.0.1:8080")));
        assert!(overlaps(addr("0.0.0.0:8080"), addr("127.0.0.1:8080")));
        assert!(overlaps(addr("127.0.0.1:8080"), addr("[::]:8080")));
        assert!(!overlaps(addr("127.0.0.1:8080"), addr("127.0.0.2:8080")));
        assert!(!overlaps(addr("0.0.0.0:9100"), addr("0.0.0.0:8080")));
        assert!(!overlaps(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }
}
