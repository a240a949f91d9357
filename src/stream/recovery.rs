//! The two decisions at the heart of the delivery guarantees, as pure functions:
//! can a client that last saw position `since` be resumed exactly, and where does an
//! incoming publication stand relative to what has already been delivered.

use super::Position;

/// Outcome of a resume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The client has seen everything up to the top: nothing to replay.
    UpToDate,
    /// Replay every publication with `after < seq <= top.seq`, then continue live.
    Replay {
        /// The last sequence number the client saw.
        after: u64,
    },
    /// The missed publications cannot be replayed exactly; the client must re-fetch its
    /// state and continue live from the current top.
    Lost(LossReason),
}

/// Why a resume could not be served exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The stream's history was lost since the client's position (new epoch).
    EpochChanged,
    /// The replay buffer no longer reaches back to the client's position.
    TooFarBehind,
    /// The client claims a position beyond the stream's top, which means the stream was
    /// rewound under it.
    AheadOfStream,
}

impl LossReason {
    /// Stable name sent to clients.
    pub const fn name(self) -> &'static str {
        match self {
            LossReason::EpochChanged => "epoch_changed",
            LossReason::TooFarBehind => "too_far_behind",
            LossReason::AheadOfStream => "ahead_of_stream",
        }
    }
}

/// Decides whether a client at `since` can be resumed exactly against a stream whose
/// top is `top` and whose replay buffer starts at `first_buffered` (`None`: empty).
///
/// Exact means: epochs equal, and every sequence number in `(since.seq, top.seq]` is
/// still buffered. Anything else is reported as lost, never replayed partially.
pub fn recover(since: &Position, top: &Position, first_buffered: Option<u64>) -> Recovery {
    if since.epoch != top.epoch {
        return Recovery::Lost(LossReason::EpochChanged);
    }
    if since.seq > top.seq {
        return Recovery::Lost(LossReason::AheadOfStream);
    }
    if since.seq == top.seq {
        return Recovery::UpToDate;
    }
    match first_buffered {
        Some(first) if first <= since.seq + 1 => Recovery::Replay { after: since.seq },
        _ => Recovery::Lost(LossReason::TooFarBehind),
    }
}

/// Where an incoming publication's sequence number stands against the last delivered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// The next expected publication: deliver it.
    Next,
    /// Already delivered (a late or repeated copy): drop it.
    Duplicate,
    /// Publications `(last, incoming)` are missing: fill them before delivering this one.
    Gap {
        /// The last delivered sequence number.
        last: u64,
        /// The incoming publication's sequence number.
        incoming: u64,
    },
}

/// Classifies publication `incoming` given that `last` was the last one delivered.
pub fn check_seq(last: u64, incoming: u64) -> SeqCheck {
    if incoming <= last {
        SeqCheck::Duplicate
    } else if incoming == last + 1 {
        SeqCheck::Next
    } else {
        SeqCheck::Gap { last, incoming }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Epoch;

    fn pos(epoch: &str, seq: u64) -> Position {
        Position::new(Epoch::new(epoch), seq)
    }

    #[test]
    fn same_position_is_up_to_date() {
        assert_eq!(
            recover(&pos("a", 7), &pos("a", 7), None),
            Recovery::UpToDate
        );
        assert_eq!(
            recover(&pos("a", 0), &pos("a", 0), None),
            Recovery::UpToDate
        );
    }

    #[test]
    fn replay_when_the_buffer_reaches_back() {
        assert_eq!(
            recover(&pos("a", 4), &pos("a", 9), Some(5)),
            Recovery::Replay { after: 4 }
        );
        assert_eq!(
            recover(&pos("a", 4), &pos("a", 9), Some(1)),
            Recovery::Replay { after: 4 }
        );
    }

    #[test]
    fn lost_when_one_message_is_missing_from_the_buffer() {
        assert_eq!(
            recover(&pos("a", 4), &pos("a", 9), Some(6)),
            Recovery::Lost(LossReason::TooFarBehind)
        );
        assert_eq!(
            recover(&pos("a", 4), &pos("a", 9), None),
            Recovery::Lost(LossReason::TooFarBehind)
        );
    }

    #[test]
    fn lost_when_epochs_differ_even_if_seqs_line_up() {
        assert_eq!(
            recover(&pos("a", 9), &pos("b", 9), Some(1)),
            Recovery::Lost(LossReason::EpochChanged)
        );
    }

    #[test]
    fn lost_when_the_client_is_ahead_of_the_stream() {
        assert_eq!(
            recover(&pos("a", 12), &pos("a", 9), Some(1)),
            Recovery::Lost(LossReason::AheadOfStream)
        );
    }

    #[test]
    fn seq_checks() {
        assert_eq!(check_seq(4, 5), SeqCheck::Next);
        assert_eq!(check_seq(4, 4), SeqCheck::Duplicate);
        assert_eq!(check_seq(4, 2), SeqCheck::Duplicate);
        assert_eq!(
            check_seq(4, 8),
            SeqCheck::Gap {
                last: 4,
                incoming: 8
            }
        );
        assert_eq!(check_seq(0, 1), SeqCheck::Next);
    }
}
