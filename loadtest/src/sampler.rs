//! Once a second: drains the users' latency shards into the run's totals, records a
//! timeline point, attributes the second to its publish-rate step, and refreshes the
//! progress display.

use crate::procstat::{self, CpuTimes};
use crate::progress::Progress;
use crate::publishers::Schedule;
use crate::report::{Percentiles, Point, Step};
use crate::stats::{Live, histogram};
use hdrhistogram::Histogram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timeline resolution.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Users connect and subscribe.
    Ramp,
    /// Publishers publish (since the instant given).
    Publish(Instant),
    /// Waiting for the last deliveries.
    Settle,
    /// Over: the sampler returns.
    Done,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Ramp => "ramp-up",
            Phase::Publish(_) => "publishing",
            Phase::Settle => "settling",
            Phase::Done => "done",
        }
    }
}

/// The processes started for the run, with their last known CPU times (a killed
/// process keeps the figure read last).
pub struct ServerSet {
    /// Name (`instance-N`, `redis`) and pid.
    pub entries: Vec<(String, u32)>,
    last_cpu: Mutex<Vec<CpuTimes>>,
}

impl ServerSet {
    /// The given processes.
    pub fn new(entries: Vec<(String, u32)>) -> ServerSet {
        let last_cpu = Mutex::new(vec![CpuTimes::default(); entries.len()]);
        ServerSet { entries, last_cpu }
    }

    /// CPU times of every process, in order.
    pub fn cpu(&self) -> Vec<CpuTimes> {
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        for (index, (_, pid)) in self.entries.iter().enumerate() {
            if let Some(cpu) = procstat::cpu_times(Some(*pid)) {
                last[index] = cpu;
            }
        }
        last.clone()
    }

    /// Runtime worker threads of every process, in order (0 for one without, or gone).
    pub fn runtime_threads(&self) -> Vec<usize> {
        self.entries
            .iter()
            .map(|(_, pid)| procstat::runtime_threads(*pid))
            .collect()
    }

    /// Resident memory of every process, in order (0 when gone).
    pub fn rss(&self) -> Vec<u64> {
        self.entries
            .iter()
            .map(|(_, pid)| procstat::resident_bytes(*pid).unwrap_or_default())
            .collect()
    }
}

/// What the sampler collected.
pub struct Sampled {
    /// One point per second.
    pub timeline: Vec<Point>,
    /// Every latency recorded.
    pub total: Histogram<u64>,
    /// Highest one-second CPU of the load generator, in cores.
    pub peak_generator: f64,
}

impl Default for Sampled {
    fn default() -> Self {
        Sampled {
            timeline: Vec::new(),
            total: histogram(),
            peak_generator: 0.0,
        }
    }
}

/// Latencies and deliveries per publish-rate step, filled as the steps go by (the run
/// reads it to stop stepping once latency has degraded).
pub struct StepLog(Mutex<Vec<StepAccumulator>>);

struct StepAccumulator {
    latency: Histogram<u64>,
    delivered: u64,
    secs: f64,
}

impl StepLog {
    /// An empty log for `steps` steps.
    pub fn new(steps: usize) -> StepLog {
        StepLog(Mutex::new(
            (0..steps)
                .map(|_| StepAccumulator {
                    latency: histogram(),
                    delivered: 0,
                    secs: 0.0,
                })
                .collect(),
        ))
    }

    fn add(&self, step: usize, latency: &Histogram<u64>, delivered: u64, secs: f64) {
        let mut steps = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(accumulator) = steps.get_mut(step) {
            let _ = accumulator.latency.add(latency);
            accumulator.delivered += delivered;
            accumulator.secs += secs;
        }
    }

    /// The figures of every step that ran, given the steps' rates and the number of
    /// subscriptions (which sets the deliveries each rate asks for).
    pub fn summary(&self, rates: &[f64], subscriptions: usize) -> Vec<Step> {
        let steps = self.0.lock().unwrap_or_else(|p| p.into_inner());
        rates
            .iter()
            .zip(steps.iter())
            .filter(|(_, step)| step.secs > 0.0)
            .map(|(rate, step)| Step {
                rate_per_room: *rate,
                offered_deliveries_per_sec: rate * subscriptions as f64,
                delivered_per_sec: step.delivered as f64 / step.secs,
                latency_ms: Percentiles::of(&step.latency),
            })
            .collect()
    }
}

/// Samples until the phase becomes [`Phase::Done`].
pub async fn sample(
    live: Arc<Live>,
    servers: Arc<ServerSet>,
    schedule: Schedule,
    steps: Arc<StepLog>,
    run_start: Instant,
    phase: watch::Receiver<Phase>,
    mut progress: Progress,
) -> Sampled {
    let mut sampled = Sampled::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    // A late tick must not be followed by a burst of short ones (CPU shares over a few
    // milliseconds mean nothing at the kernel's 10 ms accounting granularity).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = Instant::now();
    let mut last_delivered = 0;
    let mut last_acked = 0;
    let mut last_generator = procstat::cpu_time(None).unwrap_or_default();
    let servers_cpu = || -> Duration { servers.cpu().iter().map(CpuTimes::total).sum() };
    let mut last_servers = servers_cpu();
    loop {
        tick.tick().await;
        let current = *phase.borrow();
        let now = Instant::now();
        let dt = now.duration_since(last);
        last = now;
        let delivered = Live::get(&live.delivered);
        let acked = Live::get(&live.acked);
        let mut interval = histogram();
        live.drain_latency(&mut interval);
        let _ = sampled.total.add(&interval);
        let generator = procstat::cpu_time(None).unwrap_or_default();
        let server_cpu = servers_cpu();
        let per_second = |count: u64| count as f64 / dt.as_secs_f64();
        let point = Point {
            t: now.duration_since(run_start).as_secs_f64(),
            connected: live.connected.load(Ordering::Relaxed),
            delivered_per_sec: per_second(delivered - last_delivered),
            acked_per_sec: per_second(acked - last_acked),
            p50_ms: quantile_ms(&interval, 0.5),
            p99_ms: quantile_ms(&interval, 0.99),
            max_ms: quantile_ms(&interval, 1.0),
            disconnects: Live::get(&live.disconnects),
            generator_cores: procstat::cpu_share(last_generator, generator, dt),
            server_cores: procstat::cpu_share(last_servers, server_cpu, dt),
        };
        if let Phase::Publish(start) = current
            && let Some(step) = whole_step(&schedule, start, now, dt)
        {
            steps.add(
                step,
                &interval,
                delivered - last_delivered,
                dt.as_secs_f64(),
            );
        }
        last_delivered = delivered;
        last_acked = acked;
        last_generator = generator;
        last_servers = server_cpu;
        sampled.peak_generator = sampled.peak_generator.max(point.generator_cores);
        progress.update(current.name(), &point, Live::get(&live.gave_up));
        sampled.timeline.push(point);
        if current == Phase::Done {
            progress.finish();
            return sampled;
        }
    }
}

/// The rate step the interval `(now - dt, now]` lies in entirely, if any: a second that
/// straddles two steps (or the start) would blur both.
fn whole_step(schedule: &Schedule, start: Instant, now: Instant, dt: Duration) -> Option<usize> {
    let end = now.checked_duration_since(start)?;
    let begin = end.checked_sub(dt)?;
    let step = schedule.step.as_secs_f64();
    let first = (begin.as_secs_f64() / step) as usize;
    let last = ((end.as_secs_f64() - 1e-6).max(0.0) / step) as usize;
    (first == last).then_some(first)
}

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_seconds_inside_one_step_count_for_it() {
        let schedule = Schedule {
            rates: vec![1.0, 2.0],
            step: Duration::from_secs(8),
            in_flight: 0,
        };
        let start = Instant::now();
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        let second = Duration::from_secs(1);
        assert_eq!(whole_step(&schedule, start, at(1.0), second), Some(0));
        assert_eq!(whole_step(&schedule, start, at(8.0), second), Some(0));
        assert_eq!(whole_step(&schedule, start, at(8.5), second), None);
        assert_eq!(whole_step(&schedule, start, at(9.5), second), Some(1));
        assert_eq!(whole_step(&schedule, start, at(0.5), second), None);
    }
}
