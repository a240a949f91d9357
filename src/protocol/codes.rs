//! Stable error codes (inside `error` frames) and WebSocket close codes.
//!
//! Both lists are part of the public protocol (see `docs/protocol.md`): numbers are never
//! reused, names never change. Error codes are grouped by what the client should do:
//! `1xx` — the request was wrong, do not retry it unchanged; `2xx` — the server could not
//! serve it right now, retry (a publish with the same idempotency key).

use serde::{Deserialize, Serialize};

/// Machine-readable reason carried by an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum ErrorCode {
    /// The frame could not be decoded (malformed JSON or MessagePack, wrong field types,
    /// a binary frame on a JSON connection or a text frame on a MessagePack one).
    BadFrame,
    /// The frame's `type` is not one this server knows.
    UnknownType,
    /// A required field is missing or a field has a value outside its allowed range.
    InvalidFrame,
    /// The room name breaks the room-name rules (length, characters).
    InvalidRoom,
    /// Subscribing would exceed the per-connection room limit.
    TooManyRooms,
    /// The operation needs a subscription to the room first.
    NotSubscribed,
    /// The connection is already subscribed to the room.
    AlreadySubscribed,
    /// The credentials do not allow this operation on this room.
    Forbidden,
    /// A compressed `data` would inflate to more than `max_frame_bytes`: refused (the
    /// server stopped inflating at the limit). Send it uncompressed and smaller.
    CompressedTooLarge,
    /// A token sent in a frame (`refresh`) is invalid, expired, or names another user.
    Unauthorized,
    /// The broker (sequencer and replay buffer) is unreachable; nothing was published.
    Unavailable,
    /// An unexpected server-side failure.
    Internal,
    /// The server did not complete the operation in time; its outcome is unknown, so a
    /// publish must be retried with the same idempotency key.
    Timeout,
    /// Too many requests; retry later, more slowly.
    RateLimited,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadFrame,
        ErrorCode::UnknownType,
        ErrorCode::InvalidFrame,
        ErrorCode::InvalidRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::NotSubscribed,
        ErrorCode::AlreadySubscribed,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::CompressedTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::Timeout,
        ErrorCode::RateLimited,
    ];

    /// The stable number sent on the wire.
    pub const fn number(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 100,
            ErrorCode::UnknownType => 101,
            ErrorCode::InvalidFrame => 102,
            ErrorCode::InvalidRoom => 103,
            ErrorCode::TooManyRooms => 104,
            ErrorCode::NotSubscribed => 105,
            ErrorCode::AlreadySubscribed => 106,
            ErrorCode::Forbidden => 107,
            ErrorCode::Unauthorized => 108,
            ErrorCode::CompressedTooLarge => 109,
            ErrorCode::Unavailable => 200,
            ErrorCode::Internal => 201,
            ErrorCode::Timeout => 202,
            ErrorCode::RateLimited => 203,
        }
    }

    /// The stable snake_case name, used in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::CompressedTooLarge => "compressed_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// True when retrying the same request later may succeed.
    pub const fn is_temporary(self) -> bool {
        self.number() >= 200
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.number()
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(n: u16) -> Result<Self, String> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.number() == n)
            .ok_or_else(|| format!("unknown error code {n}"))
    }
}

/// Close codes the server sends, grouped by what the client should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client asked to close).
    Normal,
    /// 1001: the server is shutting down without a drain; reconnect with backoff.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol itself.
    ProtocolError,
    /// 1009: a frame was larger than `max_frame_bytes`; do not resend it.
    MessageTooBig,
    /// 1011: the server failed while serving this connection; reconnect and resume.
    InternalError,
    /// 1012: the instance is draining (deploy); reconnect now, to any instance, and resume.
    ServiceRestart,
    /// 4000: the client read too slowly and its outbound queue overflowed; reconnect and
    /// resume from the last sequence number received.
    SlowConsumer,
    /// 4001: no frame (not even a pong) arrived within the heartbeat timeout; reconnect.
    HeartbeatTimeout,
    /// 4100: the credentials were missing, invalid or expired; do not reconnect without
    /// new credentials.
    Unauthorized,
    /// 4101: the token expired and no `refresh` frame replaced it in time; get a new
    /// token, reconnect and resume.
    TokenExpired,
    /// 4102: an operator disconnected this user; do not reconnect by yourself.
    Disconnected,
}

impl CloseCode {
    /// Every close code, for documentation and exhaustive tests.
    pub const ALL: [CloseCode; 11] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::ServiceRestart,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::Unauthorized,
        CloseCode::TokenExpired,
        CloseCode::Disconnected,
    ];

    /// The number sent in the WebSocket close frame.
    pub const fn number(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::SlowConsumer => 4000,
            CloseCode::HeartbeatTimeout => 4001,
            CloseCode::Unauthorized => 4100,
            CloseCode::TokenExpired => 4101,
            CloseCode::Disconnected => 4102,
        }
    }

    /// The short reason text sent with the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::ServiceRestart => "service_restart",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::Disconnected => "disconnected",
        }
    }

    /// Looks a received close code up (used by the client).
    pub fn from_number(n: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.number() == n)
    }

    /// Whether a client should reconnect (and resume) after this close.
    pub const fn should_reconnect(self) -> bool {
        !matches!(
            self,
            CloseCode::Normal
                | CloseCode::MessageTooBig
                | CloseCode::Unauthorized
                | CloseCode::Disconnected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn error_codes_are_unique_and_round_trip() {
        let numbers: HashSet<u16> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(code.number()), Ok(code));
        }
        assert!(ErrorCode::try_from(999).is_err());
        assert!(ErrorCode::Unavailable.is_temporary());
        assert!(!ErrorCode::BadFrame.is_temporary());
    }

    #[test]
    fn close_codes_are_unique_and_round_trip() {
        let numbers: HashSet<u16> = CloseCode::ALL.iter().map(|c| c.number()).collect();
        assert_eq!(numbers.len(), CloseCode::ALL.len());
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_number(code.number()), Some(code));
        }
        assert!(CloseCode::SlowConsumer.should_reconnect());
        assert!(!CloseCode::Unauthorized.should_reconnect());
    }
}
