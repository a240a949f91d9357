//! Cluster membership in Redis: one hash under its own hash tag (one slot in a Redis
//! Cluster), handled by one script (`members.lua`) — an announcement writes this
//! instance's record and reads every live one in the same round trip, so a new instance
//! sees the others with its first announcement. Ages use the Redis clock.

use super::keys::Keys;
use super::link::{Link, broker_error};
use crate::broker::BrokerError;
use crate::broker::membership::{Announcement, MembershipStore};
use async_trait::async_trait;
use redis::{FromRedisValue, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;

static MEMBERS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("members.lua")));

/// [`MembershipStore`] over the broker's Redis (one node or a cluster).
pub struct RedisMembership {
    link: Link,
    keys: Keys,
}

impl RedisMembership {
    /// A store on the broker's command connection and key names.
    pub fn new(link: Link, keys: Keys) -> Self {
        RedisMembership { link, keys }
    }

    async fn run(
        &self,
        op: &str,
        ttl: Duration,
        id: &str,
        record: &[u8],
    ) -> Result<Vec<Announcement>, BrokerError> {
        metrics::counter!("roomcast_broker_commands_total", "op" => "membership").increment(1);
        let mut invocation = MEMBERS.prepare_invoke();
        invocation
            .key(self.keys.members())
            .arg(op)
            .arg(ttl.as_millis() as u64)
            .arg(id)
            .arg(record);
        let mut connection = self.link.get()?;
        let reply = invocation
            .invoke_async::<Value>(&mut connection)
            .await
            .map_err(broker_error)?;
        let items: Vec<Vec<u8>> = FromRedisValue::from_redis_value(reply)
            .map_err(|_| BrokerError::Internal("unexpected membership reply".into()))?;
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(age), Some(record)) = (items.next(), items.next()) {
            let age_ms = std::str::from_utf8(&age)
                .ok()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| BrokerError::Internal("unexpected membership age".into()))?;
            out.push(Announcement { age_ms, record });
        }
        Ok(out)
    }
}

#[async_trait]
impl MembershipStore for RedisMembership {
    async fn announce(
        &self,
        id: &str,
        record: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Announcement>, BrokerError> {
        self.run("announce", ttl, id, record).await
    }

    async fn read(&self, ttl: Duration) -> Result<Vec<Announcement>, BrokerError> {
        self.run("read", ttl, "", b"").await
    }

    async fn leave(&self, id: &str) -> Result<(), BrokerError> {
        self.run("leave", Duration::ZERO, id, b"").await.map(drop)
    }
}
