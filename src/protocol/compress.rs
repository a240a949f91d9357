//! Per-message compression: raw DEFLATE (RFC 1951, what browsers inflate with
//! `DecompressionStream('deflate-raw')`), carried in frames as standard base64 (RFC 4648,
//! with padding) so that JSON and Server-Sent Events can hold it.
//!
//! Server → client: a subscription with `compress: "deflate"` gets `message` frames whose
//! `data` is the base64 of the deflated JSON text (`compressed: true`) when that text is at
//! least the server's threshold and compressing makes the frame smaller. Client → server: a
//! `publish` with `compress: "deflate"` carries its `data` the same way; the server inflates
//! it no further than `max_frame_bytes` (see [`inflate`]).
//!
//! The same DEFLATE helpers serve the broker envelopes between instances.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// DEFLATE level: the fastest (most of the gain on JSON at a fraction of the CPU).
pub const LEVEL: u8 = 1;
/// Bytes a compressed `data` adds to a frame besides itself: the quotes of the string and
/// `,"compressed":true` (JSON).
const FRAME_OVERHEAD: usize = 20;

/// A compression a subscription may ask for, or a publish may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressFormat {
    /// Raw DEFLATE in base64.
    Deflate,
}

impl CompressFormat {
    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            CompressFormat::Deflate => "deflate",
        }
    }

    /// The format named `name`, if known.
    pub fn from_name(name: &str) -> Option<Self> {
        (name == "deflate").then_some(CompressFormat::Deflate)
    }
}

/// Raw DEFLATE of `bytes` at [`LEVEL`].
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(bytes, LEVEL)
}

/// Why a compressed input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It would inflate to more than the limit: inflating stopped there.
    #[error("inflates to more than {0} bytes")]
    TooLarge(usize),
    /// Not valid base64, not a valid DEFLATE stream, or not UTF-8 text.
    #[error("not valid {0}")]
    Malformed(&'static str),
}

/// Inflates a raw DEFLATE stream, stopping at `limit` bytes of output: a stream that
/// would go on (a decompression bomb) is refused without allocating more than `limit`.
pub fn inflate(deflated: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    use miniz_oxide::inflate::TINFLStatus;
    miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, limit).map_err(|err| {
        match err.status {
            TINFLStatus::HasMoreOutput => InflateError::TooLarge(limit),
            _ => InflateError::Malformed("DEFLATE"),
        }
    })
}

/// The base64 of the deflated `text`, when `text` is at least `above` bytes long (0:
/// never) and the result, with its frame overhead, is shorter than `text`.
pub fn pack(text: &str, above: usize) -> Option<String> {
    if above == 0 || text.len() < above {
        return None;
    }
    let deflated = deflate(text.as_bytes());
    // Base64 makes 4 characters of every 3 bytes.
    if deflated.len().div_ceil(3) * 4 + FRAME_OVERHEAD >= text.len() {
        return None;
    }
    Some(base64::engine::general_purpose::STANDARD.encode(deflated))
}

/// The text of a packed `data` (see [`pack`]), at most `limit` bytes of it.
pub fn unpack(packed: &str, limit: usize) -> Result<String, InflateError> {
    // A stream twice the limit is no honest compression of at most `limit` bytes;
    // refusing it before decoding bounds that allocation as well.
    if packed.len() > limit.saturating_mul(2) {
        return Err(InflateError::TooLarge(limit));
    }
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(packed)
        .map_err(|_| InflateError::Malformed("base64"))?;
    let text = inflate(&deflated, limit)?;
    String::from_utf8(text).map_err(|_| InflateError::Malformed("UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is packed unpacks to the same text; what is not packed would not
        /// have been smaller.
        #[test]
        fn packed_texts_round_trip(text in "[a-z {}\":,0-9]{0,4000}", above in 0usize..2048) {
            match pack(&text, above) {
                Some(packed) => {
                    prop_assert!(above > 0 && text.len() >= above);
                    prop_assert!(packed.len() + FRAME_OVERHEAD < text.len());
                    prop_assert_eq!(unpack(&packed, text.len()).unwrap(), text);
                }
                None => prop_assert!(above == 0 || text.len() < above
                    || deflate(text.as_bytes()).len().div_ceil(3) * 4 + FRAME_OVERHEAD
                        >= text.len()),
            }
        }

        /// Arbitrary input unpacks or says why, never panics.
        #[test]
        fn arbitrary_input_never_panics(text in ".{0,300}") {
            let _ = unpack(&text, 1024);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 32 MiB of zeros at the strongest level: about 32 KiB.
        let zeros = vec![0u8; 32 << 20];
        let bomb = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        let packed = base64::engine::general_purpose::STANDARD.encode(bomb);
        assert!(packed.len() < 64 << 10, "{} bytes", packed.len());
        assert_eq!(unpack(&packed, 65536), Err(InflateError::TooLarge(65536)));
        assert_eq!(
            unpack("not base64!", 65536),
            Err(InflateError::Malformed("base64"))
        );
        assert_eq!(
            unpack("AAAA", 65536),
            Err(InflateError::Malformed("DEFLATE"))
        );
    }

    #[test]
    fn small_or_incompressible_texts_stay_plain() {
        let json = format!("{{\"text\":\"{}\"}}", "edited ".repeat(300));
        assert!(pack(&json, 1024).is_some());
        assert_eq!(pack(&json, 0), None);
        assert_eq!(pack(&json, json.len() + 1), None);
        assert_eq!(pack(r#"{"a":1}"#, 1), None);
    }
}
