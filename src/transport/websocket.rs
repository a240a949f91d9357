//! WebSocket: encoded frames as WebSocket messages (JSON as text, MessagePack as binary).

use crate::protocol::Encoded;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The WebSocket message carrying `frame`. Shares the frame's bytes (no copy).
pub fn message(frame: Encoded) -> Message {
    match frame {
        // SAFETY: `Text` holds valid UTF-8 by construction (it is built only from a
        // `String`, a `&str` or checked bytes), which is all `Utf8Bytes` requires.
        Encoded::Text(text) => {
            Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(text.into_bytes()) })
        }
        Encoded::Binary(bytes) => Message::Binary(bytes),
    }
}

/// The frame a WebSocket data message carries; `None` for control messages (ping, pong,
/// close). Shares the message's bytes (no copy).
pub fn encoded(message: Message) -> Option<Encoded> {
    match message {
        Message::Text(text) => Some(Encoded::Text(
            crate::protocol::Text::try_from(bytes::Bytes::from(text)).ok()?,
        )),
        Message::Binary(bytes) => Some(Encoded::Binary(bytes)),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
    }
}
