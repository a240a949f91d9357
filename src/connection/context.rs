//! What every connection of an instance shares: the broker, the rooms, limits and rules.

use super::admission::{Admissions, PublishLimiter};
use crate::access::AccessControl;
use crate::auth::Authenticator;
use crate::broker::{Broker, BrokerError, PublishAck, PublishRequest};
use crate::config::Config;
use crate::flags::Flags;
use crate::protocol::{Limits, RoomName, RoomNameRules};
use crate::room::Rooms;
use std::sync::Arc;
use std::time::Duration;

/// Longest a publish may wait for the broker before the client is told `timeout`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared, read-only services and limits of all connections.
pub struct ConnectionContext {
    /// This instance's name.
    pub node_id: String,
    /// Limits announced to and enforced on clients.
    pub limits: Limits,
    /// Room-name rules.
    pub room_rules: RoomNameRules,
    /// The rooms of this instance.
    pub rooms: Rooms,
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// Outbound queue bound per connection (frames).
    pub outbound_queue: usize,
    /// WebSocket heartbeat interval.
    pub heartbeat: Duration,
    /// Feature flags.
    pub flags: Flags,
    /// Verifies tokens sent in `refresh` frames.
    pub auth: Arc<Authenticator>,
    /// Connection counts against their bounds.
    pub admissions: Arc<Admissions>,
    /// Publish rate per user, and per address for anonymous clients of a server opened
    /// on purpose (`auth.mode = "open"`). Services (trusted backends) and anonymous
    /// clients of a loopback-only development server are not limited.
    pub publish_limiter: PublishLimiter,
    /// Whether anonymous publishes are limited (per client address).
    pub limit_anonymous_publishes: bool,
    /// Who may read and publish to which room.
    pub access: Arc<AccessControl>,
}

impl ConnectionContext {
    /// Builds the context from configuration.
    pub fn new(
        config: &Config,
        node_id: String,
        rooms: Rooms,
        broker: Arc<dyn Broker>,
        flags: Flags,
        auth: Arc<Authenticator>,
        access: Arc<AccessControl>,
    ) -> Self {
        let c = &config.connection;
        ConnectionContext {
            node_id,
            limits: Limits {
                max_frame_bytes: c.max_frame_bytes as u64,
                max_rooms: c.max_rooms as u32,
                max_history: config.history.max_page as u32,
                heartbeat_ms: c.heartbeat_ms,
                publish_requires_subscription: c.publish_requires_subscription,
            },
            room_rules: config.room_name_rules(),
            rooms,
            broker,
            outbound_queue: c.outbound_queue,
            heartbeat: c.heartbeat(),
            flags,
            auth,
            admissions: Admissions::new(config),
            publish_limiter: PublishLimiter::new(config),
            limit_anonymous_publishes: config.auth.mode == crate::config::AuthMode::Open,
            access,
        }
    }

    /// Publishes through the broker with a deadline, counting the outcome.
    pub async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        let result =
            match tokio::time::timeout(PUBLISH_TIMEOUT, self.broker.publish(room, request)).await {
                Ok(result) => result,
                Err(_) => Err(BrokerError::Timeout(format!(
                    "no answer within {PUBLISH_TIMEOUT:?}"
                ))),
            };
        let outcome = match &result {
            Ok(ack) if ack.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics::counter!("roomcast_messages_published_total", "result" => outcome).increment(1);
        result
    }
}
