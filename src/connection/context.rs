//! What every connection of an instance shares: the broker, the rooms, limits and rules.

use super::admission::{Admissions, PublishLimiter};
use crate::access::AccessControl;
use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::Config;
use crate::flags::Flags;
use crate::protocol::{Limits, RoomNameRules};
use crate::publish::Publisher;
use crate::room::Rooms;
use std::sync::Arc;

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
    /// Publishes (the one publish path of clients, the HTTP API and the outbox relay).
    pub publisher: Publisher,
    /// Outbound queue bound per connection (frames).
    pub outbound_queue: usize,
    /// Subscriptions with `compress` get message data of at least this many bytes
    /// deflated (0: never).
    pub compress_above: usize,
    /// When connections send heartbeats (pings, or comment lines).
    pub heartbeat: super::heartbeat::Schedule,
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
    /// Presence sets and events of this instance.
    pub presence: crate::presence::Presence,
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
        let presence = crate::presence::Presence::start(
            config.presence.clone(),
            node_id.clone(),
            broker.presence_store(),
        );
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
            publisher: Publisher::new(broker.clone()),
            broker,
            outbound_queue: c.outbound_queue,
            compress_above: c.compress_above_bytes,
            heartbeat: super::heartbeat::Schedule::new(c.heartbeat()),
            flags,
            auth,
            admissions: Admissions::new(config),
            publish_limiter: PublishLimiter::new(config),
            limit_anonymous_publishes: config.auth.mode == crate::config::AuthMode::Open,
            presence,
            access,
        }
    }
}
