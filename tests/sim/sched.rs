//! The seeded randomness and the clock of a simulation run: one pseudo-random generator
//! (SplitMix64: tiny, fast, and the same sequence on every platform) and a queue of
//! events ordered by time, ties broken by the order they were scheduled in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// An index below `len` (> 0).
    pub fn pick(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }
}

struct Entry<E> {
    at: u64,
    order: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Simulated time (ms) and the events still to happen.
pub struct Scheduler<E> {
    pub now: u64,
    queue: BinaryHeap<Reverse<Entry<E>>>,
    order: u64,
}

impl<E> Scheduler<E> {
    pub fn new() -> Self {
        Scheduler {
            now: 0,
            queue: BinaryHeap::new(),
            order: 0,
        }
    }

    /// Schedules `event` `delay` ms from now.
    pub fn after(&mut self, delay: u64, event: E) {
        self.order += 1;
        self.queue.push(Reverse(Entry {
            at: self.now + delay,
            order: self.order,
            event,
        }));
    }

    /// The next event, with the clock moved to its time.
    pub fn next(&mut self) -> Option<E> {
        let Reverse(entry) = self.queue.pop()?;
        self.now = entry.at;
        Some(entry.event)
    }
}
