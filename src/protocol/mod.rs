//! The wire protocol `roomcast.v1`: frames, their two encodings, room names, and the
//! stable error and close codes. `docs/protocol.md` is the reference for client authors.

mod codec;
mod codes;
pub mod compress;
pub mod fossil;
mod frames;
mod room_name;

pub use codec::{
    DecodeError, Encoded, Encoding, PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Text,
    pack_named,
};
pub use codes::{CloseCode, ErrorCode};
pub use compress::CompressFormat;
pub use frames::{
    ClientFrame, DeltaFormat, HistoryItem, Limits, MessageFrameRef, PresenceEntry, ServerFrame,
};
pub use room_name::{RoomName, RoomNameError, RoomNameRules};
