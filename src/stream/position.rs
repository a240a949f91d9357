//! Where a subscriber is in a room's stream: an epoch (which incarnation of the stream)
//! and a sequence number within it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Identifies one incarnation of a room's stream. When the history behind a room is
/// lost (the broker lost its data, or came back from an older snapshot), the room gets a
/// new epoch, and sequence numbers of different epochs are never compared.
///
/// Epochs are opaque strings: clients store and echo them, never order them.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps an epoch received from a client or a broker.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Epoch(value.into())
    }

    /// A fresh random epoch: 16 lowercase hex digits.
    pub fn generate() -> Self {
        // Every publish to Redis carries a fresh one (the function uses it only when the
        // room has no epoch yet), so it is written directly rather than through
        // `format!`.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let bits = rand::random::<u64>();
        let text: String = (0..16)
            .rev()
            .map(|nibble| DIGITS[((bits >> (nibble * 4)) & 0xf) as usize] as char)
            .collect();
        Epoch(text.into())
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a room's stream: the last sequence number seen within an epoch.
/// Sequence numbers start at 1; `seq = 0` means "before the first message".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The stream incarnation.
    pub epoch: Epoch,
    /// The last sequence number seen (0: none yet).
    pub seq: u64,
}

impl Position {
    /// Builds a position.
    pub fn new(epoch: Epoch, seq: u64) -> Self {
        Position { epoch, seq }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_epoch_is_sixteen_lowercase_hex_digits_and_fresh() {
        let epochs: Vec<Epoch> = (0..64).map(|_| Epoch::generate()).collect();
        for epoch in &epochs {
            let text = epoch.as_str();
            assert_eq!(text.len(), 16, "{text}");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{text}"
            );
        }
        // Every digit position takes more than one value over 64 epochs (a digit
        // written from the wrong bits would stay put).
        for position in 0..16 {
            let digits: std::collections::HashSet<u8> = epochs
                .iter()
                .map(|e| e.as_str().as_bytes()[position])
                .collect();
            assert!(digits.len() > 1, "digit {position} never changes");
        }
        assert_ne!(epochs[0], epochs[1]);
    }
}
