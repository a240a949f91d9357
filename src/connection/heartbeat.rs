//! When a connection sends its heartbeats.
//!
//! Every connection pings once per period, and each of an instance's connections used to
//! do so at its own phase (its connect time): with thousands of connections the
//! instance woke for a ping or two at a time, hundreds of times a second, and an idle
//! instance spent most of its CPU going to sleep and waking up. Here every tick of every
//! connection lies on one grid of the instance ([`Schedule`]): a period is a whole
//! number of grid steps (about a quarter of a second at most), so the connections due
//! in the same step share one timer slot, one wake-up, and their pongs come back
//! together. A connection's first ping comes a period after it opened, delayed to the
//! next step; the period itself is exact, so clients see the announced interval.

use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The longest grid step: how far a first ping may be delayed to share a wake-up.
const MAX_STEP: Duration = Duration::from_millis(250);

/// The heartbeat period and the instance's grid that every tick lies on.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    period: Duration,
    /// `period` divided into whole steps of at most [`MAX_STEP`].
    step: Duration,
    /// Where the grid starts: when the instance's connection context was built.
    origin: Instant,
}

impl Schedule {
    /// A grid starting now. `period` must not be zero.
    pub fn new(period: Duration) -> Self {
        let steps = period.as_nanos().div_ceil(MAX_STEP.as_nanos()).max(1) as u32;
        let step = period / steps;
        Schedule {
            // Whole steps, so that every tick stays on the grid (it is shorter than the
            // configured period by less than a nanosecond per step).
            period: step * steps,
            step,
            origin: Instant::now(),
        }
    }

    /// The heartbeat period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The first grid point at or after `at`.
    fn on_grid(&self, at: Instant) -> Instant {
        let step = self.step.as_nanos();
        let into_step = at.saturating_duration_since(self.origin).as_nanos() % step;
        at + Duration::from_nanos(((step - into_step) % step) as u64)
    }

    /// The ticks of a connection opened now.
    pub fn beat(&self) -> Beat {
        let first = self.on_grid(Instant::now() + self.period);
        Beat {
            ticker: tokio::time::interval_at(first, self.period),
            next: first,
            armed: false,
        }
    }
}

/// One connection's heartbeat timer, polled only when that can change something. The
/// pump's loop turns once per delivery, and re-polling a timer nobody woke is wasted work
/// (its entry is per connection, so each poll misses the cache: about 2 % of a server's
/// CPU in the one-room reference run). Once a poll has left this task's waker with the
/// timer, the timer wakes the task at its deadline, and until then there is nothing to
/// poll.
pub struct Beat {
    ticker: tokio::time::Interval,
    /// The deadline of the next tick.
    next: Instant,
    /// The timer holds this task's waker for `next`.
    armed: bool,
}

impl Beat {
    /// Ready at the deadline. While the timer is armed and the deadline has not come,
    /// pending without touching the timer, which holds this task's waker already. (Not a
    /// `select!` precondition: those are evaluated once per `select!`, and one `select!`
    /// can wait past the deadline, since deliveries written directly do not end it.)
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && Instant::now() < self.next {
            return Poll::Pending;
        }
        match self.ticker.poll_tick(cx) {
            Poll::Ready(deadline) => {
                // The interval resets its timer without registering it: the next poll
                // arms it again.
                self.armed = false;
                self.next = deadline + self.ticker.period();
                Poll::Ready(())
            }
            Poll::Pending => {
                self.armed = true;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn connections_opened_at_different_moments_share_a_tick() {
        let _entered = runtime().enter();
        let period = Duration::from_secs(25);
        let schedule = Schedule::new(period);
        let mut firsts = Vec::new();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(3));
            firsts.push(schedule.beat().next);
        }
        // Opened a few ms apart right after the grid's start: all four ping first on
        // its first step after a period, so one wake-up serves them all.
        let step = schedule.origin + period + MAX_STEP;
        assert_eq!(firsts, vec![step; 4]);
    }

    #[test]
    fn a_tick_comes_a_period_after_the_open_then_every_period() {
        let runtime = runtime();
        runtime.block_on(async {
            let schedule = Schedule::new(Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(30)).await;
            let opened = Instant::now();
            let mut beat = schedule.beat();
            let mut deadlines = vec![beat.next];
            for _ in 0..2 {
                poll_fn(|cx| beat.poll(cx)).await;
                assert!(Instant::now() >= *deadlines.last().unwrap());
                deadlines.push(beat.next);
            }
            let first = deadlines[0] - opened;
            assert!(first >= schedule.period() && first < schedule.period() * 2);
            assert_eq!(deadlines[0], schedule.origin + schedule.period() * 2);
            assert_eq!(deadlines[1] - deadlines[0], schedule.period());
            assert_eq!(deadlines[2] - deadlines[1], schedule.period());
        });
    }

    #[test]
    fn a_period_is_whole_steps_of_at_most_a_quarter_second() {
        let _entered = runtime().enter();
        for (period_ms, steps) in [(100, 1), (250, 1), (251, 2), (3_333, 14), (25_000, 100)] {
            let period = Duration::from_millis(period_ms);
            let schedule = Schedule::new(period);
            assert_eq!(schedule.period, schedule.step * steps, "{period_ms} ms");
            assert!(schedule.step <= MAX_STEP);
            assert!(period - schedule.period < Duration::from_nanos(u64::from(steps)));
        }
    }
}
