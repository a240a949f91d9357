//! Exact accounting of what one subscriber received in one room.

use roomcast::client::Event;

/// Sequence numbers a subscriber received, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Received sequence numbers, in order of arrival.
    pub seqs: Vec<u64>,
    /// `reset` frames and unrecovered resumes seen.
    pub losses: usize,
}

/// What is wrong with a ledger.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Expected but never received.
    pub missing: usize,
    /// Received more than once.
    pub duplicated: usize,
    /// Received after a higher sequence number.
    pub out_of_order: usize,
}

impl Ledger {
    /// Records a client event of `room`.
    pub fn record(&mut self, room: &str, event: &Event) {
        match event {
            Event::Message { room: r, seq, .. } if r == room => self.seqs.push(*seq),
            Event::Reset { room: r, .. } if r == room => self.losses += 1,
            Event::Subscribed {
                room: r,
                resumed: true,
                recovered: false,
                ..
            } if r == room => self.losses += 1,
            _ => {}
        }
    }

    /// The highest sequence number received.
    pub fn last(&self) -> u64 {
        self.seqs.iter().copied().max().unwrap_or(0)
    }

    /// Compares with the expected `first..=last`.
    pub fn verdict(&self, first: u64, last: u64) -> Verdict {
        let mut seen = std::collections::HashSet::new();
        let mut verdict = Verdict::default();
        let mut highest = 0;
        for &seq in &self.seqs {
            if !seen.insert(seq) {
                verdict.duplicated += 1;
            }
            if seq < highest {
                verdict.out_of_order += 1;
            }
            highest = highest.max(seq);
        }
        verdict.missing = (first..=last).filter(|s| !seen.contains(s)).count();
        verdict
    }
}
