//! Token buckets per principal and request class. Mutations have their own, smaller
//! bucket, so that reads cannot starve writes and a burst of writes cannot starve reads.
//! The buckets are `governor`'s (GCRA, the token bucket's arithmetic on one timestamp
//! per key); this module maps its answers to the `X-RateLimit-*` headers.

use super::ApiError;
use crate::auth::{AuthError, Authenticator, Principal};
use crate::config::RateLimitConfig;
use crate::response::Body;
use dashmap::DashMap;
use governor::Quota;
use governor::clock::Reference;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Reads (GET, HEAD) or mutations (everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET and HEAD.
    Read,
    /// POST, PATCH, PUT, DELETE.
    Write,
}

/// What a request may do, and the headers that say so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `X-RateLimit-Limit`: the burst size.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: whole requests left right now.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After` when refused: seconds until one request is allowed.
    pub retry_after_secs: u64,
}

impl Decision {
    fn new(
        allowed: bool,
        quota: Quota,
        remaining: u32,
        full_in: Duration,
        retry_in: Duration,
    ) -> Decision {
        Decision {
            allowed,
            limit: quota.burst_size().get(),
            remaining,
            reset_secs: full_in.as_secs_f64().ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                retry_in.as_secs_f64().ceil().max(1.0) as u64
            },
        }
    }

    /// The `X-RateLimit-*` (and, when refused, `Retry-After`) headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ];
        if !self.allowed {
            headers.push(("retry-after", self.retry_after_secs.to_string()));
        }
        headers
    }
}

/// The buckets of one tier (users or services) and class, keyed by caller.
type Buckets<C> =
    governor::RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// All buckets of the instance.
pub struct RateLimiter<C: Clock = DefaultClock> {
    /// Users' reads, users' mutations.
    user: [Buckets<C>; 2],
    /// Services' reads, services' mutations.
    service: [Buckets<C>; 2],
    /// Client addresses that spent their budget of failed authentications, and until
    /// when: every attempt from them is refused before its credentials are checked, so a
    /// guess made while refused can never succeed.
    locked: DashMap<IpAddr, C::Instant>,
    clock: C,
}

/// Why [`RateLimiter::authenticate`] refused.
#[derive(Debug)]
pub enum Refused {
    /// The credentials did not authenticate.
    Invalid(AuthError),
    /// The client address spent its budget of failed attempts: retry after this many
    /// seconds.
    Throttled(u64),
}

impl Refused {
    /// The answer on every entry point (the API, `/ws`, `/sse`, the console's sign-in):
    /// 401 for credentials that did not authenticate, 429 with `Retry-After` for an
    /// address that spent its budget of failed attempts; counted by `endpoint`.
    pub fn into_response(self, endpoint: &'static str) -> Response<Body> {
        metrics::counter!("roomcast_auth_failures_total", "endpoint" => endpoint).increment(1);
        let error = match self {
            Refused::Invalid(err) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string())
                    .with_header("www-authenticate", "Bearer")
            }
            Refused::Throttled(retry_after) => {
                metrics::counter!("roomcast_auth_failures_throttled_total", "endpoint" => endpoint)
                    .increment(1);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many failed attempts; slow down",
                )
                .with_header("retry-after", retry_after.to_string())
            }
        };
        error.into_response()
    }
}

impl RateLimiter {
    /// Buckets with the configured tiers.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiter::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let buckets = |per_second: f64, burst: u32| {
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))
                .expect("validated: the rate is positive and finite")
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            governor::RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>()
        };
        RateLimiter {
            user: [
                buckets(config.user_reads_per_second, config.user_read_burst),
                buckets(config.user_writes_per_second, config.user_write_burst),
            ],
            service: [
                buckets(config.service_reads_per_second, config.service_read_burst),
                buckets(config.service_writes_per_second, config.service_write_burst),
            ],
            locked: DashMap::new(),
            clock,
        }
    }

    /// Authenticates `token` from `client` under the address's budget of failed
    /// attempts (the write budget of anonymous callers): guessing tokens is throttled
    /// alike on every entry point — the API, `/ws`, `/sse` and the console's sign-in.
    /// Once the budget is spent, the address's attempts are refused unchecked until a
    /// failure would be allowed again (a second or so at the default rate); successes
    /// spend nothing.
    pub fn authenticate(
        &self,
        auth: &Authenticator,
        client: IpAddr,
        token: Option<&str>,
    ) -> Result<Principal, Refused> {
        if let Some(retry_after) = self.locked_out(client) {
            return Err(Refused::Throttled(retry_after));
        }
        auth.authenticate(token).map_err(|err| {
            let decision = self.check(
                &Principal::Anonymous,
                &format!("auth:{client}"),
                Class::Write,
            );
            if decision.allowed {
                Refused::Invalid(err)
            } else {
                let until =
                    self.clock.now() + Nanos::from(Duration::from_secs(decision.retry_after_secs));
                self.locked.insert(client, until);
                Refused::Throttled(decision.retry_after_secs)
            }
        })
    }

    /// Seconds until `client` may try credentials again, while it may not.
    fn locked_out(&self, client: IpAddr) -> Option<u64> {
        let until = *self.locked.get(&client)?;
        let now = self.clock.now();
        if until <= now {
            self.locked.remove_if(&client, |_, until| *until <= now);
            return None;
        }
        let wait = Duration::from_nanos(until.duration_since(now).as_u64());
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Takes one token from the bucket of `key` (the principal, or the client address for
    /// anonymous callers) for a request of `class`.
    pub fn check(&self, principal: &Principal, key: &str, class: Class) -> Decision {
        let tier = match principal {
            Principal::Service { .. } => &self.service,
            _ => &self.user,
        };
        let buckets = &tier[match class {
            Class::Read => 0,
            Class::Write => 1,
        }];
        match buckets.check_key(&key.to_owned()) {
            Ok(state) => {
                let quota = state.quota();
                let remaining = state.remaining_burst_capacity();
                let empty = quota.burst_size().get() - remaining;
                // GCRA tells whole tokens only: the bucket is full again at the latest
                // when the missing ones have come back.
                Decision::new(
                    true,
                    quota,
                    remaining,
                    quota.replenish_interval() * empty,
                    Duration::ZERO,
                )
            }
            Err(refused) => {
                let quota = refused.quota();
                let wait = refused.wait_time_from(self.clock.now());
                let missing = quota.burst_size().get() - 1;
                Decision::new(
                    false,
                    quota,
                    0,
                    wait + quota.replenish_interval() * missing,
                    wait,
                )
            }
        }
    }

    /// Forgets buckets that are full again (they would start full anyway).
    pub fn forget_idle(&self) {
        for buckets in self.user.iter().chain(&self.service) {
            buckets.retain_recent();
        }
        let now = self.clock.now();
        self.locked.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter() -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let config = RateLimitConfig {
            user_reads_per_second: 1.0,
            user_read_burst: 2,
            user_writes_per_second: 0.5,
            user_write_burst: 1,
            service_reads_per_second: 100.0,
            service_read_burst: 100,
            service_writes_per_second: 100.0,
            service_write_burst: 100,
            ws_publishes_per_second: 1.0,
            ws_publish_burst: 1,
        };
        (RateLimiter::with_clock(&config, clock.clone()), clock)
    }

    #[test]
    fn bursts_then_refuses_then_refills() {
        let (limiter, clock) = limiter();
        let user = Principal::Anonymous;
        let first = limiter.check(&user, "a", Class::Read);
        assert!(first.allowed);
        assert_eq!((first.limit, first.remaining, first.reset_secs), (2, 1, 1));
        assert!(limiter.check(&user, "a", Class::Read).allowed);
        let refused = limiter.check(&user, "a", Class::Read);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 2);
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&user, "a", Class::Read).allowed);
    }

    #[test]
    fn classes_and_keys_are_separate() {
        let (limiter, _clock) = limiter();
        let user = Principal::Anonymous;
        assert!(limiter.check(&user, "a", Class::Write).allowed);
        assert!(
            !limiter.check(&user, "a", Class::Write).allowed,
            "writes are stricter"
        );
        assert!(
            limiter.check(&user, "a", Class::Read).allowed,
            "reads have their own bucket"
        );
        assert!(
            limiter.check(&user, "b", Class::Write).allowed,
            "other callers too"
        );
        let service = Principal::Service { name: "s".into() };
        for _ in 0..50 {
            assert!(limiter.check(&service, "service:s", Class::Write).allowed);
        }
    }

    /// A service with a token, and nothing else configured.
    fn authenticator() -> Authenticator {
        let config = crate::config::AuthConfig {
            jwt_hs256_secret: String::new(),
            jwt_rs256_public_key_file: String::new(),
            clock_skew_secs: 0,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            service_tokens: "billing:0123456789abcdef0123".into(),
            mode: crate::config::AuthMode::Closed,
        };
        Authenticator::from_config(&config).expect("valid")
    }

    #[test]
    fn an_address_that_spent_its_failed_attempts_is_refused_even_the_right_token() {
        let (limiter, clock) = limiter();
        let auth = authenticator();
        let (guesser, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let right = Some("0123456789abcdef0123");
        // Burst 1: the first wrong guess is answered as such, the second is throttled.
        assert!(matches!(
            limiter.authenticate(&auth, guesser, Some("guess")),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            limiter.authenticate(&auth, guesser, Some("guess")),
            Err(Refused::Throttled(2))
        ));
        // While throttled, a right guess is refused unchecked: throttling limits guesses,
        // not only their answers. Other addresses are not affected.
        assert!(matches!(
            limiter.authenticate(&auth, guesser, right),
            Err(Refused::Throttled(_))
        ));
        assert!(limiter.authenticate(&auth, other, right).is_ok());
        // Once a failure would be allowed again, the address may try again; successes
        // spend nothing.
        clock.advance(Duration::from_secs(2));
        assert!(limiter.authenticate(&auth, guesser, right).is_ok());
        assert!(limiter.authenticate(&auth, guesser, right).is_ok());
        limiter.forget_idle();
        assert!(limiter.locked.is_empty());
    }
}
