//! Who may reach the server at all: the authentication mode (closed by default), the
//! browser origins allowed to call the HTTP API (CORS) and to open WebSockets.

use super::{Config, ConfigError};
use serde::{Deserialize, Deserializer};
use std::net::IpAddr;

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret.
    pub jwt_hs256_secret: String,
    /// RS256 public key file (PEM).
    pub jwt_rs256_public_key_file: String,
    /// Tolerated clock skew (s).
    pub clock_skew_secs: u64,
    /// Required issuer.
    pub jwt_issuer: String,
    /// Required audience.
    pub jwt_audience: String,
    /// `name:token,…`
    pub service_tokens: String,
    /// Whether anonymous clients are allowed on a public address.
    pub mode: AuthMode,
}

/// `auth.mode`: whether anonymous clients may reach a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anonymous clients only on a loopback listener (the default).
    Closed,
    /// Anonymous clients on any address: an explicit opt-in.
    Open,
}

/// `[cors]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins whose pages may call the HTTP API.
    pub allowed_origins: OriginList,
    /// Preflight cache lifetime (s).
    pub max_age_secs: u64,
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Origins whose pages may open `/ws`, besides the server's own.
    pub allowed_origins: OriginList,
}

/// A list of browser origins (`scheme://host[:port]`, compared case-insensitively), or
/// every origin (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginList {
    any: bool,
    origins: Vec<String>,
}

impl OriginList {
    /// Parses entries; `Err` names the first that is not an origin.
    pub fn parse(entries: &[String]) -> Result<OriginList, String> {
        let mut list = OriginList::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.any = true;
                continue;
            }
            let normalized = entry.trim_end_matches('/').to_ascii_lowercase();
            let rest = normalized
                .strip_prefix("https://")
                .or_else(|| normalized.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@']) => {
                    list.origins.push(normalized)
                }
                _ => {
                    return Err(format!(
                        "{entry:?} is not an origin; write scheme://host[:port] such as https://tracker.example.com, or \"*\""
                    ));
                }
            }
        }
        Ok(list)
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// Whether every origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether `origin` (an `Origin` header value) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}

impl<'de> Deserialize<'de> for OriginList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        OriginList::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// Addresses and CIDR ranges of the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`; `Err` names the first entry
    /// that is neither.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry, None),
            };
            let address: IpAddr = address.parse().map_err(|_| {
                format!("{entry:?} is not an address or CIDR range such as 10.0.0.0/8")
            })?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{entry:?}: the prefix length must be 0 to {max}"))?,
            };
            ranges.push((address, bits));
        }
        Ok(TrustedProxies { ranges })
    }

    /// Whether `address` is one of the trusted proxies.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.ranges
            .iter()
            .any(|&(range, bits)| match (canonical(range), address) {
                (IpAddr::V4(range), IpAddr::V4(address)) => {
                    prefix_eq(&range.octets(), &address.octets(), bits)
                }
                (IpAddr::V6(range), IpAddr::V6(address)) => {
                    prefix_eq(&range.octets(), &address.octets(), bits)
                }
                _ => false,
            })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        TrustedProxies::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// Closed by default: a server without credentials configured listens on loopback only,
/// unless `auth.mode = "open"` says anonymous access on a public address is intended.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let keys_set = !(auth.jwt_hs256_secret.is_empty()
        && auth.jwt_rs256_public_key_file.is_empty()
        && auth.service_tokens.is_empty());
    match auth.mode {
        AuthMode::Open if keys_set => Err(ConfigError::Invalid {
            key: "auth.mode",
            message: "\"open\" accepts anonymous clients and cannot be combined with \
                      auth.jwt_hs256_secret, auth.jwt_rs256_public_key_file or auth.service_tokens"
                .into(),
        }),
        AuthMode::Closed if !keys_set && !config.listen.ip().is_loopback() => {
            Err(ConfigError::Invalid {
                key: "auth.mode",
                message: format!(
                    "listen = {} is not a loopback address and no authentication is configured: \
                     set auth.jwt_hs256_secret, auth.jwt_rs256_public_key_file or auth.service_tokens \
                     (ROOMCAST_AUTH__…), or set auth.mode = \"open\" (ROOMCAST_AUTH__MODE=open) to \
                     let anonymous clients in on purpose",
                    config.listen
                ),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<OriginList, String> {
        OriginList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn origins_are_matched_exactly_and_case_insensitively() {
        let origins = list(&["https://Tracker.example.com/", "http://127.0.0.1:5173"]).unwrap();
        assert!(origins.allows("https://tracker.example.com"));
        assert!(origins.allows("http://127.0.0.1:5173"));
        assert!(!origins.allows("http://127.0.0.1:5174"));
        assert!(!origins.allows("https://tracker.example.com.evil.test"));
        assert!(!origins.allows("null"));
        assert!(list(&["*"]).unwrap().allows("null"));
        assert!(list(&[]).unwrap().is_empty());
    }

    #[test]
    fn trusted_proxies_match_addresses_and_ranges() {
        let parse = |entries: &[&str]| {
            TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
        };
        let proxies = parse(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]).unwrap();
        for (address, trusted) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:10.9.9.9", true),
        ] {
            assert_eq!(
                proxies.contains(address.parse().unwrap()),
                trusted,
                "{address}"
            );
        }
        assert!(
            parse(&["172.16.0.0/12"])
                .unwrap()
                .contains("172.31.255.255".parse().unwrap())
        );
        assert!(
            !parse(&["172.16.0.0/12"])
                .unwrap()
                .contains("172.32.0.0".parse().unwrap())
        );
        for bad in ["proxy.local", "10.0.0.0/33", "10.0.0.0/x"] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in ["tracker.example.com", "https://a/b", "ftp://a", "https://"] {
            assert!(list(&[bad]).is_err(), "{bad}");
        }
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_public_address_without_authentication_is_refused() {
        let err = load(&[("ROOMCAST_LISTEN", "0.0.0.0:8080")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.mode"), "{err}");
        assert!(err.contains("auth.jwt_hs256_secret"), "{err}");
        assert!(err.contains("ROOMCAST_AUTH__MODE=open"), "{err}");
        assert!(
            load(&[
                ("ROOMCAST_LISTEN", "0.0.0.0:8080"),
                ("ROOMCAST_AUTH__MODE", "open")
            ])
            .is_ok()
        );
        assert!(
            load(&[
                ("ROOMCAST_LISTEN", "0.0.0.0:8080"),
                ("ROOMCAST_AUTH__JWT_HS256_SECRET", "s3cret")
            ])
            .is_ok()
        );
        assert!(load(&[("ROOMCAST_LISTEN", "[::1]:8080")]).is_ok());
        let both = load(&[
            ("ROOMCAST_AUTH__MODE", "open"),
            ("ROOMCAST_AUTH__JWT_HS256_SECRET", "s3cret"),
        ])
        .unwrap_err()
        .to_string();
        assert!(both.contains("auth.mode"), "{both}");
    }

    #[test]
    fn origin_lists_come_from_the_environment_comma_separated() {
        let config = load(&[(
            "ROOMCAST_CORS__ALLOWED_ORIGINS",
            "http://a.test:8000, https://b.test",
        )])
        .unwrap();
        assert!(config.cors.allowed_origins.allows("https://b.test"));
        assert!(config.cors.allowed_origins.allows("http://a.test:8000"));
        let err = load(&[("ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS", "b.test")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("websocket.allowed_origins"), "{err}");
    }
}
