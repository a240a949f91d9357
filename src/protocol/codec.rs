//! Encoding and decoding frames as JSON text or MessagePack bytes. The codec knows no
//! transport: an encoded frame is an [`Encoded`] (shared bytes), which each transport
//! adapter turns into its own frame type (a WebSocket text or binary message, ...).

use super::codes::ErrorCode;
use super::compress::{self, CompressFormat, InflateError};
use super::frames::{ClientFrame, DeltaFormat, ServerFrame};
use crate::stream::Position;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// UTF-8 text in shared bytes: the body of a JSON frame. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("Text holds UTF-8 by construction")
    }

    /// The text's bytes (valid UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes, which are valid UTF-8 (a transport may rely on that).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(Bytes::from(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl TryFrom<Bytes> for Text {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }
}

/// One encoded frame: JSON text or MessagePack bytes. Cloning shares the bytes, so a
/// room message is encoded once per encoding and sent to every subscriber as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A JSON frame.
    Text(Text),
    /// A MessagePack frame.
    Binary(Bytes),
}

impl Encoded {
    /// A text frame.
    pub fn text(text: impl Into<Text>) -> Self {
        Encoded::Text(text.into())
    }

    /// A binary frame.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Encoded::Binary(bytes.into())
    }

    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Text(text) => text.as_bytes(),
            Encoded::Binary(bytes) => bytes,
        }
    }

    /// The frame as text, when it is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Encoded::Text(text) => Some(text.as_str()),
            Encoded::Binary(_) => None,
        }
    }
}

/// The subprotocol naming the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "roomcast.v1.msgpack";
/// The subprotocol naming the JSON encoding (also the default).
pub const SUBPROTOCOL_JSON: &str = "roomcast.v1.json";
/// Protocol name and version announced in `welcome`.
pub const PROTOCOL_VERSION: &str = "roomcast.v1";

/// How frames are carried on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames (maps with string keys).
    MsgPack,
}

impl Encoding {
    /// Both encodings, in index order (see [`Encoding::index`]).
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::MsgPack];

    /// The subprotocol name for this encoding.
    pub const fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Short name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::MsgPack => "msgpack",
        }
    }

    /// Dense index (0 or 1), for per-encoding arrays.
    pub const fn index(self) -> usize {
        match self {
            Encoding::Json => 0,
            Encoding::MsgPack => 1,
        }
    }

    /// Picks the encoding from the client's offered subprotocols (the value of
    /// `Sec-WebSocket-Protocol`, comma separated, in preference order). Returns the
    /// encoding and whether a subprotocol must be echoed back (only when the client
    /// offered one we know).
    pub fn negotiate(offered: Option<&str>) -> (Encoding, bool) {
        let Some(offered) = offered else {
            return (Encoding::Json, false);
        };
        for candidate in offered.split(',').map(str::trim) {
            if candidate.eq_ignore_ascii_case(SUBPROTOCOL_MSGPACK) {
                return (Encoding::MsgPack, true);
            }
            if candidate.eq_ignore_ascii_case(SUBPROTOCOL_JSON) {
                return (Encoding::Json, true);
            }
        }
        (Encoding::Json, false)
    }

    /// Encodes any serializable frame in this encoding.
    pub fn encode<T: Serialize + ?Sized>(self, frame: &T) -> Encoded {
        match self {
            Encoding::Json => {
                let text = serde_json::to_string(frame).expect("frames always serialize to JSON");
                Encoded::text(text)
            }
            Encoding::MsgPack => {
                let bytes = pack_named(frame).expect("frames always serialize to MessagePack");
                Encoded::binary(bytes)
            }
        }
    }

    /// Decodes a frame sent by a client, inflating a compressed `data` to at most
    /// `max_inflated` bytes. Failures carry the request id when it could be read, and
    /// the stable error code to report.
    pub fn decode_client(
        self,
        message: &Encoded,
        max_inflated: usize,
    ) -> Result<ClientFrame, DecodeError> {
        let raw: RawClientFrame = self.decode_payload(message)?;
        raw.into_frame(max_inflated)
    }

    /// Decodes a frame sent by the server (used by the client).
    pub fn decode_server(self, message: &Encoded) -> Result<ServerFrame, DecodeError> {
        self.decode_payload(message)
    }

    fn decode_payload<T: for<'de> Deserialize<'de>>(
        self,
        message: &Encoded,
    ) -> Result<T, DecodeError> {
        match (self, message) {
            (Encoding::Json, Encoded::Text(text)) => serde_json::from_slice(text.as_bytes())
                .map_err(|e| DecodeError::bad_frame(id_from_json(text.as_bytes()), e)),
            (Encoding::MsgPack, Encoded::Binary(bytes)) => rmp_serde::from_slice(bytes)
                .map_err(|e| DecodeError::bad_frame(id_from_msgpack(bytes), e)),
            (Encoding::Json, _) => Err(DecodeError {
                id: None,
                code: ErrorCode::BadFrame,
                message: "this connection uses JSON: send text frames".into(),
            }),
            (Encoding::MsgPack, _) => Err(DecodeError {
                id: None,
                code: ErrorCode::BadFrame,
                message: "this connection uses MessagePack: send binary frames".into(),
            }),
        }
    }
}

/// A frame that could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The request id, when it could be read.
    pub id: Option<u64>,
    /// The stable code to report.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl DecodeError {
    fn bad_frame(id: Option<u64>, cause: impl std::fmt::Display) -> Self {
        DecodeError {
            id,
            code: ErrorCode::BadFrame,
            message: format!("malformed frame: {cause}"),
        }
    }

    fn invalid(id: Option<u64>, message: String) -> Self {
        DecodeError {
            id,
            code: ErrorCode::InvalidFrame,
            message,
        }
    }
}

/// Every field any client frame may carry, all optional: decoding into this flat shape
/// first lets the server tell "unknown type" and "missing field" apart from "malformed",
/// and still echo the request id in the error. Unknown fields are ignored, so clients can
/// send fields a newer protocol revision adds.
#[derive(Deserialize)]
struct RawClientFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<u64>,
    room: Option<String>,
    since: Option<Position>,
    data: Option<Value>,
    key: Option<String>,
    limit: Option<u32>,
    token: Option<String>,
    presence: Option<bool>,
    info: Option<Value>,
    delta: Option<String>,
    compress: Option<String>,
}

impl RawClientFrame {
    /// The typed frame, its fields checked. One arm per frame type: longer than ~60
    /// lines on purpose, so the table of frames and what each requires reads in one place.
    fn into_frame(self, max_inflated: usize) -> Result<ClientFrame, DecodeError> {
        let id = self.id;
        let Some(kind) = self.kind else {
            return Err(DecodeError::invalid(id, "frame has no `type`".into()));
        };
        let require_room = |room: Option<String>| {
            room.ok_or_else(|| DecodeError::invalid(id, format!("`{kind}` needs `room`")))
        };
        match kind.as_str() {
            "subscribe" => Ok(ClientFrame::Subscribe {
                id,
                room: require_room(self.room)?,
                since: self.since,
                presence: self.presence.unwrap_or(false),
                info: self.info.filter(|info| !info.is_null()),
                delta: match self.delta.as_deref() {
                    None => None,
                    Some(name) => Some(DeltaFormat::from_name(name).ok_or_else(|| {
                        DecodeError::invalid(id, format!("unknown delta format {name:?}"))
                    })?),
                },
                compress: compress_format(id, self.compress.as_deref())?,
            }),
            "presence" => Ok(ClientFrame::Presence {
                id,
                room: require_room(self.room)?,
            }),
            "presence_stats" => Ok(ClientFrame::PresenceStats {
                id,
                room: require_room(self.room)?,
            }),
            "unsubscribe" => Ok(ClientFrame::Unsubscribe {
                id,
                room: require_room(self.room)?,
            }),
            "publish" => {
                let room = require_room(self.room)?;
                // A MessagePack NaN or infinity decodes to null: refused like null.
                let data = self.data.filter(|d| !d.is_null()).ok_or_else(|| {
                    DecodeError::invalid(id, "`publish` needs `data` (not null)".into())
                })?;
                let data = match compress_format(id, self.compress.as_deref())? {
                    None => data,
                    Some(CompressFormat::Deflate) => inflate_data(id, data, max_inflated)?,
                };
                Ok(ClientFrame::Publish {
                    id,
                    room,
                    data,
                    key: self.key,
                })
            }
            "ping" => Ok(ClientFrame::Ping { id }),
            "history" => Ok(ClientFrame::History {
                id,
                room: require_room(self.room)?,
                since: self.since,
                limit: self.limit,
            }),
            "refresh" => Ok(ClientFrame::Refresh {
                id,
                token: self
                    .token
                    .filter(|token| !token.is_empty())
                    .ok_or_else(|| DecodeError::invalid(id, "`refresh` needs `token`".into()))?,
            }),
            other => Err(DecodeError {
                id,
                code: ErrorCode::UnknownType,
                message: format!("unknown frame type {other:?}"),
            }),
        }
    }
}

/// Where a MessagePack buffer starts: a `message` frame with 100 bytes of data is about
/// 200 bytes.
const PACK_START_BYTES: usize = 256;

/// `value` as MessagePack with named fields (what `rmp_serde::to_vec_named` gives), in
/// a buffer that starts at [`PACK_START_BYTES`]: from an empty one, MessagePack's small
/// writes grow a 200-byte frame five times on the way. Frames and broker bodies are
/// packed once per publication or frame, so this is on the publish path.
pub fn pack_named<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut bytes = Vec::with_capacity(PACK_START_BYTES);
    rmp_serde::encode::write_named(&mut bytes, value)?;
    Ok(bytes)
}

/// The compression a frame names, if any.
fn compress_format(
    id: Option<u64>,
    name: Option<&str>,
) -> Result<Option<CompressFormat>, DecodeError> {
    match name {
        None => Ok(None),
        Some(name) => CompressFormat::from_name(name)
            .map(Some)
            .ok_or_else(|| DecodeError::invalid(id, format!("unknown compression {name:?}"))),
    }
}

/// The value of a compressed `data`: base64 of deflated JSON text, inflated to at most
/// `limit` bytes (a bomb stops there and is refused with its own code).
fn inflate_data(id: Option<u64>, data: Value, limit: usize) -> Result<Value, DecodeError> {
    let Value::String(packed) = data else {
        return Err(DecodeError::invalid(
            id,
            "compressed `data` must be a base64 string".into(),
        ));
    };
    let text = compress::unpack(&packed, limit).map_err(|err| match err {
        InflateError::TooLarge(limit) => DecodeError {
            id,
            code: ErrorCode::CompressedTooLarge,
            message: format!("compressed `data` inflates to more than {limit} bytes"),
        },
        InflateError::Malformed(what) => {
            DecodeError::bad_frame(id, format!("compressed `data` is not valid {what}"))
        }
    })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|err| DecodeError::bad_frame(id, format!("inflated `data`: {err}")))?;
    if value.is_null() {
        return Err(DecodeError::invalid(
            id,
            "`publish` needs `data` (not null)".into(),
        ));
    }
    Ok(value)
}

/// Only the `id` of a frame, read when the whole frame failed to decode.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<u64>,
}

fn id_from_json(text: &[u8]) -> Option<u64> {
    serde_json::from_slice::<IdOnly>(text)
        .ok()
        .and_then(|f| f.id)
}

fn id_from_msgpack(bytes: &[u8]) -> Option<u64> {
    rmp_serde::from_slice::<IdOnly>(bytes)
        .ok()
        .and_then(|f| f.id)
}

#[cfg(test)]
mod fuzz {
    //! Decoders fed arbitrary input: they answer with a frame or an error, never a
    //! panic. Bounded here (proptest's default case count); for a longer run:
    //! `PROPTEST_CASES=200000 cargo test --lib fuzz`.
    use super::*;
    use proptest::prelude::*;

    /// JSON values shaped like frames: a `type` from the known ones (or not), and
    /// fields of every JSON kind under the names frames use.
    fn frame_like() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let names = prop::sample::select(vec![
            "type", "id", "room", "since", "data", "key", "limit", "token", "epoch", "seq",
        ]);
        let kinds = prop::sample::select(vec![
            "subscribe",
            "unsubscribe",
            "publish",
            "ping",
            "history",
            "refresh",
            "other",
        ]);
        (kinds, prop::collection::btree_map(names, value, 0..6)).prop_map(|(kind, fields)| {
            let mut object: serde_json::Map<String, serde_json::Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            object
                .entry("type")
                .or_insert_with(|| serde_json::Value::from(kind));
            serde_json::Value::Object(object)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for encoding in [Encoding::Json, Encoding::MsgPack] {
                let _ = encoding.decode_client(&Encoded::binary(bytes.clone()), 65536);
                let _ = encoding.decode_server(&Encoded::binary(bytes.clone()));
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = Encoding::Json.decode_client(&Encoded::text(text.to_owned()), 65536);
            }
        }

        #[test]
        fn frame_shaped_input_decodes_or_says_why(frame in frame_like()) {
            let text = frame.to_string();
            let packed = rmp_serde::to_vec_named(&frame).expect("JSON values pack");
            for (encoding, message) in [
                (Encoding::Json, Encoded::text(text)),
                (Encoding::MsgPack, Encoded::binary(packed)),
            ] {
                match encoding.decode_client(&message, 65536) {
                    // What decodes encodes back to a frame that decodes the same.
                    Ok(decoded) => {
                        let again = encoding.decode_client(&encoding.encode(&decoded), 65536);
                        prop_assert_eq!(again.ok(), Some(decoded));
                    }
                    Err(err) => prop_assert!(!err.message.is_empty()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frames::MessageFrameRef;
    use crate::stream::Epoch;
    use serde_json::json;

    #[test]
    fn packing_into_a_presized_buffer_gives_the_same_bytes() {
        let small = ServerFrame::Pong { id: Some(7) };
        let large = json!({ "text": "x".repeat(5_000), "n": [1, 2, 3] });
        assert_eq!(
            pack_named(&small).unwrap(),
            rmp_serde::to_vec_named(&small).unwrap()
        );
        assert_eq!(
            pack_named(&large).unwrap(),
            rmp_serde::to_vec_named(&large).unwrap()
        );
    }

    fn sample_client_frames() -> Vec<ClientFrame> {
        vec![
            ClientFrame::Subscribe {
                id: Some(1),
                room: "project:42".into(),
                since: Some(Position::new(Epoch::new("e1"), 17)),
                presence: true,
                info: Some(serde_json::json!({"name": "Ana"})),
                delta: Some(DeltaFormat::Fossil),
                compress: None,
            },
            ClientFrame::Subscribe {
                id: None,
                room: "r".into(),
                since: None,
                presence: false,
                info: None,
                delta: None,
                compress: None,
            },
            ClientFrame::Unsubscribe {
                id: Some(2),
                room: "r".into(),
            },
            ClientFrame::Publish {
                id: Some(3),
                room: "r".into(),
                data: json!({"text": "hi", "n": [1, 2.5, -3], "ok": true}),
                key: Some("k-1".into()),
            },
            ClientFrame::Ping { id: Some(4) },
            ClientFrame::History {
                id: Some(5),
                room: "r".into(),
                since: None,
                limit: Some(10),
            },
            ClientFrame::Presence {
                id: Some(7),
                room: "r".into(),
            },
            ClientFrame::PresenceStats {
                id: None,
                room: "r".into(),
            },
        ]
    }

    #[test]
    fn client_frames_round_trip_in_both_encodings() {
        for encoding in Encoding::ALL {
            for frame in sample_client_frames() {
                let wire = encoding.encode(&frame);
                assert_eq!(
                    encoding.decode_client(&wire, 65536).unwrap(),
                    frame,
                    "{encoding:?}"
                );
            }
        }
    }

    #[test]
    fn server_frames_round_trip_in_both_encodings() {
        let frames = vec![
            ServerFrame::Subscribed {
                id: Some(1),
                room: "r".into(),
                epoch: Epoch::new("e"),
                seq: 4,
                recovered: true,
                replayed: 2,
                reason: None,
                delta: Some(DeltaFormat::Fossil),
                compress: None,
            },
            ServerFrame::error(Some(9), ErrorCode::InvalidRoom, "bad"),
            ServerFrame::Pong { id: None },
        ];
        for encoding in Encoding::ALL {
            for frame in &frames {
                let wire = encoding.encode(frame);
                assert_eq!(&encoding.decode_server(&wire).unwrap(), frame);
            }
        }
    }

    #[test]
    fn borrowed_message_frame_matches_owned_frame_bytes() {
        let epoch = Epoch::new("e7");
        let data = json!({"a": [1, "x"]});
        let owned = ServerFrame::Message {
            room: "room:1".into(),
            epoch: epoch.clone(),
            seq: 12,
            time: 1_700_000_000_000,
            data: data.clone(),
            delta: None,
            compressed: false,
        };
        let borrowed = MessageFrameRef {
            kind: "message",
            room: "room:1",
            epoch: &epoch,
            seq: 12,
            time: 1_700_000_000_000,
            data: &data,
            delta: None,
            compressed: false,
        };
        for encoding in Encoding::ALL {
            assert_eq!(encoding.encode(&owned), encoding.encode(&borrowed));
        }
        let text = data.to_string();
        let owned = ServerFrame::Message {
            room: "room:1".into(),
            epoch: epoch.clone(),
            seq: 12,
            time: 1_700_000_000_000,
            data: Value::from(text.as_str()),
            delta: Some(false),
            compressed: false,
        };
        let borrowed = MessageFrameRef {
            kind: "message",
            room: "room:1",
            epoch: &epoch,
            seq: 12,
            time: 1_700_000_000_000,
            data: text.as_str(),
            delta: Some(false),
            compressed: false,
        };
        for encoding in Encoding::ALL {
            assert_eq!(encoding.encode(&owned), encoding.encode(&borrowed));
        }
    }

    #[test]
    fn an_unknown_delta_format_is_refused() {
        let frame = Encoded::text(r#"{"type":"subscribe","id":3,"room":"r","delta":"xdelta"}"#);
        let err = Encoding::Json.decode_client(&frame, 65536).unwrap_err();
        assert_eq!((err.id, err.code), (Some(3), ErrorCode::InvalidFrame));
    }

    #[test]
    fn json_and_msgpack_carry_the_same_maps() {
        let frame = sample_client_frames().remove(3);
        let json_value: Value =
            serde_json::from_str(Encoding::Json.encode(&frame).as_text().unwrap()).unwrap();
        let Encoded::Binary(bytes) = Encoding::MsgPack.encode(&frame) else {
            panic!("msgpack must be binary")
        };
        let msgpack_value: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(json_value, msgpack_value);
    }

    #[test]
    fn negotiation_prefers_the_first_known_subprotocol() {
        assert_eq!(Encoding::negotiate(None), (Encoding::Json, false));
        assert_eq!(
            Encoding::negotiate(Some("roomcast.v1.msgpack")),
            (Encoding::MsgPack, true)
        );
        assert_eq!(
            Encoding::negotiate(Some("chat, roomcast.v1.json, roomcast.v1.msgpack")),
            (Encoding::Json, true)
        );
        assert_eq!(Encoding::negotiate(Some("chat")), (Encoding::Json, false));
    }

    #[test]
    fn malformed_frames_are_bad_frame() {
        let err = Encoding::Json
            .decode_client(&Encoded::text("{not json"), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        let err = Encoding::MsgPack
            .decode_client(&Encoded::binary(vec![0xc1u8]), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        let err = Encoding::Json
            .decode_client(&Encoded::binary(b"{}".to_vec()), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        let err = Encoding::MsgPack
            .decode_client(&Encoded::text("{}"), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
    }

    #[test]
    fn wrong_field_types_keep_the_id_when_readable() {
        let err = Encoding::Json
            .decode_client(
                &Encoded::text(r#"{"type":"subscribe","id":7,"room":5}"#),
                65536,
            )
            .unwrap_err();
        assert_eq!((err.code, err.id), (ErrorCode::BadFrame, Some(7)));
    }

    #[test]
    fn unknown_type_and_missing_fields_are_classified() {
        let err = Encoding::Json
            .decode_client(&Encoded::text(r#"{"type":"dance","id":3}"#), 65536)
            .unwrap_err();
        assert_eq!((err.code, err.id), (ErrorCode::UnknownType, Some(3)));
        let err = Encoding::Json
            .decode_client(
                &Encoded::text(r#"{"type":"publish","room":"r","data":null}"#),
                65536,
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
        let err = Encoding::Json
            .decode_client(&Encoded::text(r#"{"id":1}"#), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn msgpack_binary_data_is_refused() {
        // {"type": "publish", "room": "r", "data": bin8(2)}
        let mut bytes = vec![0x83];
        for (key, value) in [("type", "publish"), ("room", "r")] {
            bytes.push(0xa0 | key.len() as u8);
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(0xa0 | value.len() as u8);
            bytes.extend_from_slice(value.as_bytes());
        }
        bytes.push(0xa4);
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&[0xc4, 0x02, 0x01, 0x02]);
        let err = Encoding::MsgPack
            .decode_client(&Encoded::binary(bytes), 65536)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame = Encoding::Json
            .decode_client(
                &Encoded::text(r#"{"type":"ping","id":1,"future":"x"}"#),
                65536,
            )
            .unwrap();
        assert_eq!(frame, ClientFrame::Ping { id: Some(1) });
    }
}
