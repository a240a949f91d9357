//! Exact accounting of what one subscriber received in one room: every sequence number is
//! checked, so the report can say how many messages were missing, duplicated or out of
//! order. Memory stays small when delivery is correct (a counter), and grows only with
//! the number of holes.

use serde::Serialize;
use std::collections::BTreeSet;

/// What one subscriber received in one room.
#[derive(Debug, Clone, Default)]
pub struct RoomLedger {
    /// Position after which the subscriber expects everything (from `subscribed`).
    start: Option<u64>,
    /// Next sequence number expected in order.
    next: u64,
    /// Sequence numbers skipped so far and not (yet) received.
    holes: BTreeSet<u64>,
    /// Messages received.
    pub received: u64,
    /// Received again after having been received.
    pub duplicated: u64,
    /// Received after a higher sequence number (a hole filled late).
    pub out_of_order: u64,
    /// Continuity losses the server announced (`reset`, unrecovered resume): the
    /// subscriber was told, so what it missed there is not counted as missing.
    pub announced_losses: u64,
    /// Messages of another epoch than the one the subscriber was told about.
    pub foreign_epoch: u64,
}

/// The verdict on a ledger once publishing is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Messages received.
    pub received: u64,
    /// Expected but never received.
    pub missing: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a higher sequence number.
    pub out_of_order: u64,
    /// Losses the server announced explicitly.
    pub announced_losses: u64,
    /// Messages of an epoch the subscriber was never told about.
    pub foreign_epoch: u64,
}

impl Tally {
    /// Adds another tally.
    pub fn add(&mut self, other: Tally) {
        self.received += other.received;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.announced_losses += other.announced_losses;
        self.foreign_epoch += other.foreign_epoch;
    }

    /// Messages lost, repeated, reordered or from an unannounced epoch.
    pub fn faults(&self) -> u64 {
        self.missing + self.duplicated + self.out_of_order + self.foreign_epoch
    }

    /// True when nothing was lost, repeated or reordered.
    pub fn is_clean(&self) -> bool {
        self.faults() == 0
    }
}

impl RoomLedger {
    /// The first subscription: everything after `seq` is expected.
    pub fn subscribed(&mut self, seq: u64) {
        if self.start.is_none() {
            self.start = Some(seq);
            self.next = seq + 1;
        }
    }

    /// The server announced a loss: continue expecting after `seq`; the holes before it
    /// are explained, not missing.
    pub fn reset(&mut self, seq: u64) {
        self.announced_losses += 1;
        self.holes.retain(|hole| *hole > seq);
        self.next = self.next.max(seq + 1);
        if self.start.is_none() {
            self.start = Some(seq);
        }
    }

    /// The server announced a new epoch (its sequence numbers start over): continue
    /// expecting after `seq` of the new epoch; what the old one still lacked is explained.
    pub fn restart(&mut self, seq: u64) {
        self.announced_losses += 1;
        self.holes.clear();
        self.next = seq + 1;
        self.start = Some(seq);
    }

    /// A message with sequence number `seq` arrived.
    pub fn message(&mut self, seq: u64) {
        self.received += 1;
        if self.start.is_none() {
            // A message before `subscribed` cannot happen; count it as the start.
            self.start = Some(seq - 1);
            self.next = seq;
        }
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            self.holes.extend(self.next..seq);
            self.next = seq + 1;
        } else if self.holes.remove(&seq) {
            self.out_of_order += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// A message of an epoch the subscriber was never told about arrived (its sequence
    /// number means nothing in this ledger).
    pub fn foreign_epoch(&mut self) {
        self.received += 1;
        self.foreign_epoch += 1;
    }

    /// The last sequence number received in order or beyond.
    pub fn last(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// The verdict, given that the room's last acknowledged message is `top`.
    pub fn tally(&self, top: u64) -> Tally {
        let tail = top.saturating_sub(self.last());
        Tally {
            received: self.received,
            missing: self.holes.len() as u64 + if self.start.is_some() { tail } else { 0 },
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            announced_losses: self.announced_losses,
            foreign_epoch: self.foreign_epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_is_clean() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(0);
        for seq in 1..=10 {
            ledger.message(seq);
        }
        assert_eq!(
            ledger.tally(10),
            Tally {
                received: 10,
                ..Tally::default()
            }
        );
        assert!(ledger.tally(10).is_clean());
    }

    #[test]
    fn a_gap_a_duplicate_and_a_reorder_are_each_counted() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(0);
        // 1 2 [3 missing] 4 5 5(dup) 7 6(late) 8
        for seq in [1, 2, 4, 5, 5, 7, 6, 8] {
            ledger.message(seq);
        }
        let tally = ledger.tally(8);
        assert_eq!(tally.missing, 1, "3 never came");
        assert_eq!(tally.duplicated, 1, "5 came twice");
        assert_eq!(tally.out_of_order, 1, "6 came after 7");
        assert!(!tally.is_clean());
        assert_eq!(tally.faults(), 3);
    }

    #[test]
    fn a_message_of_an_unannounced_epoch_is_a_fault() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(0);
        ledger.message(1);
        ledger.foreign_epoch();
        let tally = ledger.tally(1);
        assert_eq!((tally.received, tally.foreign_epoch), (2, 1));
        assert!(!tally.is_clean());
    }

    #[test]
    fn messages_after_the_last_received_count_as_missing() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(3);
        ledger.message(4);
        assert_eq!(
            ledger.tally(6).missing,
            2,
            "5 and 6 were acknowledged but never came"
        );
        let mut never = RoomLedger::default();
        never.subscribed(2);
        assert_eq!(never.tally(5).missing, 3);
    }

    #[test]
    fn an_announced_loss_is_not_missing() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(0);
        ledger.message(1);
        ledger.message(4); // 2 and 3 are holes...
        ledger.reset(5); // ...explained by the server; live continues after 5
        ledger.message(6);
        let tally = ledger.tally(6);
        assert_eq!((tally.missing, tally.announced_losses), (0, 1));
    }

    #[test]
    fn a_new_epoch_starts_the_count_over() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(40);
        ledger.message(42); // 41 is a hole of the old epoch
        ledger.restart(3);
        ledger.message(4);
        let tally = ledger.tally(4);
        assert_eq!(
            (tally.missing, tally.announced_losses, tally.received),
            (0, 1, 2)
        );
    }

    #[test]
    fn the_start_position_bounds_what_is_expected() {
        let mut ledger = RoomLedger::default();
        ledger.subscribed(100);
        ledger.message(101);
        assert_eq!(
            ledger.tally(101),
            Tally {
                received: 1,
                ..Tally::default()
            }
        );
    }
}
