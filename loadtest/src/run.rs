//! One run of a scenario: start the servers it asks for, ramp the users up, publish on
//! schedule while timed actions kill or drain instances, wait for the last deliveries,
//! then hold every subscriber's ledger against the acknowledged positions.

use crate::accounting::Tally;
use crate::procstat;
use crate::progress::Progress;
use crate::publishers::{self, Schedule, Tops};
use crate::report::{
    ActionOutcome, DeliveryFigures, Generator, Percentiles, Phases, Point, PublishFigures, Report,
    ServerFigures, Setup, Step, UserFigures, Verdict, Worst, find_knee,
};
use crate::scenario::{Action, Scenario};
use crate::stats::{Live, histogram};
use crate::topology::{Topology, TopologyError};
use crate::users::User;
use hdrhistogram::Histogram;
use roomcast::client::ClientConfig;
use roomcast::protocol::Encoding;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long users may take, after the ramp-up, to subscribe all their rooms.
const READY_GRACE: Duration = Duration::from_secs(60);
/// How long to wait, after publishing, for every acknowledged message to arrive.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeline resolution.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// File descriptors kept free besides one per connection.
const SPARE_FILES: u64 = 64;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the report (and the started servers' logs) go.
    pub report_dir: PathBuf,
    /// No progress output.
    pub quiet: bool,
}

/// A run that could not take place.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The servers could not be started.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The machine cannot hold the scenario.
    #[error("{0}")]
    Limits(String),
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ramp,
    Publish(Instant),
    Settle,
    Done,
}

/// Runs `scenario`; the report says whether it passed.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, RunError> {
    check_open_files(scenario)?;
    let run_start = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let generator_cpu_start = procstat::cpu_time(None).unwrap_or_default();
    let topology = match &scenario.spawn {
        Some(spawn) => Some(Topology::start(spawn, &options.report_dir.join("servers")).await?),
        None => None,
    };
    let targets = topology
        .as_ref()
        .map(Topology::urls)
        .unwrap_or_else(|| scenario.targets.clone());
    let servers = Arc::new(ServerSet::of(topology.as_ref()));
    let rss_before = servers.rss();

    let live = Arc::new(Live::default());
    let schedule = schedule_of(scenario);
    let rooms = scenario.all_rooms();
    let room_index: HashMap<&str, usize> = rooms
        .iter()
        .enumerate()
        .map(|(index, name)| (name.as_str(), index))
        .collect();
    let tops = Arc::new(Tops::new(rooms.len()));
    let subscriptions: usize = (0..scenario.users)
        .map(|u| scenario.rooms_of(u).len())
        .sum();
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let progress = Progress::new(options.quiet, scenario.users);
    let sampler = tokio::spawn(sample(
        live.clone(),
        servers.clone(),
        schedule.clone(),
        run_start,
        phase_rx,
        progress,
    ));

    // Ramp-up: users connect evenly over the ramp, then get time to subscribe.
    let (_stop_users, stop_rx) = watch::channel(false);
    let mut users = Vec::with_capacity(scenario.users);
    let ramp = Duration::from_secs_f64(scenario.ramp_up_secs);
    for index in 0..scenario.users {
        let at = run_start + ramp.mul_f64(index as f64 / scenario.users as f64);
        tokio::time::sleep_until(at).await;
        let user_rooms = scenario
            .rooms_of(index)
            .into_iter()
            .map(|name| (room_index[name.as_str()], name))
            .collect();
        users.push(User::start(
            index,
            client_config(scenario, &targets, index),
            user_rooms,
            live.clone(),
            stop_rx.clone(),
        ));
    }
    let ready_deadline = Instant::now() + READY_GRACE;
    while (Live::get(&live.ready) + Live::get(&live.gave_up)) < scenario.users as u64
        && Instant::now() < ready_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_secs = run_start.elapsed().as_secs_f64();
    // Let allocations settle before reading the servers' memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_ready = servers.rss();

    // Publishing, with the timed actions.
    let publish_start = Instant::now();
    let _ = phase_tx.send(Phase::Publish(publish_start));
    let cpu_before = servers.cpu();
    let delivered_before = Live::get(&live.delivered);
    let mut publishers = JoinSet::new();
    if schedule.publishes() {
        for index in 0..scenario.publish.publishers {
            let share: Vec<(usize, String)> = rooms
                .iter()
                .enumerate()
                .filter(|(room, _)| room % scenario.publish.publishers == index)
                .map(|(room, name)| (room, name.clone()))
                .collect();
            publishers.spawn(publishers::publish(
                client_config(scenario, &targets, index),
                share,
                schedule.clone(),
                scenario.publish.message_bytes,
                publish_start,
                live.clone(),
                tops.clone(),
            ));
        }
    }
    let action_env = topology
        .as_ref()
        .map(Topology::action_env)
        .unwrap_or_default();
    let mut actions = JoinSet::new();
    for (order, action) in scenario.actions.iter().enumerate() {
        let at = publish_start + Duration::from_secs_f64(action.at_secs);
        actions.spawn(run_action(
            order,
            action.clone(),
            at,
            run_start,
            action_env.clone(),
        ));
    }
    tokio::time::sleep_until(publish_start + schedule.duration()).await;
    while publishers.join_next().await.is_some() {}
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let cpu_after = servers.cpu();
    let delivered_publishing = Live::get(&live.delivered) - delivered_before;

    // Settling: every acknowledged message should arrive everywhere.
    let _ = phase_tx.send(Phase::Settle);
    let settle_start = Instant::now();
    loop {
        let tops = tops.snapshot();
        let missing: u64 = users
            .iter()
            .map(|user| {
                let book = user.book.lock().unwrap_or_else(|p| p.into_inner());
                book.tallies(&tops)
                    .map(|(_, tally)| tally.missing)
                    .sum::<u64>()
            })
            .sum();
        if missing == 0 || settle_start.elapsed() > SETTLE_TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();
    let mut action_outcomes = Vec::new();
    while let Some(outcome) = actions.join_next().await {
        if let Ok(outcome) = outcome {
            action_outcomes.push(outcome);
        }
    }
    action_outcomes.sort_by_key(|(order, _)| *order);
    let action_outcomes: Vec<ActionOutcome> = action_outcomes.into_iter().map(|(_, o)| o).collect();

    let _ = phase_tx.send(Phase::Done);
    let sampled = sampler
        .await
        .unwrap_or_else(|_| Sampled::new(schedule.rates.len()));

    // The verdict on every ledger.
    let tops_now = tops.snapshot();
    let mut accounting = Tally::default();
    let mut worst = Vec::new();
    for user in &users {
        let book = user.book.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, tally) in book.tallies(&tops_now) {
            accounting.add(tally);
            if !tally.is_clean() {
                worst.push(Worst {
                    user: book.index,
                    room: slot.name.clone(),
                    tally,
                });
            }
        }
    }
    worst.sort_by_key(|w| std::cmp::Reverse(w.tally.faults()));
    worst.truncate(10);
    let connected_at_end = live.connected.load(Ordering::Relaxed);
    let mut stopping = JoinSet::new();
    for user in users {
        stopping.spawn(user.stop());
    }
    while stopping.join_next().await.is_some() {}
    if let Some(topology) = topology {
        topology.shutdown().await;
    }

    let total_secs = run_start.elapsed().as_secs_f64();
    let generator_cpu = procstat::cpu_time(None)
        .unwrap_or_default()
        .saturating_sub(generator_cpu_start)
        .as_secs_f64();
    let attempted = Live::get(&live.publish_attempts);
    let failed = Live::get(&live.publish_failures);
    let acked = Live::get(&live.acked);
    let connections = connections_per_target(scenario, targets.len());
    let server_figures: Vec<ServerFigures> = servers
        .entries
        .iter()
        .enumerate()
        .map(|(index, (name, pid))| {
            let connections = connections.get(index).copied().unwrap_or(0);
            let growth = rss_ready[index].saturating_sub(rss_before[index]);
            ServerFigures {
                name: name.clone(),
                pid: *pid,
                publish_cpu_seconds: cpu_after[index]
                    .saturating_sub(cpu_before[index])
                    .as_secs_f64(),
                rss_before_mib: mib(rss_before[index]),
                rss_ready_mib: mib(rss_ready[index]),
                connections,
                kib_per_connection: (connections > 0 && name.starts_with("instance"))
                    .then(|| growth as f64 / 1024.0 / connections as f64),
            }
        })
        .collect();
    let instance_cpu: f64 = server_figures
        .iter()
        .filter(|s| s.name.starts_with("instance"))
        .map(|s| s.publish_cpu_seconds)
        .sum();
    let steps: Vec<Step> = if schedule.rates.len() > 1 {
        schedule
            .rates
            .iter()
            .zip(&sampled.steps)
            .map(|(rate, (histogram, delivered, secs))| Step {
                rate_per_room: *rate,
                offered_deliveries_per_sec: rate * subscriptions as f64,
                delivered_per_sec: if *secs > 0.0 {
                    *delivered as f64 / secs
                } else {
                    0.0
                },
                latency_ms: Percentiles::of(histogram),
            })
            .collect()
    } else {
        Vec::new()
    };
    let knee = find_knee(&steps);
    let mut report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        started_unix,
        setup: Setup {
            users: scenario.users,
            publishers: if schedule.publishes() {
                scenario.publish.publishers
            } else {
                0
            },
            rooms: rooms.len(),
            subscriptions,
            targets,
            encoding: scenario.encoding.clone(),
            message_bytes: scenario.publish.message_bytes,
            rate_per_room: schedule.rates.clone(),
            step_secs: schedule.step.as_secs_f64(),
            ramp_up_secs: scenario.ramp_up_secs,
            source_addresses: scenario
                .source_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
        },
        phases: Phases {
            ramp_secs,
            publish_secs,
            settle_secs,
            total_secs,
            publish_started_at: publish_start.duration_since(run_start).as_secs_f64(),
        },
        users: UserFigures {
            ready: Live::get(&live.ready),
            never_ready: (scenario.users as u64).saturating_sub(Live::get(&live.ready)),
            gave_up: Live::get(&live.gave_up),
            disconnects: Live::get(&live.disconnects),
            connected_at_end,
        },
        publishes: PublishFigures {
            attempted,
            acked,
            failed,
            per_second: acked as f64 / publish_secs.max(f64::EPSILON),
            error_rate: if attempted > 0 {
                failed as f64 / attempted as f64
            } else {
                0.0
            },
        },
        deliveries: DeliveryFigures {
            received: Live::get(&live.delivered),
            per_second: delivered_publishing as f64 / publish_secs.max(f64::EPSILON),
        },
        latency_ms: Percentiles::of(&sampled.total),
        resume_ms: Percentiles::of(&live.resume_times()),
        accounting,
        worst_subscribers: worst,
        generator: Generator {
            cpu_seconds: generator_cpu,
            average_cores: generator_cpu / total_secs.max(f64::EPSILON),
            peak_cores: sampled.peak_generator,
            machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rss_mib: mib(procstat::resident_bytes(std::process::id()).unwrap_or_default()),
        },
        server_cpu_us_per_delivery: (delivered_publishing > 0 && instance_cpu > 0.0)
            .then(|| instance_cpu * 1e6 / delivered_publishing as f64),
        servers: server_figures,
        steps,
        knee,
        actions: action_outcomes,
        timeline: sampled.timeline,
        verdict: Verdict::default(),
    };
    report.verdict = judge(scenario, &report);
    Ok(report)
}

/// Applies the scenario's pass conditions to the figures.
fn judge(scenario: &Scenario, report: &Report) -> Verdict {
    let mut failures = Vec::new();
    let accounting = &report.accounting;
    if !accounting.is_clean() {
        failures.push(format!(
            "{} missing, {} duplicated, {} out of order, {} of a foreign epoch",
            accounting.missing,
            accounting.duplicated,
            accounting.out_of_order,
            accounting.foreign_epoch
        ));
    }
    if report.users.never_ready > 0 {
        failures.push(format!(
            "{} users never subscribed all their rooms",
            report.users.never_ready
        ));
    }
    if report.users.gave_up > 0 {
        failures.push(format!("{} clients gave up", report.users.gave_up));
    }
    if report.setup.publishers > 0 && report.publishes.acked == 0 {
        failures.push("no publish was acknowledged".into());
    }
    let thresholds = &scenario.thresholds;
    if report.publishes.error_rate > thresholds.max_error_rate {
        failures.push(format!(
            "publish error rate {:.4} > {}",
            report.publishes.error_rate, thresholds.max_error_rate
        ));
    }
    if let Some(limit) = thresholds.p99_ms
        && report.latency_ms.p99 > limit
    {
        failures.push(format!(
            "latency p99 {:.2} ms > {limit} ms",
            report.latency_ms.p99
        ));
    }
    if let Some(limit) = thresholds.resume_p99_ms
        && report.resume_ms.p99 > limit
    {
        failures.push(format!(
            "resume p99 {:.1} ms > {limit} ms",
            report.resume_ms.p99
        ));
    }
    for action in &report.actions {
        if action.exit_code != Some(0) {
            failures.push(format!(
                "action `{}` exited with {:?}",
                action.label, action.exit_code
            ));
        }
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}

fn check_open_files(scenario: &Scenario) -> Result<(), RunError> {
    let needed = (scenario.users + scenario.publish.publishers) as u64 + SPARE_FILES;
    match procstat::open_files_limit() {
        Some(limit) if limit < needed => Err(RunError::Limits(format!(
            "{} users need about {needed} open files but this process may open {limit} \
             (raise it with `ulimit -n`; the servers need as many)",
            scenario.users
        ))),
        _ => Ok(()),
    }
}

/// The publish rates of a scenario.
fn schedule_of(scenario: &Scenario) -> Schedule {
    if scenario.publish.rate_steps.is_empty() {
        Schedule {
            rates: vec![scenario.publish.rate_per_room],
            step: Duration::from_secs_f64(scenario.duration_secs),
        }
    } else {
        Schedule {
            rates: scenario.publish.rate_steps.clone(),
            step: Duration::from_secs_f64(scenario.publish.step_secs),
        }
    }
}

/// Client settings of user (or publisher) `index`: the targets rotated so that users
/// spread evenly and fail over to the next instance; its source address.
fn client_config(scenario: &Scenario, targets: &[String], index: usize) -> ClientConfig {
    let first = index % targets.len().max(1);
    let mut config = ClientConfig::new(targets[first].clone());
    config.urls = targets[first..]
        .iter()
        .chain(&targets[..first])
        .cloned()
        .collect();
    config.encoding = if scenario.encoding == "json" {
        Encoding::Json
    } else {
        Encoding::MsgPack
    };
    if !scenario.auth.token.is_empty() {
        config.headers = vec![(
            "Authorization".into(),
            format!("Bearer {}", scenario.auth.token),
        )];
    }
    config.local_address = (!scenario.source_addresses.is_empty())
        .then(|| scenario.source_addresses[index % scenario.source_addresses.len()]);
    config.request_timeout = Duration::from_secs(30);
    config.event_buffer = 1024;
    config
}

/// Connections each target receives first (users and publishers), by assignment.
fn connections_per_target(scenario: &Scenario, targets: usize) -> Vec<usize> {
    let slots = targets.max(1);
    let mut counts = vec![0; slots];
    for user in 0..scenario.users {
        counts[user % slots] += 1;
    }
    let publishers = if schedule_of(scenario).publishes() {
        scenario.publish.publishers
    } else {
        0
    };
    for publisher in 0..publishers {
        counts[publisher % slots] += 1;
    }
    counts
}

async fn run_action(
    order: usize,
    action: Action,
    at: Instant,
    run_start: Instant,
    env: Vec<(String, String)>,
) -> (usize, ActionOutcome) {
    tokio::time::sleep_until(at).await;
    let at_secs = run_start.elapsed().as_secs_f64();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&action.run)
        .envs(env)
        .status()
        .await;
    let label = if action.label.is_empty() {
        action.run.clone()
    } else {
        action.label.clone()
    };
    (
        order,
        ActionOutcome {
            at_secs,
            label,
            exit_code: status.ok().and_then(|status| status.code()),
        },
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The started servers, with their last known CPU time (a killed process keeps the
/// figure read last).
struct ServerSet {
    entries: Vec<(String, u32)>,
    last_cpu: Mutex<Vec<Duration>>,
}

impl ServerSet {
    fn of(topology: Option<&Topology>) -> ServerSet {
        let mut entries = Vec::new();
        if let Some(topology) = topology {
            for (index, pid) in topology.instance_pids().into_iter().enumerate() {
                entries.push((format!("instance-{index}"), pid));
            }
            if let Some(redis) = &topology.redis {
                entries.push(("redis".to_owned(), redis.pid));
            }
        }
        let last_cpu = Mutex::new(vec![Duration::ZERO; entries.len()]);
        ServerSet { entries, last_cpu }
    }

    fn cpu(&self) -> Vec<Duration> {
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        for (index, (_, pid)) in self.entries.iter().enumerate() {
            if let Some(cpu) = procstat::cpu_time(Some(*pid)) {
                last[index] = cpu;
            }
        }
        last.clone()
    }

    fn rss(&self) -> Vec<u64> {
        self.entries
            .iter()
            .map(|(_, pid)| procstat::resident_bytes(*pid).unwrap_or_default())
            .collect()
    }
}

/// What the sampler collected.
struct Sampled {
    timeline: Vec<Point>,
    total: Histogram<u64>,
    /// Per rate step: latencies, deliveries, seconds.
    steps: Vec<(Histogram<u64>, u64, f64)>,
    peak_generator: f64,
}

impl Sampled {
    fn new(steps: usize) -> Sampled {
        Sampled {
            timeline: Vec::new(),
            total: histogram(),
            steps: (0..steps).map(|_| (histogram(), 0, 0.0)).collect(),
            peak_generator: 0.0,
        }
    }
}

/// Once a second: drains the latency shards, records a timeline point, attributes it to
/// a rate step, and updates the progress display; returns when the run is done.
async fn sample(
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
    let sum = |cpu: Vec<Duration>| cpu.into_iter().sum::<Duration>();
    let mut last_servers = sum(servers.cpu());
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
        let server_cpu = sum(servers.cpu());
        let point = Point {
            t: now.duration_since(run_start).as_secs_f64(),
            connected: live.connected.load(Ordering::Relaxed),
            delivered_per_sec: (delivered - last_delivered) as f64 / dt.as_secs_f64(),
            acked_per_sec: (acked - last_acked) as f64 / dt.as_secs_f64(),
            p50_ms: quantile_ms(&interval, 0.5),
            p99_ms: quantile_ms(&interval, 0.99),
            max_ms: if interval.is_empty() {
                0.0
            } else {
                interval.max() as f64 / 1000.0
            },
            disconnects: Live::get(&live.disconnects),
            generator_cores: procstat::cpu_share(last_generator, generator, dt),
            server_cores: procstat::cpu_share(last_servers, server_cpu, dt),
        };
        if let Phase::Publish(start) = current {
            // The interval belongs to the step its middle fell in.
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
        let phase_name = match current {
            Phase::Ramp => "ramp-up",
            Phase::Publish(_) => "publishing",
            Phase::Settle => "settling",
            Phase::Done => "done",
        };
        progress.update(phase_name, &point, Live::get(&live.gave_up));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        Scenario::parse(&format!(
            "name = \"t\"\ntargets = [\"ws://a/ws\", \"ws://b/ws\"]\nusers = 5\nduration_secs = 3\n\
             source_addresses = [\"127.0.0.2\", \"127.0.0.3\"]\n{extra}\n[rooms]\ncount = 2\n"
        ))
        .unwrap()
    }

    #[test]
    fn users_are_spread_over_targets_and_source_addresses() {
        let scenario = scenario("");
        let targets = scenario.targets.clone();
        let second = client_config(&scenario, &targets, 1);
        assert_eq!(second.urls, vec!["ws://b/ws", "ws://a/ws"]);
        assert_eq!(second.local_address, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(client_config(&scenario, &targets, 2).urls[0], "ws://a/ws");
        assert_eq!(connections_per_target(&scenario, 2), vec![3, 2]);
    }

    #[test]
    fn a_constant_rate_lasts_the_duration_and_steps_their_own() {
        let constant = schedule_of(&scenario("[publish]\nrate_per_room = 5.0"));
        assert_eq!(
            (constant.rates.clone(), constant.duration()),
            (vec![5.0], Duration::from_secs(3))
        );
        let steps = schedule_of(&scenario(
            "[publish]\nrate_steps = [1.0, 2.0]\nstep_secs = 4",
        ));
        assert_eq!(steps.duration(), Duration::from_secs(8));
    }
}
