//! A room's replay buffer: the most recent publications, bounded by count and by age.
//!
//! The same structure backs the embedded broker's history and each room actor's local
//! cache. It holds entries with consecutive sequence numbers (an entry is only appended
//! right after its predecessor), so "does the buffer reach back to seq N" is one
//! comparison and a range is a slice of the deque.

use std::collections::VecDeque;

/// One buffered entry: its sequence number, its publish time and the item itself.
#[derive(Debug, Clone)]
struct Entry<T> {
    seq: u64,
    time_ms: u64,
    item: T,
}

/// Bounded buffer of consecutive publications.
#[derive(Debug, Clone)]
pub struct ReplayBuffer<T> {
    entries: VecDeque<Entry<T>>,
    max_len: usize,
    max_age_ms: u64,
}

/// Appending an entry whose sequence number does not follow the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay buffer expects seq {expected}, got {got}")]
pub struct NotConsecutive {
    /// The sequence number the buffer expected next.
    pub expected: u64,
    /// The sequence number that was offered.
    pub got: u64,
}

impl<T: Clone> ReplayBuffer<T> {
    /// An empty buffer keeping at most `max_len` entries no older than `max_age_ms`.
    pub fn new(max_len: usize, max_age_ms: u64) -> Self {
        ReplayBuffer {
            entries: VecDeque::new(),
            max_len,
            max_age_ms,
        }
    }

    /// Appends the entry for `seq`, which must be the successor of the last entry (any
    /// seq is accepted when the buffer is empty). Evicts entries over the count bound.
    pub fn push(&mut self, seq: u64, time_ms: u64, item: T) -> Result<(), NotConsecutive> {
        if let Some(last) = self.entries.back()
            && seq != last.seq + 1
        {
            return Err(NotConsecutive {
                expected: last.seq + 1,
                got: seq,
            });
        }
        if self.max_len == 0 {
            return Ok(());
        }
        if self.entries.len() == self.max_len {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { seq, time_ms, item });
        Ok(())
    }

    /// Drops everything (used when the stream's epoch changes).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Evicts entries older than the age bound, relative to `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.max_age_ms);
        while self.entries.front().is_some_and(|e| e.time_ms < cutoff) {
            self.entries.pop_front();
        }
    }

    /// Number of buffered entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sequence number of the oldest buffered entry.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    /// Sequence number of the newest buffered entry.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    /// The entries with `after < seq <= up_to`, oldest first, if the buffer holds every
    /// one of them; `None` when the buffer does not reach back to `after + 1` or
    /// forward to `up_to`. An empty range is always `Some(empty)`.
    pub fn range(&self, after: u64, up_to: u64) -> Option<Vec<T>> {
        if up_to <= after {
            return Some(Vec::new());
        }
        let first = self.first_seq()?;
        let last = self.last_seq()?;
        if first > after + 1 || last < up_to {
            return None;
        }
        let start = (after + 1 - first) as usize;
        let end = (up_to - first + 1) as usize;
        Some(
            self.entries
                .range(start..end)
                .map(|e| e.item.clone())
                .collect(),
        )
    }

    /// The entry for `seq`, if buffered.
    pub fn get(&self, seq: u64) -> Option<&T> {
        let first = self.first_seq()?;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(index).map(|e| &e.item)
    }

    /// The newest `limit` entries, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<T> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries
            .iter()
            .skip(skip)
            .map(|e| e.item.clone())
            .collect()
    }

    /// Up to `limit` entries with `seq > after`, oldest first.
    pub fn after(&self, after: u64, limit: usize) -> Vec<T> {
        let Some(first) = self.first_seq() else {
            return Vec::new();
        };
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        self.entries
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| e.item.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(from: u64, to: u64, max_len: usize) -> ReplayBuffer<u64> {
        let mut buffer = ReplayBuffer::new(max_len, 1_000);
        for seq in from..=to {
            buffer.push(seq, seq * 10, seq).unwrap();
        }
        buffer
    }

    #[test]
    fn count_bound_evicts_oldest() {
        let buffer = filled(1, 10, 4);
        assert_eq!(buffer.len(), 4);
        assert_eq!(buffer.first_seq(), Some(7));
        assert_eq!(buffer.last_seq(), Some(10));
    }

    #[test]
    fn rejects_non_consecutive_appends() {
        let mut buffer = filled(1, 3, 10);
        assert_eq!(
            buffer.push(5, 50, 5),
            Err(NotConsecutive {
                expected: 4,
                got: 5
            })
        );
        assert_eq!(buffer.push(3, 30, 3).unwrap_err().expected, 4);
        buffer.push(4, 40, 4).unwrap();
    }

    #[test]
    fn age_bound_evicts_old_entries() {
        let mut buffer = filled(1, 10, 100);
        // max age 1000 ms, now = 1055 → cutoff 55: entries with time < 55 (seq 1..=5) go.
        buffer.prune(1_055);
        assert_eq!(buffer.first_seq(), Some(6));
        buffer.prune(10_000);
        assert!(buffer.is_empty());
    }

    #[test]
    fn range_requires_full_coverage() {
        let buffer = filled(5, 10, 100);
        assert_eq!(buffer.range(4, 10), Some(vec![5, 6, 7, 8, 9, 10]));
        assert_eq!(buffer.range(7, 9), Some(vec![8, 9]));
        assert_eq!(buffer.range(3, 10), None, "seq 4 is not buffered");
        assert_eq!(buffer.range(7, 11), None, "seq 11 is not buffered");
        assert_eq!(buffer.range(10, 10), Some(vec![]));
        assert_eq!(ReplayBuffer::<u64>::new(4, 10).range(0, 1), None);
    }

    #[test]
    fn get_by_seq() {
        let buffer = filled(5, 10, 100);
        assert_eq!(buffer.get(5), Some(&5));
        assert_eq!(buffer.get(10), Some(&10));
        assert_eq!(buffer.get(4), None);
        assert_eq!(buffer.get(11), None);
    }

    #[test]
    fn latest_and_after() {
        let buffer = filled(5, 10, 100);
        assert_eq!(buffer.latest(3), vec![8, 9, 10]);
        assert_eq!(buffer.latest(100).len(), 6);
        assert_eq!(buffer.after(7, 2), vec![8, 9]);
        assert_eq!(buffer.after(0, 2), vec![5, 6]);
        assert!(buffer.after(10, 5).is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut buffer = ReplayBuffer::new(0, 1_000);
        buffer.push(1, 0, 1u64).unwrap();
        assert!(buffer.is_empty());
    }
}
