//! The run's figures: one serializable report (written as JSON), printed as a table, and
//! rendered as HTML by [`crate::html`].

use crate::accounting::Tally;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What the scenario shows.
    pub description: String,
    /// Start of the run (seconds since the Unix epoch).
    pub started_unix: u64,
    /// What was run.
    pub setup: Setup,
    /// How long each phase took.
    pub phases: Phases,
    /// Simulated users.
    pub users: UserFigures,
    /// Publishes.
    pub publishes: PublishFigures,
    /// Messages received by users.
    pub deliveries: DeliveryFigures,
    /// Publish-to-receive latency over the publishing and settling phases.
    pub latency_ms: Percentiles,
    /// Time from losing a connection to having every room resubscribed.
    pub resume_ms: Percentiles,
    /// Missing, duplicated and out-of-order messages over every user and room.
    pub accounting: Tally,
    /// The subscribers with the most faults (at most ten).
    pub worst_subscribers: Vec<Worst>,
    /// The load generator's own cost.
    pub generator: Generator,
    /// Servers started for the run.
    pub servers: Vec<ServerFigures>,
    /// Server CPU per delivered message during publishing.
    pub server_cpu_per_delivery: Option<CpuPerDelivery>,
    /// Server and Redis CPU per acknowledged publish during publishing.
    pub cpu_per_publish: Option<CpuPerPublish>,
    /// The publish function driven straight at Redis after the run (with
    /// `publish.redis_limit_secs`).
    pub redis_limit: Option<RedisLimit>,
    /// Publishes (acknowledged or not) per call of the publish function that the spawned
    /// Redis ran during the run: above 1 when publishes waiting together shared calls.
    pub publishes_per_redis_call: Option<f64>,
    /// The kernel's part of a delivery, measured after the run (with
    /// `publish.send_floor_secs`).
    pub send_floor: Option<SendFloor>,
    /// Figures per publish-rate step (with `rate_steps`).
    pub steps: Vec<Step>,
    /// Where latency degraded (with `rate_steps`).
    pub knee: Option<Knee>,
    /// Timed actions and how they went.
    pub actions: Vec<ActionOutcome>,
    /// The rolling deploy, with `[roll]`.
    pub roll: Option<RollFigures>,
    /// One point per second.
    pub timeline: Vec<Point>,
    /// Pass or fail, and why.
    pub verdict: Verdict,
}

/// A rolling deploy: how each replacement went, how often users moved, and where the
/// connections (users and publishers, per instance, from the cluster view) were.
#[derive(Debug, Default, Serialize)]
pub struct RollFigures {
    /// Start of the roll (seconds since the start of the run).
    pub started_at: f64,
    /// Each instance's replacement, in order.
    pub steps: Vec<RollStep>,
    /// Connections per instance when the roll started.
    pub connections_before: Vec<u64>,
    /// Connections per instance when the last replacement was ready.
    pub connections_after_roll: Vec<u64>,
    /// Connections per instance when publishing ended.
    pub connections_at_end: Vec<u64>,
    /// Reconnections over the run → number of users that many (drains and rebalancing).
    pub moves_per_user: std::collections::BTreeMap<usize, usize>,
    /// Why the roll stopped short, if it did.
    pub error: Option<String>,
}

/// One instance's replacement.
#[derive(Debug, Serialize)]
pub struct RollStep {
    /// The instance.
    pub instance: usize,
    /// SIGTERM (seconds since the start of the run).
    pub at_secs: f64,
    /// From SIGTERM to the old process's exit.
    pub drain_secs: f64,
    /// From that exit to the replacement ready and listed ready by every instance.
    pub ready_secs: f64,
}

/// What was run.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// Simulated users.
    pub users: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Room subscriptions over all users.
    pub subscriptions: usize,
    /// Server URLs.
    pub targets: Vec<String>,
    /// Frame encoding.
    pub encoding: String,
    /// Padding per message, bytes.
    pub message_bytes: usize,
    /// Messages per second per room, per step.
    pub rate_per_room: Vec<f64>,
    /// Seconds per rate step.
    pub step_secs: f64,
    /// Ramp-up, seconds.
    pub ramp_up_secs: f64,
    /// Loopback source addresses used.
    pub source_addresses: Vec<String>,
}

/// Phase durations, seconds.
#[derive(Debug, Default, Serialize)]
pub struct Phases {
    /// Connecting and subscribing every user.
    pub ramp_secs: f64,
    /// Publishing (or holding idle connections).
    pub publish_secs: f64,
    /// Waiting for the last deliveries.
    pub settle_secs: f64,
    /// The whole run.
    pub total_secs: f64,
    /// When publishing started, seconds after the run's start.
    pub publish_started_at: f64,
}

/// Users.
#[derive(Debug, Default, Serialize)]
pub struct UserFigures {
    /// Users that subscribed all their rooms.
    pub ready: u64,
    /// Users that never did.
    pub never_ready: u64,
    /// Users or subscriptions whose client gave up.
    pub gave_up: u64,
    /// Connections lost (users and publishers).
    pub disconnects: u64,
    /// Users whole (every room subscribed) at the end.
    pub connected_at_end: i64,
}

/// Publishes.
#[derive(Debug, Default, Serialize)]
pub struct PublishFigures {
    /// Sent.
    pub attempted: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Failed for good.
    pub failed: u64,
    /// Acknowledged per second of publishing.
    pub per_second: f64,
    /// Failed share of attempted.
    pub error_rate: f64,
}

/// Deliveries.
#[derive(Debug, Default, Serialize)]
pub struct DeliveryFigures {
    /// Messages received by users.
    pub received: u64,
    /// Received per second of publishing.
    pub per_second: f64,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// One line: p50, p90, p99, p99.9, max and the count.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} (n = {})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }

    /// From a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One subscriber's faults in one room.
#[derive(Debug, Serialize)]
pub struct Worst {
    /// User number.
    pub user: usize,
    /// Room name.
    pub room: String,
    /// Its tally.
    pub tally: Tally,
}

/// The load generator's own resource use.
#[derive(Debug, Default, Serialize)]
pub struct Generator {
    /// CPU seconds over the run.
    pub cpu_seconds: f64,
    /// Average CPU over the run, in cores.
    pub average_cores: f64,
    /// Highest one-second CPU, in cores.
    pub peak_cores: f64,
    /// Cores on this machine.
    pub machine_cores: usize,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
}

/// One started server.
#[derive(Debug, Default, Serialize)]
pub struct ServerFigures {
    /// `instance-N` or `redis`.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// User-space CPU seconds during publishing.
    pub publish_cpu_user_seconds: f64,
    /// Kernel CPU seconds during publishing.
    pub publish_cpu_system_seconds: f64,
    /// Resident memory before users connected, MiB.
    pub rss_before_mib: f64,
    /// Resident memory once every user was subscribed, MiB.
    pub rss_ready_mib: f64,
    /// The threads its runtime runs tasks on (`tokio-rt-worker`), read with the memory;
    /// absent for a process without them (Redis).
    pub runtime_threads: Option<usize>,
    /// Connections it held when the ramp-up ended (by assignment).
    pub connections: usize,
    /// (rss_ready − rss_before) / connections, KiB.
    pub kib_per_connection: Option<f64>,
    /// In a scenario without publishes: the instance's CPU while the connections were
    /// held, per connection and second, µs (heartbeats, timers, cluster upkeep).
    pub idle_cpu_us_per_connection_second: Option<f64>,
}

/// Server CPU per delivered message during publishing, µs.
#[derive(Debug, Serialize)]
pub struct CpuPerDelivery {
    /// roomcast instances, user space.
    pub instances_user_us: f64,
    /// roomcast instances, kernel.
    pub instances_system_us: f64,
    /// roomcast instances, both.
    pub instances_us: f64,
    /// Instances and Redis together.
    pub all_in_us: f64,
}

impl CpuPerDelivery {
    /// From the servers' CPU during publishing and the deliveries meanwhile.
    pub fn of(servers: &[ServerFigures], delivered: u64) -> Option<CpuPerDelivery> {
        if delivered == 0 || servers.is_empty() {
            return None;
        }
        let per = |seconds: f64| seconds * 1e6 / delivered as f64;
        let (user, system) = instances_cpu(servers);
        let all: f64 = servers
            .iter()
            .map(|s| s.publish_cpu_user_seconds + s.publish_cpu_system_seconds)
            .sum();
        Some(CpuPerDelivery {
            instances_user_us: per(user),
            instances_system_us: per(system),
            instances_us: per(user + system),
            all_in_us: per(all),
        })
    }
}

/// User and system CPU seconds of the roomcast instances together while publishing.
fn instances_cpu(servers: &[ServerFigures]) -> (f64, f64) {
    let instances = servers.iter().filter(|s| s.name.starts_with("instance"));
    let user = instances.clone().map(|s| s.publish_cpu_user_seconds).sum();
    let system = instances.map(|s| s.publish_cpu_system_seconds).sum();
    (user, system)
}

/// CPU per acknowledged publish during publishing, µs (deliveries included).
#[derive(Debug, Serialize)]
pub struct CpuPerPublish {
    /// roomcast instances together, user space.
    pub instances_user_us: f64,
    /// roomcast instances together, kernel.
    pub instances_system_us: f64,
    /// roomcast instances together, both.
    pub instances_us: f64,
    /// The Redis server.
    pub redis_us: f64,
}

impl CpuPerPublish {
    /// From the servers' CPU during publishing and the publishes acknowledged.
    pub fn of(servers: &[ServerFigures], acked: u64) -> Option<CpuPerPublish> {
        if acked == 0 || servers.is_empty() {
            return None;
        }
        let per = |seconds: f64| seconds * 1e6 / acked as f64;
        let (user, system) = instances_cpu(servers);
        let redis: f64 = servers
            .iter()
            .filter(|s| s.name == "redis")
            .map(|s| s.publish_cpu_user_seconds + s.publish_cpu_system_seconds)
            .sum();
        Some(CpuPerPublish {
            instances_user_us: per(user),
            instances_system_us: per(system),
            instances_us: per(user + system),
            redis_us: per(redis),
        })
    }
}

/// The publish function driven straight at Redis, pipelined (see `redis_limit.rs`).
/// Its "calls" are publishes, sent as many per function call as the broker puts in one.
#[derive(Debug, Serialize)]
pub struct RedisLimit {
    /// How long it ran, seconds.
    pub secs: f64,
    /// Publishes answered.
    pub calls: u64,
    /// Publishes per second.
    pub per_second: f64,
    /// Redis CPU per publish, µs.
    pub redis_cpu_us_per_call: f64,
    /// The scenario's publishes per second over this rate.
    pub ratio: Option<f64>,
}

/// The scenario's deliveries of one instance written to bare loopback sockets, one
/// `send` each (see `send_floor.rs`).
#[derive(Debug, Serialize)]
pub struct SendFloor {
    /// How long it ran, seconds.
    pub secs: f64,
    /// Sockets written to (one instance's users).
    pub sockets: usize,
    /// Frames written (each whole: a write that found a full socket fails the
    /// measurement, since its reader fell behind).
    pub sends: u64,
    /// Bytes of each frame, WebSocket header included.
    pub frame_bytes: usize,
    /// CPU of the writing thread per frame, µs (user and system, from `/proc`).
    pub cpu_us_per_send: f64,
    /// The servers' CPU per delivery over this.
    pub ratio: Option<f64>,
}

/// One publish-rate step.
#[derive(Debug, Serialize)]
pub struct Step {
    /// Messages per second per room.
    pub rate_per_room: f64,
    /// Deliveries per second asked for (rate × subscriptions).
    pub offered_deliveries_per_sec: f64,
    /// Deliveries per second measured.
    pub delivered_per_sec: f64,
    /// Latency during the step.
    pub latency_ms: Percentiles,
}

/// Where latency degraded.
#[derive(Debug, Serialize)]
pub struct Knee {
    /// Highest rate per room before degradation (None: the first step already degraded).
    pub last_good_rate: Option<f64>,
    /// The first degraded rate.
    pub degraded_rate: f64,
    /// Why it counts as degraded.
    pub reason: String,
}

/// A timed action.
#[derive(Debug, Serialize)]
pub struct ActionOutcome {
    /// When it ran, seconds after the run's start.
    pub at_secs: f64,
    /// Label.
    pub label: String,
    /// Exit code of the command.
    pub exit_code: Option<i32>,
}

impl ActionOutcome {
    /// How the command ended, for people.
    pub fn exit(&self) -> String {
        match self.exit_code {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal or not started".into(),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the run's start.
    pub t: f64,
    /// Users whole.
    pub connected: i64,
    /// Deliveries per second.
    pub delivered_per_sec: f64,
    /// Acknowledged publishes per second.
    pub acked_per_sec: f64,
    /// Latency of this second's deliveries.
    pub p50_ms: f64,
    /// …
    pub p99_ms: f64,
    /// …
    pub max_ms: f64,
    /// Connections lost so far.
    pub disconnects: u64,
    /// Load generator CPU, cores.
    pub generator_cores: f64,
    /// Started servers' CPU (all), cores.
    pub server_cores: f64,
}

/// Pass or fail.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// True when nothing failed.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
}

impl Report {
    /// Every headline figure as (label, value), in reading order: what the terminal
    /// table and the HTML summary both show.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |key: &str, value: String| rows.push((key.to_owned(), value));
        row(
            "users / rooms / subscriptions",
            format!(
                "{} / {} / {} over {} instance(s), {}",
                self.setup.users,
                self.setup.rooms,
                self.setup.subscriptions,
                self.setup.targets.len(),
                self.setup.encoding
            ),
        );
        row(
            "phases (s)",
            format!(
                "ramp {:.1}, publish {:.1}, settle {:.1}, total {:.1}",
                self.phases.ramp_secs,
                self.phases.publish_secs,
                self.phases.settle_secs,
                self.phases.total_secs
            ),
        );
        row(
            "users ready / never / gave up",
            format!(
                "{} / {} / {}",
                self.users.ready, self.users.never_ready, self.users.gave_up
            ),
        );
        row(
            "publishes acked / failed",
            format!(
                "{} / {} ({:.1}/s)",
                self.publishes.acked, self.publishes.failed, self.publishes.per_second
            ),
        );
        row(
            "deliveries",
            format!(
                "{} ({:.0}/s)",
                self.deliveries.received, self.deliveries.per_second
            ),
        );
        row("latency (ms)", self.latency_ms.summary());
        row(
            "accounting",
            format!(
                "missing {}, duplicated {}, out of order {}, foreign epoch {} (announced losses {})",
                self.accounting.missing,
                self.accounting.duplicated,
                self.accounting.out_of_order,
                self.accounting.foreign_epoch,
                self.accounting.announced_losses
            ),
        );
        row(
            "disconnects / resumes",
            format!("{} / {}", self.users.disconnects, self.resume_ms.count),
        );
        if self.resume_ms.count > 0 {
            row("resume (ms)", self.resume_ms.summary());
        }
        row(
            "load generator CPU",
            format!(
                "{:.1} s, average {:.2} cores, peak {:.2} of {} (RSS {:.0} MiB)",
                self.generator.cpu_seconds,
                self.generator.average_cores,
                self.generator.peak_cores,
                self.generator.machine_cores,
                self.generator.rss_mib
            ),
        );
        for server in &self.servers {
            let per_connection = server
                .kib_per_connection
                .map(|kib| format!(", {kib:.1} KiB/connection over {}", server.connections))
                .unwrap_or_default();
            let idle_cpu = server
                .idle_cpu_us_per_connection_second
                .map(|us| format!(", idle CPU {us:.2} µs per connection per second"))
                .unwrap_or_default();
            let threads = server
                .runtime_threads
                .map(|threads| format!(", {threads} runtime threads"))
                .unwrap_or_default();
            row(
                &format!("server {}", server.name),
                format!(
                    "CPU {:.2} s user + {:.2} s system while publishing, RSS {:.1} -> {:.1} MiB{per_connection}{threads}{idle_cpu}",
                    server.publish_cpu_user_seconds,
                    server.publish_cpu_system_seconds,
                    server.rss_before_mib,
                    server.rss_ready_mib
                ),
            );
        }
        if let Some(cpu) = &self.server_cpu_per_delivery {
            row(
                "server CPU per delivery",
                format!(
                    "{:.2} µs (user {:.2}, system {:.2}); with Redis {:.2} µs",
                    cpu.instances_us, cpu.instances_user_us, cpu.instances_system_us, cpu.all_in_us
                ),
            );
        }
        if let Some(cpu) = &self.cpu_per_publish {
            row(
                "CPU per publish",
                format!(
                    "instances {:.1} µs (user {:.1}, system {:.1}); Redis {:.1} µs{}",
                    cpu.instances_us,
                    cpu.instances_user_us,
                    cpu.instances_system_us,
                    cpu.redis_us,
                    self.publishes_per_redis_call
                        .map(|per_call| format!(" ({per_call:.1} publishes per Redis call)"))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(limit) = &self.redis_limit {
            row(
                "Redis alone (pipelined)",
                format!(
                    "{:.0} publishes/s, Redis {:.1} µs per publish ({} publishes in {:.1} s, {} per call){}",
                    limit.per_second,
                    limit.redis_cpu_us_per_call,
                    limit.calls,
                    limit.secs,
                    roomcast::broker::PUBLISH_BATCH_MAX,
                    limit
                        .ratio
                        .map(|ratio| format!("; servers reached {ratio:.2} of it"))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(floor) = &self.send_floor {
            let over = self
                .server_cpu_per_delivery
                .as_ref()
                .map(|cpu| {
                    format!(
                        "; the servers' {:.2} µs per delivery is {:.2} µs over it ({:.2}×)",
                        cpu.instances_us,
                        cpu.instances_us - floor.cpu_us_per_send,
                        floor.ratio.unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            row(
                "bare send (floor)",
                format!(
                    "{:.2} µs per {}-byte frame ({} sends to {} sockets in {:.1} s){over}",
                    floor.cpu_us_per_send,
                    floor.frame_bytes,
                    floor.sends,
                    floor.sockets,
                    floor.secs,
                ),
            );
        }
        for step in &self.steps {
            row(
                &format!("step {:>5} msg/s/room", step.rate_per_room),
                format!(
                    "{:>8.0} deliveries/s of {:>8.0}, p50 {:.2} ms, p99 {:.2} ms",
                    step.delivered_per_sec,
                    step.offered_deliveries_per_sec,
                    step.latency_ms.p50,
                    step.latency_ms.p99
                ),
            );
        }
        if let Some(knee) = &self.knee {
            row(
                "knee",
                format!(
                    "last good {} msg/s/room, degraded at {} ({})",
                    knee.last_good_rate
                        .map_or_else(|| "none".to_owned(), |rate| rate.to_string()),
                    knee.degraded_rate,
                    knee.reason
                ),
            );
        }
        for action in &self.actions {
            row(
                &format!("action at {:.1} s", action.at_secs),
                format!("{} ({})", action.label, action.exit()),
            );
        }
        if let Some(roll) = &self.roll {
            for step in &roll.steps {
                row(
                    &format!("roll: instance-{}", step.instance),
                    format!(
                        "SIGTERM at {:.1} s, drained in {:.2} s, replacement ready in {:.2} s",
                        step.at_secs, step.drain_secs, step.ready_secs
                    ),
                );
            }
            if let Some(error) = &roll.error {
                row("roll stopped", error.clone());
            }
            let moves: Vec<String> = roll
                .moves_per_user
                .iter()
                .map(|(moves, users)| format!("{moves}: {users}"))
                .collect();
            row("roll: moves per user", format!("{{{}}}", moves.join(", ")));
            row(
                "roll: connections",
                format!(
                    "before {:?}, after the roll {:?}, at the end {:?}",
                    roll.connections_before, roll.connections_after_roll, roll.connections_at_end
                ),
            );
        }
        for worst in &self.worst_subscribers {
            row(
                &format!("worst: user {} in {}", worst.user, worst.room),
                format!(
                    "missing {}, duplicated {}, out of order {}, foreign epoch {}",
                    worst.tally.missing,
                    worst.tally.duplicated,
                    worst.tally.out_of_order,
                    worst.tally.foreign_epoch
                ),
            );
        }
        rows
    }

    /// The verdict in one line.
    pub fn verdict_line(&self) -> String {
        if self.verdict.passed {
            "PASS".to_owned()
        } else {
            format!("FAIL: {}", self.verdict.failures.join("; "))
        }
    }

    /// A plain-text summary for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!("\nscenario {}: {}\n", self.scenario, self.description);
        for (key, value) in self.rows() {
            let _ = writeln!(out, "  {key:<30} {value}");
        }
        let _ = writeln!(out, "  {:<30} {}", "verdict", self.verdict_line());
        out
    }
}

/// Finds the first step whose latency or throughput degraded: p99 above three times the
/// best step's p99 (and above 5 ms), or fewer than 95% of the offered deliveries.
pub fn find_knee(steps: &[Step]) -> Option<Knee> {
    let best_p99 = steps
        .iter()
        .map(|step| step.latency_ms.p99)
        .filter(|p99| *p99 > 0.0)
        .fold(f64::INFINITY, f64::min);
    let mut last_good = None;
    for step in steps {
        let reason = if step.latency_ms.p99 > (3.0 * best_p99).max(5.0) {
            Some(format!(
                "p99 {:.1} ms > 3 x best step's {:.1} ms",
                step.latency_ms.p99, best_p99
            ))
        } else if step.delivered_per_sec < 0.95 * step.offered_deliveries_per_sec {
            Some(format!(
                "{:.0} deliveries/s < 95% of {:.0} offered",
                step.delivered_per_sec, step.offered_deliveries_per_sec
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                return Some(Knee {
                    last_good_rate: last_good,
                    degraded_rate: step.rate_per_room,
                    reason,
                });
            }
            None => last_good = Some(step.rate_per_room),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, p99: f64, delivered: f64, offered: f64) -> Step {
        Step {
            rate_per_room: rate,
            offered_deliveries_per_sec: offered,
            delivered_per_sec: delivered,
            latency_ms: Percentiles {
                p99,
                ..Percentiles::default()
            },
        }
    }

    #[test]
    fn the_knee_is_the_first_step_that_degrades() {
        let steps = [
            step(10.0, 2.0, 1000.0, 1000.0),
            step(20.0, 2.5, 2000.0, 2000.0),
            step(40.0, 9.0, 4000.0, 4000.0),
        ];
        let knee = find_knee(&steps).unwrap();
        assert_eq!(
            (knee.last_good_rate, knee.degraded_rate),
            (Some(20.0), 40.0)
        );
        let starved = [
            step(10.0, 2.0, 1000.0, 1000.0),
            step(20.0, 2.0, 1500.0, 2000.0),
        ];
        assert_eq!(find_knee(&starved).unwrap().degraded_rate, 20.0);
        assert!(find_knee(&steps[..2]).is_none());
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut histogram = crate::stats::histogram();
        for micros in [1000, 2000, 3000] {
            histogram.record(micros).unwrap();
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.count, 3);
        assert!((p.max - 3.0).abs() < 0.01 && (p.p50 - 2.0).abs() < 0.01);
    }
}
