//! The pure core of the delivery guarantees: stream positions, the replay buffer, the
//! idempotency window, and the recovery and sequence-continuity decisions.
//!
//! Nothing here does I/O or knows about actors; the room actors and the brokers wrap it.

mod dedupe;
mod position;
mod recovery;
mod replay;

pub use dedupe::DedupeWindow;
pub use position::{Epoch, Position};
pub use recovery::{LossReason, Recovery, SeqCheck, check_seq, recover};
pub use replay::{NotConsecutive, ReplayBuffer};

/// Milliseconds since the Unix epoch, the unit of publish times on the wire.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
