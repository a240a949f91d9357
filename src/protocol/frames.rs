//! Every frame of protocol `roomcast.v1`, in both directions.
//!
//! A frame is a map with a `type` field; JSON and MessagePack carry the same maps (see
//! `docs/protocol.md`). Client frames may carry an `id` chosen by the client; the reply to
//! that frame (or the error it caused) echoes it.

use super::codes::ErrorCode;
use super::compress::CompressFormat;
use crate::stream::{Epoch, Position};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Start receiving a room's messages, optionally resuming after `since`.
    Subscribe {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// The last position the client saw in this room (resume).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
        /// Ask for the room's presence: a `presence` frame now, `presence_diff` frames
        /// on joins and leaves (rooms with presence only).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        presence: bool,
        /// What to show of this client in the room's presence set (bounded JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Value>,
        /// Receive each message as a delta against the previous one this subscription
        /// received (see [`DeltaFormat`]); messages then carry their data as JSON text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<DeltaFormat>,
        /// Receive large messages compressed (see [`crate::protocol::compress`]): their
        /// `data` is then the base64 of the deflated JSON text, with `compressed: true`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compress: Option<CompressFormat>,
    },
    /// Stop receiving a room's messages.
    Unsubscribe {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
    },
    /// Publish `data` to a room. On the wire `data` may come compressed (`compress:
    /// "deflate"`, see [`crate::protocol::compress`]); the decoder inflates it, so `data`
    /// here is always the value.
    Publish {
        /// Client-chosen request id, echoed in the ack.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Any value of the JSON data model (not null).
        data: Value,
        /// Idempotency key: a retry with the same key gets the original ack.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Liveness check; answered with `pong`.
    Ping {
        /// Client-chosen request id, echoed in the pong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Read a room's replay buffer without subscribing.
    History {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Return messages after this position (else the newest ones).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
        /// At most this many messages (clamped to the server's maximum).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Who is in a room; answered with `presence`.
    Presence {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
    },
    /// How many are in a room; answered with `presence_stats`.
    PresenceStats {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// Client-chosen request id, echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new token (a JWT of the same user).
        token: String,
    },
}

/// A delta encoding a subscription may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaFormat {
    /// The Fossil delta format (as Centrifugo's `delta: "fossil"`), see
    /// [`crate::protocol::fossil`].
    Fossil,
}

impl DeltaFormat {
    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            DeltaFormat::Fossil => "fossil",
        }
    }

    /// The format named `name`, if known.
    pub fn from_name(name: &str) -> Option<Self> {
        (name == "fossil").then_some(DeltaFormat::Fossil)
    }
}

/// Limits announced in the `welcome` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u64,
    /// Most rooms one connection may be subscribed to.
    pub max_rooms: u32,
    /// Most messages one `history` reply carries.
    pub max_history: u32,
    /// The server pings this often; a client from which nothing (not even a pong) has
    /// arrived for two intervals is closed with 4001.
    pub heartbeat_ms: u64,
    /// Whether publishing to a room requires a subscription to it.
    pub publish_requires_subscription: bool,
}

/// One message inside a `history` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Sequence number.
    pub seq: u64,
    /// Publish time, milliseconds since the Unix epoch.
    pub time: u64,
    /// The published value.
    pub data: Value,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        /// Protocol name and version (`roomcast.v1`).
        protocol: String,
        /// Id of the instance serving the connection.
        server: String,
        /// Id of this connection.
        session: String,
        /// Limits that apply to this connection.
        limits: Limits,
        /// Feature flags on for this connection (omitted when none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// When the connection's token expires (seconds since the Unix epoch; omitted
        /// for connections without an expiring token). Send `refresh` before then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// Reply to `refresh`: the new token is in force.
    Refreshed {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// When the new token expires (seconds since the Unix epoch).
        expires_at: u64,
    },
    /// Reply to `subscribe`. Replayed messages (`replayed` of them) follow it, then live ones.
    Subscribed {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// The room's current epoch.
        epoch: Epoch,
        /// The position the replay brings the client to; live messages follow it.
        seq: u64,
        /// True when `since` was given and honoured exactly; false otherwise (also when
        /// no `since` was given).
        recovered: bool,
        /// Number of replayed `message` frames that follow.
        replayed: u64,
        /// Why recovery failed (only when `recovered` is false and `since` was given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The delta format in force for this subscription (echo of the request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<DeltaFormat>,
        /// The compression in force for this subscription (echo of the request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compress: Option<CompressFormat>,
    },
    /// Reply to `unsubscribe`.
    Unsubscribed {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
    },
    /// A room's message.
    Message {
        /// The room.
        room: String,
        /// Stream epoch.
        epoch: Epoch,
        /// Sequence number within the epoch.
        seq: u64,
        /// Publish time, milliseconds since the Unix epoch.
        time: u64,
        /// The published value. On a subscription with `delta`, a string instead: the
        /// value's JSON text (`delta: false`) or a delta against the JSON text of the
        /// previous message of this subscription, `seq - 1` (`delta: true`).
        data: Value,
        /// Present (only) on subscriptions with `delta`: whether `data` is a delta.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<bool>,
        /// Only on subscriptions with `compress`, and only when true: `data` is the
        /// base64 of the deflated text that `data` would otherwise carry (the value's
        /// JSON text, or with `delta` the string).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        compressed: bool,
    },
    /// Reply to `publish`: the message was sequenced and stored.
    Ack {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Stream epoch.
        epoch: Epoch,
        /// The assigned sequence number.
        seq: u64,
        /// Publish time, milliseconds since the Unix epoch.
        time: u64,
        /// True when this is the ack of an earlier publish with the same key.
        duplicate: bool,
    },
    /// The room's continuity was broken while subscribed (its history was lost): the
    /// client should re-fetch its state; live messages continue after `seq`.
    Reset {
        /// The room.
        room: String,
        /// The room's new epoch.
        epoch: Epoch,
        /// Live messages continue after this sequence number.
        seq: u64,
        /// Why (`epoch_changed`, `too_far_behind`).
        reason: String,
    },
    /// Reply to `history`.
    History {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Stream epoch.
        epoch: Epoch,
        /// The room's top sequence number.
        seq: u64,
        /// With `since`: whether the messages continue exactly from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Messages, oldest first.
        messages: Vec<HistoryItem>,
    },
    /// The instance is going away (a deploy) or sheds load: reconnect and resume. The
    /// close (code 1012) follows right after this frame.
    Reconnect {
        /// Why (`draining`, `rebalancing`, `disconnected`).
        reason: String,
        /// WebSocket URLs of ready instances with the fewest connections, the one to try
        /// first first. Empty (and omitted) when the cluster knows none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hint: Vec<String>,
    },
    /// A room's presence set: the reply to `presence` (with its `id`), or the first
    /// frame of a `subscribe` with `presence: true` (without `id`).
    Presence {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Everyone in the room, by join time.
        clients: Vec<PresenceEntry>,
    },
    /// Reply to `presence_stats`.
    PresenceStats {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: String,
        /// Entries (connections) in the room.
        clients: u64,
        /// Distinct users among them.
        users: u64,
    },
    /// Joins and leaves of a room since the last `presence` or `presence_diff` frame
    /// (gathered over `presence.window_ms`).
    PresenceDiff {
        /// The room.
        room: String,
        /// Entries that joined.
        joins: Vec<PresenceEntry>,
        /// Entries that left (or expired).
        leaves: Vec<PresenceEntry>,
    },
    /// Reply to `ping`.
    Pong {
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed.
    Error {
        /// Echo of the request id, when the failing frame carried one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable numeric code.
        code: ErrorCode,
        /// Stable code name.
        name: String,
        /// Human-readable explanation.
        message: String,
        /// With `rate_limited`: how long to wait before the next attempt (ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    /// An `error` frame for `code`.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            name: code.name().to_owned(),
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Borrowed form of [`ServerFrame::Message`], serialized once per room message and
/// encoding on the delivery path without cloning the data. Field order and names match
/// the owned variant exactly (a test checks the bytes). `D` is a [`Value`] for whole
/// messages, or `str` (the JSON text or a delta, with `delta` set) on subscriptions with
/// `delta`.
#[derive(Serialize)]
pub struct MessageFrameRef<'a, D: Serialize + ?Sized = Value> {
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The room.
    pub room: &'a str,
    /// Stream epoch.
    pub epoch: &'a Epoch,
    /// Sequence number.
    pub seq: u64,
    /// Publish time (ms).
    pub time: u64,
    /// The published value, or its text form.
    pub data: &'a D,
    /// With `delta` subscriptions: whether `data` is a delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<bool>,
    /// With `compress` subscriptions: whether `data` is compressed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compressed: bool,
}

/// One client in a room's presence set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The user: the token's `sub`, `service:{name}`, or `anonymous:{conn}`.
    pub user: String,
    /// The connection (its session id, as announced in `welcome`).
    pub conn: String,
    /// The instance serving the connection.
    pub node: String,
    /// When the client joined (ms since the Unix epoch).
    pub joined: u64,
    /// What the client attached at subscribe (omitted when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}
