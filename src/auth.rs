//! Who is asking: users with a JWT (HS256 or RS256), services with a service token, or,
//! when no authentication is configured, anonymous clients. The same principal is used
//! by the HTTP API and the WebSocket endpoint; a user's JWT may restrict the rooms it
//! may subscribe and publish to.

use crate::config::AuthConfig;
use crate::tracker::Actor;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No authentication is configured.
    Anonymous,
    /// A user, from a JWT.
    User {
        /// The `sub` claim.
        subject: String,
        /// Rooms the token allows.
        rooms: RoomGrants,
        /// Whether the token's `roles` claim holds `"admin"` (a global administrator).
        admin: bool,
        /// The token's `exp` claim (seconds since the Unix epoch).
        expires_at: u64,
    },
    /// A backend service, from a service token.
    Service {
        /// The service's configured name.
        name: String,
    },
}

/// Room patterns a user's token grants, matched segment by segment (see
/// [`pattern_matches`]). A missing list grants no room: rooms of the issue tracker
/// (`project:{id}`, `issue:{id}`) are granted by project membership instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RoomGrants {
    /// Rooms the user may subscribe to (and read the history of).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Rooms the user may publish to.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
}

/// The claims roomcast reads from a user JWT (`exp` is checked by the library).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    rooms: Option<RoomGrants>,
    #[serde(default)]
    roles: Vec<String>,
}

/// The role in a token's `roles` claim that makes a user a global administrator.
pub const ADMIN_ROLE: &str = "admin";

/// Whether a room pattern matches a room name. Both are split at `:`; the pattern must
/// have as many segments as the name, and each pattern segment is either `*` (any one
/// segment) or equal to the name's segment. A last pattern segment `**` matches one or
/// more remaining segments. So `project:1` matches only `project:1` (not `project:10`),
/// `issue:*` matches `issue:42` but not `issue:42:comments`, and `team:**` matches both
/// `team:a` and `team:a:b`.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    let mut names = room.split(':');
    let mut patterns = pattern.split(':').peekable();
    while let Some(segment) = patterns.next() {
        if segment == "**" && patterns.peek().is_none() {
            return names.next().is_some();
        }
        match names.next() {
            Some(name) if segment == "*" || segment == name => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

fn allows(patterns: &Option<Vec<String>>, room: &str) -> bool {
    patterns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|pattern| pattern_matches(pattern, room))
}

impl Principal {
    /// Whether the principal acts with every right: a global administrator, a backend
    /// service, or anyone on an open (unauthenticated) server.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::User { admin, .. } => *admin,
            Principal::Anonymous | Principal::Service { .. } => true,
        }
    }

    /// Whether the principal's token grants subscribing to (or reading) `room`.
    pub fn may_subscribe(&self, room: &str) -> bool {
        match self {
            Principal::User { rooms, admin, .. } => *admin || allows(&rooms.subscribe, room),
            Principal::Anonymous | Principal::Service { .. } => true,
        }
    }

    /// Whether the principal's token grants publishing to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        match self {
            Principal::User { rooms, admin, .. } => *admin || allows(&rooms.publish, room),
            Principal::Anonymous | Principal::Service { .. } => true,
        }
    }

    /// The actor recorded in audit entries and events.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Anonymous => Actor {
                name: "anonymous".into(),
                kind: "anonymous",
            },
            Principal::User { subject, .. } => Actor {
                name: subject.clone(),
                kind: "user",
            },
            Principal::Service { name } => Actor {
                name: name.clone(),
                kind: "service",
            },
        }
    }

    /// The broker idempotency key for a publish this principal made with `key`. Client
    /// keys live in their own namespace (`client:{principal}:{key}`): no client can
    /// take a key the outbox relay will use (`outbox:…`), nor another principal's.
    pub fn publish_key(&self, key: &str) -> String {
        let mut name = String::from("client:");
        name.push_str(&self.key());
        name.push(':');
        name.push_str(key);
        name
    }

    /// A stable key for rate limits and idempotency records.
    pub fn key(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { subject, .. } => format!("user:{subject}"),
            Principal::Service { name } => format!("service:{name}"),
        }
    }
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, and authentication is required.
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    Missing,
    /// Credentials that do not check out.
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// A configuration of authentication that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth.{key}: {message}")]
pub struct AuthConfigError {
    /// The key (under `[auth]`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Verifies credentials.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    /// SHA-256 of each service token → service name (a lookup does not compare the
    /// token itself byte by byte).
    services: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints keys or tokens.
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("services", &self.services.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    /// Builds the authenticator from `[auth]`.
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, AuthConfigError> {
        let hs256 = (!config.jwt_hs256_secret.is_empty())
            .then(|| DecodingKey::from_secret(config.jwt_hs256_secret.as_bytes()));
        let rs256 = if config.jwt_rs256_public_key_file.is_empty() {
            None
        } else {
            let pem =
                std::fs::read(&config.jwt_rs256_public_key_file).map_err(|e| AuthConfigError {
                    key: "jwt_rs256_public_key_file",
                    message: format!("cannot read {}: {e}", config.jwt_rs256_public_key_file),
                })?;
            Some(
                DecodingKey::from_rsa_pem(&pem).map_err(|e| AuthConfigError {
                    key: "jwt_rs256_public_key_file",
                    message: format!("not an RSA public key in PEM: {e}"),
                })?,
            )
        };
        let mut services = HashMap::new();
        for entry in config
            .service_tokens
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((name, token)) = entry.split_once(':') else {
                return Err(AuthConfigError {
                    key: "service_tokens",
                    message: "expected name:token[,name:token…]".into(),
                });
            };
            if name.is_empty() || token.len() < 16 {
                return Err(AuthConfigError {
                    key: "service_tokens",
                    message: format!(
                        "service {name:?}: names must be non-empty and tokens at least 16 characters"
                    ),
                });
            }
            services.insert(digest(token), name.to_owned());
        }
        Ok(Authenticator {
            hs256,
            rs256,
            issuer: (!config.jwt_issuer.is_empty()).then(|| config.jwt_issuer.clone()),
            audience: (!config.jwt_audience.is_empty()).then(|| config.jwt_audience.clone()),
            leeway_secs: config.clock_skew_secs,
            services,
        })
    }

    /// When a token that expires at `exp` stops being accepted (the tolerated clock
    /// skew added), in seconds since the Unix epoch.
    pub fn valid_until(&self, exp: u64) -> u64 {
        exp.saturating_add(self.leeway_secs)
    }

    /// True when nothing is configured: every caller is anonymous.
    pub fn is_open(&self) -> bool {
        self.hs256.is_none() && self.rs256.is_none() && self.services.is_empty()
    }

    /// The principal for a bearer token (`None`: no credentials were sent).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::Anonymous);
        }
        let token = token.ok_or(AuthError::Missing)?;
        if let Some(name) = self.services.get(&digest(token)) {
            return Ok(Principal::Service { name: name.clone() });
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| AuthError::Invalid(format!("{:?} tokens are not accepted", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        Ok(Principal::User {
            admin: claims.roles.iter().any(|role| role == ADMIN_ROLE),
            subject: claims.sub,
            rooms: claims.rooms.unwrap_or_default(),
            expires_at: claims.exp,
        })
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn config(secret: &str, services: &str) -> AuthConfig {
        AuthConfig {
            jwt_hs256_secret: secret.into(),
            jwt_rs256_public_key_file: String::new(),
            clock_skew_secs: 30,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            service_tokens: services.into(),
            mode: crate::config::AuthMode::Closed,
        }
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn open_when_nothing_is_configured() {
        let auth = Authenticator::from_config(&config("", "")).unwrap();
        assert!(auth.is_open());
        assert_eq!(auth.authenticate(None), Ok(Principal::Anonymous));
    }

    #[test]
    fn users_services_and_refusals() {
        let auth =
            Authenticator::from_config(&config("s3cret", "billing:0123456789abcdef")).unwrap();
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("0123456789abcdef")),
            Ok(Principal::Service {
                name: "billing".into()
            })
        );
        let user = auth
            .authenticate(Some(&token(
                "s3cret",
                json!({"sub": "alice", "exp": exp()}),
            )))
            .unwrap();
        assert_eq!(user.actor().name, "alice");
        assert!(
            !user.may_publish("anything"),
            "no rooms claim grants no room"
        );
        assert!(!user.is_admin());
        assert!(matches!(
            auth.authenticate(Some(&token("wrong", json!({"sub": "alice", "exp": exp()})))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.authenticate(Some(&token("s3cret", json!({"sub": "alice", "exp": 1000})))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("garbage")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let mut with_claims = config("s3cret", "");
        with_claims.jwt_issuer = "https://issuer.example".into();
        with_claims.jwt_audience = "roomcast".into();
        let auth = Authenticator::from_config(&with_claims).unwrap();
        let good =
            json!({"sub": "a", "exp": exp(), "iss": "https://issuer.example", "aud": "roomcast"});
        assert!(auth.authenticate(Some(&token("s3cret", good))).is_ok());
        for missing in ["iss", "aud"] {
            let mut claims = json!({"sub": "a", "exp": exp(), "iss": "https://issuer.example", "aud": "roomcast"});
            claims.as_object_mut().unwrap().remove(missing);
            assert!(
                auth.authenticate(Some(&token("s3cret", claims))).is_err(),
                "{missing} is required"
            );
        }
    }

    #[test]
    fn client_publish_keys_cannot_collide_with_relay_keys() {
        let key = Principal::Anonymous.publish_key("outbox:1:project:1");
        assert_eq!(key, "client:anonymous:outbox:1:project:1");
        // The layout is what Redis holds records under: it must not change.
        assert_eq!(
            Principal::Service { name: "a".into() }.publish_key("k"),
            "client:service:a:k"
        );
        assert_ne!(
            Principal::Service { name: "a".into() }.publish_key("k"),
            Principal::Service { name: "b".into() }.publish_key("k")
        );
    }

    #[test]
    fn room_claims_restrict_rooms() {
        let auth = Authenticator::from_config(&config("s3cret", "")).unwrap();
        let claims = json!({"sub": "bob", "exp": exp(), "rooms": {"subscribe": ["project:7", "issue:*"], "publish": []}});
        let user = auth.authenticate(Some(&token("s3cret", claims))).unwrap();
        assert!(user.may_subscribe("project:7"));
        assert!(user.may_subscribe("issue:42"));
        assert!(!user.may_subscribe("project:8"));
        assert!(!user.may_publish("project:7"));
    }

    proptest::proptest! {
        /// Arbitrary credentials and JWT-shaped strings are refused, never a panic and
        /// never a principal. Longer run: `PROPTEST_CASES=200000 cargo test --lib auth`.
        #[test]
        fn arbitrary_tokens_are_refused(
            token in "[A-Za-z0-9_.=-]{0,200}",
            jwt_like in "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
        ) {
            let auth = Authenticator::from_config(&config("s3cret", "svc:0123456789abcdef")).unwrap();
            for candidate in [&token, &jwt_like] {
                let refused = auth.authenticate(Some(candidate)).is_err();
                proptest::prop_assert!(refused || candidate == "0123456789abcdef");
            }
        }

        #[test]
        fn arbitrary_patterns_and_rooms_never_panic(pattern in "[a-z*:]{0,24}", room in "[a-z:]{0,24}") {
            let _ = pattern_matches(&pattern, &room);
        }
    }

    #[test]
    fn patterns_match_whole_segments() {
        assert!(pattern_matches("project:1", "project:1"));
        assert!(!pattern_matches("project:1", "project:10"));
        assert!(
            !pattern_matches("project:1*", "project:10"),
            "no raw prefixes"
        );
        assert!(pattern_matches("project:*", "project:10"));
        assert!(!pattern_matches("project:*", "project"));
        assert!(!pattern_matches("project:*", "project:1:comments"));
        assert!(pattern_matches("*:1", "issue:1"));
        assert!(pattern_matches("team:**", "team:a"));
        assert!(pattern_matches("team:**", "team:a:b"));
        assert!(!pattern_matches("team:**", "team"));
        assert!(!pattern_matches("team:**", "teams:a"));
        assert!(!pattern_matches("", "a"));
    }

    #[test]
    fn admin_role_grants_every_room() {
        let auth = Authenticator::from_config(&config("s3cret", "")).unwrap();
        let claims = json!({"sub": "root", "exp": exp(), "roles": ["admin"]});
        let admin = auth.authenticate(Some(&token("s3cret", claims))).unwrap();
        assert!(admin.is_admin());
        assert!(admin.may_subscribe("anything:at:all"));
        assert!(admin.may_publish("x"));
    }

    #[test]
    fn bad_service_token_config_names_the_key() {
        let err = Authenticator::from_config(&config("", "nocolon")).unwrap_err();
        assert_eq!(err.key, "service_tokens");
        assert!(Authenticator::from_config(&config("", "svc:short")).is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
