//! Checks that need more than a range: values that parse but cannot work (a log level
//! that names no level, a Redis URL without a host, `/metrics` on the listener's own
//! port), and type errors rephrased in the words of the configuration file.

use super::{Config, ConfigError};
use std::net::SocketAddr;

/// The level names `log.level` accepts, alone or after `target=`.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Runs every check of this module.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    log_level(&config.log.level).map_err(|message| ConfigError::Invalid {
        key: "log.level",
        message,
    })?;
    if config.tls.enabled() {
        config.tls.load().map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
    }
    let ca = &config.redis.tls_ca_file;
    if !ca.is_empty() {
        let pem = std::fs::read_to_string(ca).map_err(|e| ConfigError::Invalid {
            key: "redis.tls_ca_file",
            message: format!("cannot read {ca}: {e}"),
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::Invalid {
                key: "redis.tls_ca_file",
                message: format!("{ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            });
        }
    }
    if let Ok(metrics) = config.metrics.listen.parse::<SocketAddr>()
        && overlaps(metrics, config.listen)
    {
        return Err(ConfigError::Invalid {
            key: "metrics.listen",
            message: format!(
                "{metrics} is the port of `listen` ({}) on an overlapping address: give \
                 /metrics a port of its own (e.g. 0.0.0.0:9100), or leave metrics.listen \
                 empty to serve /metrics on the main listener",
                config.listen
            ),
        });
    }
    Ok(())
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

/// Rephrases a deserializer's message (`invalid type: string "x", expected u64`) in
/// the words of the configuration file: what kind of value the key takes.
pub(super) fn user_words(message: &str) -> String {
    if message.contains("socket address") {
        return format!(
            "expected an IP address and port such as 127.0.0.1:8080 or 0.0.0.0:8080 \
             (host names such as localhost are not resolved: write the address); {message}"
        );
    }
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let words = match expected.trim() {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number (such as 1 or 2.5)",
        "a boolean" => "true or false",
        "a string" => "a text in quotes",
        "a sequence" => "a list such as [\"a\", \"b\"]",
        _ => return message.to_owned(),
    };
    let found = found
        .trim_start_matches("invalid type: ")
        .trim_start_matches("invalid value: ");
    format!("expected {words}, found {found}")
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

    #[test]
    fn type_errors_in_user_words() {
        let words = user_words("invalid type: string \"soon\", expected u64");
        assert_eq!(
            words,
            "expected a whole number, 0 or more, found string \"soon\""
        );
        let words = user_words("invalid value: integer `300`, expected u8");
        assert!(words.contains("from 0 to 255"), "{words}");
        let words = user_words("invalid socket address syntax");
        assert!(words.contains("127.0.0.1:8080"), "{words}");
        let unknown = "unknown variant `xml`, expected `pretty` or `json`";
        assert_eq!(user_words(unknown), unknown);
    }
}
