//! The pure core of the delivery guarantees: stream positions, the replay buffer, the
//! idempotency window, the recovery and sequence-continuity decisions, and a room's
//! delivery order on one instance as a state machine ([`Follower`]).
//!
//! Nothing here does I/O or knows about actors; the room actors and the brokers wrap it.

mod dedupe;
mod follower;
mod position;
mod recovery;
mod replay;

pub use dedupe::DedupeWindow;
pub use follower::{Action, Answer, Follower, FollowerSettings, Page, Read, RetryCause, Sequenced};
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

#[cfg(test)]
mod seam_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// For any stream, buffer bound and resume point: either the resume is exact —
        /// the replay plus the live messages that follow are precisely the messages after
        /// the resume point, each once, in order — or it is reported as lost, and then
        /// the buffer really does not hold the next message the client needs.
        #[test]
        fn replay_then_live_is_exactly_the_continuation(
            published in 0u64..200,
            live in 0u64..50,
            capacity in 1usize..64,
            since_seq in 0u64..260,
        ) {
            let epoch = Epoch::new("e");
            let mut buffer = ReplayBuffer::new(capacity, u64::MAX);
            for seq in 1..=published {
                buffer.push(seq, 0, seq).unwrap();
            }
            let top = Position::new(epoch.clone(), published);
            let since = Position::new(epoch, since_seq);
            match recover(&since, &top, buffer.first_seq()) {
                Recovery::UpToDate => prop_assert_eq!(since_seq, published),
                Recovery::Replay { after } => {
                    prop_assert_eq!(after, since_seq);
                    let mut received = buffer.range(after, published).expect("covered");
                    received.extend(published + 1..=published + live);
                    let expected: Vec<u64> = (since_seq + 1..=published + live).collect();
                    prop_assert_eq!(received, expected);
                }
                Recovery::Lost(LossReason::TooFarBehind) => {
                    prop_assert!(since_seq < published);
                    prop_assert!(buffer.first_seq().is_none_or(|first| first > since_seq + 1));
                    prop_assert!(buffer.range(since_seq, published).is_none());
                }
                Recovery::Lost(LossReason::AheadOfStream) => prop_assert!(since_seq > published),
                Recovery::Lost(LossReason::EpochChanged) => prop_assert!(false, "same epoch"),
            }
        }
    }
}
