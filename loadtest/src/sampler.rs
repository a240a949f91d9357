//! Once a second: drains the users' latency shards into the run's totals, records a
//! timeline point, attributes the second to its publish-rate step, and refreshes the
//! progress display.

use crate::procstat::{self, CpuTimes};
use crate::progress::Progress;
use crate::publishers::Schedule;
use crate::report::Point;
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
    /// Per rate step: latencies, deliveries, seconds.
    pub steps: Vec<(Histogram<u64>, u64, f64)>,
    /// Highest one-second CPU of the load generator, in cores.
    pub peak_generator: f64,
}

impl Sampled {
    /// Nothing yet, for `steps` rate steps.
    pub fn new(steps: usize) -> Sampled {
        Sampled {
            timeline: Vec::new(),
            total: histogram(),
            steps: (0..steps).map(|_| (histogram(), 0, 0.0)).collect(),
            peak_generator: 0.0,
        }
    }
}

/// Samples until the phase becomes [`Phase::Done`].
pub async fn sample(
    live: Arc<Live>,
    servers: Arc<ServerSet>,
    schedule: Schedule,
    run_start: Instant,
    phase: watch::Receiver<Phase>,
    mut progress: Progress,
) -> Sampled {
    let mut sampled = Sampled::new(schedule.rates.len());
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
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
        if let Phase::Publish(start) = current {
            // The second belongs to the step its middle fell in.
            let middle = now.saturating_duration_since(start).saturating_sub(dt / 2);
            let step = (middle.as_secs_f64() / schedule.step.as_secs_f64()) as usize;
            if let Some((histogram, count, secs)) = sampled.steps.get_mut(step) {
                let _ = histogram.add(&interval);
                *count += delivered - last_delivered;
                *secs += dt.as_secs_f64();
            }
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

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}
