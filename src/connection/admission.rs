//! Abuse limits of the WebSocket endpoint: how many connections an instance and one
//! user hold, and how fast one principal may publish.

use crate::auth::Principal;
use crate::config::Config;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The instance holds `connection.max_connections`.
    InstanceFull,
    /// The user holds `connection.max_connections_per_user` here.
    UserLimit,
}

/// Connection counts of the instance, per user too.
pub struct Admissions {
    total: AtomicUsize,
    per_user: DashMap<Box<str>, usize>,
    max_total: usize,
    max_per_user: usize,
}

/// One admitted connection's place; released when dropped.
pub struct Admission {
    admissions: Arc<Admissions>,
    /// The principal's key when it is counted per user (users and services).
    user: Option<Box<str>>,
}

impl Admissions {
    /// Counts with the configured bounds.
    pub fn new(config: &Config) -> Arc<Admissions> {
        Arc::new(Admissions {
            total: AtomicUsize::new(0),
            per_user: DashMap::new(),
            max_total: config.connection.max_connections,
            max_per_user: config.connection.max_connections_per_user,
        })
    }

    /// Takes a place for a connection of `principal`, or says why there is none.
    /// Anonymous clients count against the instance only (they exist on loopback or on
    /// servers opened on purpose; see `auth.mode`).
    pub fn admit(self: &Arc<Self>, principal: &Principal) -> Result<Admission, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::InstanceFull);
        }
        let user = match principal {
            Principal::Anonymous => None,
            _ => Some(principal.key().into_boxed_str()),
        };
        if let Some(user) = &user {
            let mut count = self.per_user.entry(user.clone()).or_insert(0);
            if self.max_per_user > 0 && *count >= self.max_per_user {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::UserLimit);
            }
            *count += 1;
        }
        Ok(Admission {
            admissions: self.clone(),
            user,
        })
    }
}

impl Admission {
    /// The principal key this connection counts against, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let admissions = &self.admissions;
        if let Some(user) = &self.user {
            admissions.per_user.remove_if_mut(user, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        admissions.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Publish rate per principal (a user, a service, or the client address of an anonymous
/// client), shared by all its connections on this instance.
pub struct PublishLimiter {
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
}

impl PublishLimiter {
    /// A limiter with `rate_limits.ws_publishes_per_second` and `ws_publish_burst`.
    pub fn new(config: &Config) -> PublishLimiter {
        let limits = &config.rate_limits;
        let burst = NonZeroU32::new(limits.ws_publish_burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / limits.ws_publishes_per_second);
        let quota = Quota::with_period(period)
            .expect("validated: the rate is positive and finite")
            .allow_burst(burst);
        PublishLimiter {
            limiter: governor::RateLimiter::keyed(quota),
        }
    }

    /// `Ok` when `key` may publish now, else how long until it may. The key is shared
    /// with the connection, so a check allocates nothing.
    pub fn check(&self, key: &Arc<str>) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys whose buckets are full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_total: usize, max_per_user: usize) -> Config {
        let mut config = Config::defaults();
        config.connection.max_connections = max_total;
        config.connection.max_connections_per_user = max_per_user;
        config.rate_limits.ws_publishes_per_second = 1.0;
        config.rate_limits.ws_publish_burst = 2;
        config
    }

    fn user(name: &str) -> Principal {
        Principal::User {
            subject: name.into(),
            rooms: Default::default(),
            admin: false,
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn places_are_counted_per_instance_and_per_user_and_released() {
        let admissions = Admissions::new(&config(3, 2));
        let a1 = admissions.admit(&user("a")).unwrap();
        let _a2 = admissions.admit(&user("a")).unwrap();
        assert_eq!(admissions.admit(&user("a")).err(), Some(Refusal::UserLimit));
        let _b = admissions.admit(&user("b")).unwrap();
        assert_eq!(
            admissions.admit(&Principal::Anonymous).err(),
            Some(Refusal::InstanceFull)
        );
        drop(a1);
        assert!(admissions.admit(&user("a")).is_ok(), "a place was freed");
        assert_eq!(admissions.per_user.get("user:a").map(|c| *c), Some(1));
    }

    #[test]
    fn publishes_are_limited_per_key() {
        let limiter = PublishLimiter::new(&config(1, 1));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("user:a"), Arc::from("user:b"));
        assert!(limiter.check(&a).is_ok());
        assert!(limiter.check(&a).is_ok());
        let wait = limiter.check(&a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(&b).is_ok(), "keys are separate");
    }
}
