//! Token buckets per principal and request class. Mutations have their own, smaller
//! bucket, so that reads cannot starve writes and a burst of writes cannot starve reads.

use crate::auth::Principal;
use crate::config::RateLimitConfig;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Reads (GET, HEAD) or mutations (everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET and HEAD.
    Read,
    /// POST, PATCH, PUT, DELETE.
    Write,
}

/// Rate and burst of one bucket kind.
#[derive(Debug, Clone, Copy)]
struct Tier {
    per_second: f64,
    burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
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

/// All buckets of the instance.
pub struct RateLimiter {
    buckets: DashMap<(String, Class), Bucket>,
    user: [Tier; 2],
    service: [Tier; 2],
}

impl RateLimiter {
    /// Buckets with the configured tiers.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiter {
            buckets: DashMap::new(),
            user: [
                Tier {
                    per_second: config.user_reads_per_second,
                    burst: config.user_read_burst,
                },
                Tier {
                    per_second: config.user_writes_per_second,
                    burst: config.user_write_burst,
                },
            ],
            service: [
                Tier {
                    per_second: config.service_reads_per_second,
                    burst: config.service_read_burst,
                },
                Tier {
                    per_second: config.service_writes_per_second,
                    burst: config.service_write_burst,
                },
            ],
        }
    }

    /// Takes one token from the bucket of `key` (the principal, or the client address for
    /// anonymous callers) for a request of `class`.
    pub fn check(&self, principal: &Principal, key: &str, class: Class) -> Decision {
        self.check_at(principal, key, class, Instant::now())
    }

    fn check_at(&self, principal: &Principal, key: &str, class: Class, now: Instant) -> Decision {
        let tiers = match principal {
            Principal::Service { .. } => &self.service,
            _ => &self.user,
        };
        let tier = tiers[match class {
            Class::Read => 0,
            Class::Write => 1,
        }];
        let burst = f64::from(tier.burst);
        let mut bucket = self
            .buckets
            .entry((key.to_owned(), class))
            .or_insert_with(|| Bucket {
                tokens: burst,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * tier.per_second).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let tokens = bucket.tokens;
        Decision {
            allowed,
            limit: tier.burst,
            remaining: tokens.floor() as u32,
            reset_secs: ((burst - tokens) / tier.per_second).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - tokens) / tier.per_second).ceil().max(1.0) as u64
            },
        }
    }

    /// Forgets buckets idle for `idle` (they would be full again anyway).
    pub fn forget_idle(&self, idle: Duration) {
        let now = Instant::now();
        self.buckets
            .retain(|_, bucket| now.duration_since(bucket.updated) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
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
        })
    }

    #[test]
    fn bursts_then_refuses_then_refills() {
        let limiter = limiter();
        let user = Principal::Anonymous;
        let start = Instant::now();
        let first = limiter.check_at(&user, "a", Class::Read, start);
        assert!(first.allowed);
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert!(limiter.check_at(&user, "a", Class::Read, start).allowed);
        let refused = limiter.check_at(&user, "a", Class::Read, start);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 2);
        assert!(
            limiter
                .check_at(&user, "a", Class::Read, start + Duration::from_secs(1))
                .allowed
        );
    }

    #[test]
    fn classes_and_keys_are_separate() {
        let limiter = limiter();
        let user = Principal::Anonymous;
        let now = Instant::now();
        assert!(limiter.check_at(&user, "a", Class::Write, now).allowed);
        assert!(
            !limiter.check_at(&user, "a", Class::Write, now).allowed,
            "writes are stricter"
        );
        assert!(
            limiter.check_at(&user, "a", Class::Read, now).allowed,
            "reads have their own bucket"
        );
        assert!(
            limiter.check_at(&user, "b", Class::Write, now).allowed,
            "other callers too"
        );
        let service = Principal::Service { name: "s".into() };
        for _ in 0..50 {
            assert!(
                limiter
                    .check_at(&service, "service:s", Class::Write, now)
                    .allowed
            );
        }
    }
}
