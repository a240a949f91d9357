//! The MessagePack envelope of a publication between instances.
//!
//! The publishing instance encodes the body (the value and the publication id) with
//! rmp-serde; the publish script stores that body in the replay buffer and fans out
//! `epoch, seq, time` (MessagePack values packed by the script) followed by the same
//! body. Decoding reads the four values in order.
//!
//! A body of at least `redis.compress_above_bytes` (0: never) is stored and fanned out
//! compressed: the byte `0xc1` (which MessagePack never uses, so no plain body starts
//! with it), `d` for raw DEFLATE, the plain length (u32, big-endian), then the DEFLATE
//! stream — used only when it is smaller. Every instance reads both forms; inflating
//! stops at [`MAX_BODY_BYTES`], so a forged envelope cannot exhaust memory.

use crate::broker::Publication;
use crate::protocol::{RoomName, compress, pack_named};
use crate::stream::Epoch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// First byte of a compressed body: never used by MessagePack.
const COMPRESSED: u8 = 0xc1;
/// Second byte: the algorithm, raw DEFLATE.
const DEFLATE: u8 = b'd';
/// Largest body an instance inflates. Far above any payload limit; a compressed body
/// that claims or inflates to more is refused as malformed.
pub const MAX_BODY_BYTES: usize = 16 << 20;

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
pub enum EnvelopeError {
    /// Not the MessagePack this version writes.
    #[error("malformed envelope: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A compressed body that is corrupt, or would inflate beyond [`MAX_BODY_BYTES`].
    #[error("malformed compressed envelope: {0}")]
    Compressed(&'static str),
}

impl Body {
    /// Encodes the body, compressed when it is at least `compress_above` bytes long
    /// (0: never) and compression makes it smaller.
    pub fn encode(&self, compress_above: usize) -> Vec<u8> {
        let plain = pack_named(self).expect("bodies always encode");
        if compress_above == 0 || plain.len() < compress_above || plain.len() > MAX_BODY_BYTES {
            return plain;
        }
        let deflated = compress::deflate(&plain);
        if deflated.len() + 6 >= plain.len() {
            return plain;
        }
        let mut body = Vec::with_capacity(deflated.len() + 6);
        body.extend_from_slice(&[COMPRESSED, DEFLATE]);
        body.extend_from_slice(&(plain.len() as u32).to_be_bytes());
        body.extend_from_slice(&deflated);
        body
    }

    /// Decodes a body stored in the replay buffer.
    pub fn decode(bytes: &[u8]) -> Result<Body, EnvelopeError> {
        match inflate(bytes)? {
            Some(plain) => Ok(rmp_serde::from_slice(&plain)?),
            None => Ok(rmp_serde::from_slice(bytes)?),
        }
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
    let body = Body::decode(de.get_ref())?;
    Ok(body.into_publication(room, Epoch::new(epoch), seq, time_ms))
}

/// The plain body of a compressed one (`None`: `bytes` is not compressed).
fn inflate(bytes: &[u8]) -> Result<Option<Vec<u8>>, EnvelopeError> {
    let [COMPRESSED, algorithm, l0, l1, l2, l3, deflated @ ..] = bytes else {
        return Ok(None);
    };
    if *algorithm != DEFLATE {
        return Err(EnvelopeError::Compressed("unknown compression"));
    }
    let length = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    if length > MAX_BODY_BYTES {
        return Err(EnvelopeError::Compressed("claims more than the body limit"));
    }
    // Inflating stops at the announced length: a stream that would go on is refused.
    let plain = compress::inflate(deflated, length)
        .map_err(|_| EnvelopeError::Compressed("corrupt, or longer than announced"))?;
    if plain.len() != length {
        return Err(EnvelopeError::Compressed("shorter than announced"));
    }
    Ok(Some(plain))
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
            let mut compressed = vec![COMPRESSED, DEFLATE, 0, 0, 1, 0];
            compressed.extend_from_slice(&bytes);
            let _ = Body::decode(&compressed);
        }

        /// Large bodies round-trip through compression; small ones stay plain.
        #[test]
        fn bodies_round_trip_compressed_or_not(
            text in "[a-z ]{0,3000}",
            threshold in prop::sample::select(vec![0usize, 64, 1024]),
        ) {
            let body = Body { id: 7, data: json!({"text": text, "again": text}), trace: None };
            let encoded = body.encode(threshold);
            let plain = rmp_serde::to_vec_named(&body).unwrap();
            if threshold == 0 || plain.len() < threshold {
                prop_assert_eq!(&encoded, &plain);
            }
            prop_assert!(encoded.len() <= plain.len());
            prop_assert_eq!(Body::decode(&encoded).unwrap(), body);
        }
    }

    fn envelope(epoch: &str, seq: u64, body: &[u8]) -> Vec<u8> {
        // What `cmsgpack.pack(epoch, seq, now) .. body` produces.
        let mut envelope = Vec::new();
        rmp::encode::write_str(&mut envelope, epoch).unwrap();
        rmp::encode::write_uint(&mut envelope, seq).unwrap();
        rmp::encode::write_uint(&mut envelope, 1_700_000_000_123).unwrap();
        envelope.extend_from_slice(body);
        envelope
    }

    #[test]
    fn a_compressed_envelope_decodes_like_a_plain_one() {
        let body = Body {
            id: 9,
            data: json!({"description": "a long text ".repeat(200)}),
            trace: None,
        };
        let compressed = body.encode(1024);
        assert_eq!(compressed[0], COMPRESSED);
        assert!(compressed.len() < body.encode(0).len() / 10);
        let publication =
            decode(RoomName::new_unchecked("r"), &envelope("e", 3, &compressed)).unwrap();
        assert_eq!((publication.seq, publication.id), (3, 9));
        assert_eq!(publication.data, body.data);
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // 64 MiB of zeros deflate to about 64 KiB; inflating stops at the limit.
        let zeros = vec![0u8; 64 << 20];
        let deflated = miniz_oxide::deflate::compress_to_vec(&zeros, 1);
        for claimed in [MAX_BODY_BYTES as u32, 100, u32::MAX] {
            let mut body = vec![COMPRESSED, DEFLATE];
            body.extend_from_slice(&claimed.to_be_bytes());
            body.extend_from_slice(&deflated);
            let err = Body::decode(&body).unwrap_err();
            assert!(matches!(err, EnvelopeError::Compressed(_)), "{err}");
            assert!(decode(RoomName::new_unchecked("r"), &envelope("e", 1, &body)).is_err());
        }
    }

    #[test]
    fn decodes_what_the_script_sends() {
        let body = Body {
            id: 42,
            data: json!({"a": [1, "x", null], "b": 2.5}),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let envelope = envelope("e1", 7, &body.encode(0));
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
