//! `roomcast config`: the effective configuration (every layer applied) as TOML, with
//! secrets replaced by `<redacted>` so that the output can be pasted into a ticket.

use super::{Config, ConfigError, layers};
use std::path::Path;
use toml::{Table, Value};

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration from the same layers as [`Config::load`] (which it
    /// runs first, so an invalid configuration is refused the same way), as TOML with
    /// secrets redacted.
    pub fn effective_toml(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        Config::load(file, env.clone())?;
        let mut table = layers::merged(file, env)?;
        redact_table(&mut table, "");
        Ok(toml::to_string_pretty(&table).expect("a TOML table renders"))
    }
}

fn redact_table(table: &mut Table, prefix: &str) {
    for (key, value) in table.iter_mut() {
        let path = format!("{prefix}{key}");
        match value {
            Value::Table(inner) => redact_table(inner, &format!("{path}.")),
            Value::String(text) => *text = redact_value(&path, text),
            _ => {}
        }
    }
}

/// `value` of key `path` with its secrets replaced.
fn redact_value(path: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    match path {
        "auth.jwt_hs256_secret" => REDACTED.to_owned(),
        // name:token pairs: the names help, the tokens are secrets.
        "auth.service_tokens" => value
            .split(',')
            .map(|pair| match pair.split_once(':') {
                Some((name, _)) => format!("{}:{REDACTED}", name.trim()),
                None => REDACTED.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ if value.contains("://") => redact_url(value),
        _ => value.to_owned(),
    }
}

/// A URL (or a `redis-cluster://` list of nodes) without the passwords in its user
/// information (`user:password@`, `:password@`) or in a `password=` (or
/// `sentinel_password=`) query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let nodes: Vec<String> = authority
        .split(',')
        .map(|node| match node.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
                // Redis reads a lone user-information part as a password.
                None if scheme.starts_with("redis") => format!("{REDACTED}@{host}"),
                None => node.to_owned(),
            },
            None => node.to_owned(),
        })
        .collect();
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // `password=`, and `sentinel_password=` of a Sentinel URL.
                    Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{}{tail}", nodes.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/roomcast?sslmode=require"),
            "postgres://app:<redacted>@db:5432/roomcast?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/roomcast?password=s3cret&sslmode=verify-full"),
            "postgres://app@db/roomcast?password=<redacted>&sslmode=verify-full"
        );
        assert_eq!(
            redact_url("redis://:s3cret@redis:6379/0"),
            "redis://:<redacted>@redis:6379/0"
        );
        assert_eq!(
            redact_url("redis-cluster://u:s3cret@a:7000,b:7001"),
            "redis-cluster://u:<redacted>@a:7000,b:7001"
        );
        assert_eq!(
            redact_url("redis-sentinel://:s3cret@a,b:26380/main?db=1&sentinel_password=p4ss"),
            "redis-sentinel://:<redacted>@a,b:26380/main?db=1&sentinel_password=<redacted>"
        );
        assert_eq!(
            redact_url("sqlite://roomcast.db?mode=rwc"),
            "sqlite://roomcast.db?mode=rwc"
        );
    }

    #[test]
    fn the_effective_configuration_hides_every_secret() {
        let env = [
            ("ROOMCAST_AUTH__JWT_HS256_SECRET", "hs-secret-value"),
            (
                "ROOMCAST_AUTH__SERVICE_TOKENS",
                "tracker:tracker-token-0123456789,ci:ci-token-0123456789ab",
            ),
            ("ROOMCAST_REDIS_URL", "redis://:redis-pass@127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://app:db-pass@127.0.0.1:5432/rc"),
            ("ROOMCAST_CONNECTION__MAX_ROOMS", "7"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let text = Config::effective_toml(None, env).unwrap();
        for secret in [
            "hs-secret-value",
            "tracker-token",
            "ci-token",
            "redis-pass",
            "db-pass",
        ] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(text.contains("max_rooms = 7"), "{text}");
        assert!(text.contains("tracker:<redacted>,ci:<redacted>"), "{text}");
        assert!(
            text.contains("postgres://app:<redacted>@127.0.0.1:5432/rc"),
            "{text}"
        );
        let parsed: Table = text.parse().expect("the output is TOML");
        assert!(parsed.contains_key("history"));
    }
}
