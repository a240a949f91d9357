//! Live figures shared by every simulated user and publisher: counters, and latency
//! histograms sharded so that thousands of users record without contending on one lock.
//! The sampler drains the shards once per interval into the run's totals.

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Highest latency the histograms track (µs); anything above is clamped to it.
const MAX_MICROS: u64 = 120_000_000;
/// Latency histogram shards.
const SHARDS: usize = 32;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Microseconds since the Unix epoch (the clock publishers stamp messages with).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Records a duration into a histogram, clamped into its range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    let _ = histogram.record(micros.clamp(1, MAX_MICROS));
}

/// Counters and histograms updated while the run goes on.
pub struct Live {
    /// Users whose every room subscription is active right now.
    pub connected: AtomicI64,
    /// Users that completed their first subscriptions.
    pub ready: AtomicU64,
    /// Room messages received by all users.
    pub delivered: AtomicU64,
    /// Publishes sent (first attempts).
    pub publish_attempts: AtomicU64,
    /// Publishes acknowledged.
    pub acked: AtomicU64,
    /// Publishes that failed for good (error or timeout).
    pub publish_failures: AtomicU64,
    /// Lost connections (users and publishers).
    pub disconnects: AtomicU64,
    /// Users whose client gave up.
    pub gave_up: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
    resume: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            connected: AtomicI64::new(0),
            ready: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            publish_attempts: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            resume: Mutex::new(histogram()),
        }
    }
}

impl Live {
    /// A delivery with its publish-to-receive latency, recorded in shard `shard`.
    pub fn delivery(&self, shard: usize, latency_micros: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let mut histogram = self.latency[shard % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        record(&mut histogram, latency_micros);
    }

    /// A user resumed every room after losing its connection.
    pub fn resumed(&self, took: Duration) {
        let mut histogram = self
            .resume
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        record(&mut histogram, took.as_micros() as u64);
    }

    /// Moves the latencies recorded since the last call into `into`.
    pub fn drain_latency(&self, into: &mut Histogram<u64>) {
        for shard in &self.latency {
            let mut histogram = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = into.add(&*histogram);
            histogram.reset();
        }
    }

    /// Every resume time recorded so far.
    pub fn resume_times(&self) -> Histogram<u64> {
        self.resume
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_from_all_shards_are_drained_once() {
        let live = Live::default();
        for user in 0..100 {
            live.delivery(user, 1000 + user as u64);
        }
        let mut first = histogram();
        live.drain_latency(&mut first);
        assert_eq!(first.len(), 100);
        assert_eq!(Live::get(&live.delivered), 100);
        let mut second = histogram();
        live.drain_latency(&mut second);
        assert_eq!(second.len(), 0, "drained latencies are not counted twice");
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut h = histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_MICROS / 2);
    }
}
