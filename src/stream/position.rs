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
        Epoch(format!("{:016x}", rand::random::<u64>()).into())
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
