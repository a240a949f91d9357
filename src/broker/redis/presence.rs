//! Presence sets in Redis: per room a hash of entries, a sorted set of their expiry
//! times, a hash of per-user counts and a version, all under the room's hash tag and
//! all handled by one script (`presence.lua`) — one round trip per operation.
//! Expiry uses the Redis clock, so instances' clocks do not matter.

use super::keys::Keys;
use super::link::{Link, broker_error};
use crate::broker::BrokerError;
use crate::broker::presence::{PresenceStats, PresenceStore, Snapshot};
use crate::protocol::PresenceEntry;
use crate::protocol::RoomName;
use async_trait::async_trait;
use redis::{FromRedisValue, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;

static PRESENCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("presence.lua")));

/// [`PresenceStore`] over the broker's Redis (one node or a cluster).
pub struct RedisPresence {
    link: Link,
    keys: Keys,
}

impl RedisPresence {
    /// A store on the broker's command connection and key names.
    pub fn new(link: Link, keys: Keys) -> Self {
        RedisPresence { link, keys }
    }

    async fn run(&self, room: &RoomName, args: Vec<Vec<u8>>) -> Result<Value, BrokerError> {
        let op = String::from_utf8_lossy(&args[0]).into_owned();
        metrics::counter!("roomcast_broker_commands_total", "op" => "presence").increment(1);
        let mut invocation = PRESENCE.prepare_invoke();
        invocation
            .key(self.keys.presence(room))
            .key(self.keys.presence_expiry(room))
            .key(self.keys.presence_users(room))
            .key(self.keys.presence_version(room));
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = self.link.get()?;
        invocation
            .invoke_async::<Value>(&mut connection)
            .await
            .map_err(|err| {
                tracing::debug!(%room, op, error = %err, "presence script failed");
                broker_error(err)
            })
    }
}

fn internal(what: &str) -> BrokerError {
    BrokerError::Internal(format!("unexpected presence reply: {what}"))
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn add(
        &self,
        room: &RoomName,
        entries: &[PresenceEntry],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut args = vec![b"add".to_vec(), (ttl.as_millis() as u64).to_string().into()];
        for entry in entries {
            let json =
                serde_json::to_vec(entry).map_err(|e| BrokerError::Internal(e.to_string()))?;
            args.push(entry.conn.clone().into_bytes());
            args.push(entry.user.clone().into_bytes());
            args.push(json);
        }
        self.run(room, args).await.map(drop)
    }

    async fn remove(&self, room: &RoomName, conns: &[String]) -> Result<(), BrokerError> {
        let mut args = vec![b"remove".to_vec()];
        args.extend(conns.iter().map(|c| c.clone().into_bytes()));
        self.run(room, args).await.map(drop)
    }

    async fn read(&self, room: &RoomName, known: Option<u64>) -> Result<Snapshot, BrokerError> {
        let known_arg = known.map_or_else(String::new, |v| v.to_string());
        let reply = self
            .run(room, vec![b"read".to_vec(), known_arg.into_bytes()])
            .await?;
        let items: Vec<Vec<u8>> =
            FromRedisValue::from_redis_value(reply).map_err(|_| internal("not a list"))?;
        let mut items = items.into_iter();
        let version: u64 = items
            .next()
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .ok_or_else(|| internal("version"))?;
        // The script sends the entries whenever the version differs from `known`.
        if known == Some(version) {
            return Ok(Snapshot {
                version,
                entries: None,
            });
        }
        let entries = items
            .map(|json| serde_json::from_slice(&json).map_err(|_| internal("entry")))
            .collect::<Result<Vec<PresenceEntry>, _>>()?;
        Ok(Snapshot {
            version,
            entries: Some(entries),
        })
    }

    async fn stats(&self, room: &RoomName) -> Result<PresenceStats, BrokerError> {
        let reply = self.run(room, vec![b"stats".to_vec()]).await?;
        let (clients, users): (u64, u64) =
            FromRedisValue::from_redis_value(reply).map_err(|_| internal("stats"))?;
        Ok(PresenceStats { clients, users })
    }
}
