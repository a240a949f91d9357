//! The MessagePack envelope of a publication between instances.
//!
//! The publishing instance encodes the body (the value and the publication id) with
//! rmp-serde; the publish script stores that body in the replay buffer and fans out
//! `epoch, seq, time` (MessagePack values packed by the script) followed by the same
//! body. Decoding reads the four values in order.

use crate::broker::Publication;
use crate::protocol::RoomName;
use crate::stream::Epoch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the publishing instance encodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// Publication id (see [`Publication::id`]).
    pub id: u64,
    /// The published value.
    pub data: Value,
    /// W3C `traceparent` of the publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Decoding failures (a foreign or corrupt message).
#[derive(Debug, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct EnvelopeError(#[from] rmp_serde::decode::Error);

impl Body {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("bodies always encode")
    }

    /// Decodes a body stored in the replay buffer.
    pub fn decode(bytes: &[u8]) -> Result<Body, EnvelopeError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    /// The publication this body becomes at a position.
    pub fn into_publication(
        self,
        room: RoomName,
        epoch: Epoch,
        seq: u64,
        time_ms: u64,
    ) -> Publication {
        Publication {
            room,
            epoch,
            seq,
            time_ms,
            id: self.id,
            data: self.data,
            trace: self.trace,
        }
    }
}

/// Decodes a fanned-out envelope of `room`.
pub fn decode(room: RoomName, bytes: &[u8]) -> Result<Publication, EnvelopeError> {
    let mut de = rmp_serde::Deserializer::new(bytes);
    let epoch = String::deserialize(&mut de)?;
    let seq = u64::deserialize(&mut de)?;
    let time_ms = u64::deserialize(&mut de)?;
    let body = Body::deserialize(&mut de)?;
    Ok(body.into_publication(room, Epoch::new(epoch), seq, time_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Whatever arrives on a channel decodes to a publication or an error (a peer
        /// of another version, a stray PUBLISH), never a panic. Longer run:
        /// `PROPTEST_CASES=200000 cargo test --lib envelope`.
        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(RoomName::new_unchecked("fuzz"), &bytes);
            let _ = Body::decode(&bytes);
        }
    }

    #[test]
    fn decodes_what_the_script_sends() {
        let body = Body {
            id: 42,
            data: json!({"a": [1, "x", null], "b": 2.5}),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        // What `cmsgpack.pack(epoch, seq, now) .. body` produces.
        let mut envelope = Vec::new();
        rmp::encode::write_str(&mut envelope, "e1").unwrap();
        rmp::encode::write_uint(&mut envelope, 7).unwrap();
        rmp::encode::write_uint(&mut envelope, 1_700_000_000_123).unwrap();
        envelope.extend_from_slice(&body.encode());
        let publication = decode(RoomName::new_unchecked("r"), &envelope).unwrap();
        assert_eq!(publication.epoch, Epoch::new("e1"));
        assert_eq!(
            (publication.seq, publication.time_ms, publication.id),
            (7, 1_700_000_000_123, 42)
        );
        assert_eq!(publication.data, body.data);
        assert_eq!(publication.trace, body.trace);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(RoomName::new_unchecked("r"), b"\xc1\xc1").is_err());
    }
}
