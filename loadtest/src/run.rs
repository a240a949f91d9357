//! One run of a scenario: start the servers it asks for, ramp the users up, publish on
//! schedule while timed actions kill or drain instances, wait for the last deliveries,
//! then hold every subscriber's ledger against the acknowledged positions.

use crate::accounting::Tally;
use crate::procstat::{self, CpuTimes};
use crate::progress::Progress;
use crate::publishers::{Plan, Publisher, Schedule, Tops};
use crate::redis_limit;
use crate::report::{
    ActionOutcome, CpuPerDelivery, CpuPerPublish, DeliveryFigures, Generator, Percentiles, Phases,
    PublishFigures, RedisLimit, Report, RollFigures, RollStep, SendFloor, ServerFigures, Setup,
    Step, UserFigures, Verdict, Worst, find_knee,
};
use crate::sampler::{Phase, Sampled, ServerSet, StepLog, sample};
use crate::scenario::{Action, Roll, Scenario};
use crate::send_floor;
use crate::stats::Live;
use crate::topology::{Topology, TopologyError};
use crate::users::User;
use roomcast::client::ClientConfig;
use roomcast::protocol::Encoding;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long users may take, after the ramp-up, to subscribe all their rooms.
const READY_GRACE: Duration = Duration::from_secs(60);
/// How long to wait, after publishing, for every acknowledged message to arrive.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after a rate step ends its figures are complete.
const KNEE_CHECK_DELAY: Duration = Duration::from_millis(1500);
/// File descriptors kept free besides one per connection.
const SPARE_FILES: u64 = 64;
/// Faulty subscribers listed by name in the report.
const WORST_LISTED: usize = 10;

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
    /// A target of the scenario does not accept connections.
    #[error("cannot connect to {url}: {reason}")]
    Unreachable {
        /// The target's URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// How long a target may take to accept a TCP connection before the run is abandoned.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks that every target accepts a TCP connection, so that a wrong URL or a server
/// that is down ends the run at once (exit 2) instead of users retrying until the
/// scenario's deadline.
async fn check_reachable(targets: &[String]) -> Result<(), RunError> {
    for url in targets {
        let unreachable = |reason: String| RunError::Unreachable {
            url: url.clone(),
            reason,
        };
        let (secure, rest) = match url.split_once("://") {
            Some(("wss", rest)) => (true, rest),
            Some((_, rest)) => (false, rest),
            None => (false, url.as_str()),
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let address = match (has_port, secure) {
            (true, _) => authority.to_owned(),
            (false, true) => format!("{authority}:443"),
            (false, false) => format!("{authority}:80"),
        };
        match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(unreachable(err.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    REACH_TIMEOUT.as_secs()
                )));
            }
        }
    }
    Ok(())
}

/// Runs `scenario`; the report says whether it passed.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, RunError> {
    check_open_files(scenario)?;
    let mut run = Run::start(scenario, options).await?;
    let users = run.ramp_up().await;
    let redis_url = run
        .topology
        .as_ref()
        .and_then(|t| t.redis.as_ref())
        .map(|r| r.url.clone());
    let calls_before = match &redis_url {
        Some(url) => redis_limit::publish_calls(url).await,
        None => None,
    };
    let mut published = run.publish().await;
    let settle_secs = run.settle(&users).await;
    let calls_after = match &redis_url {
        Some(url) => redis_limit::publish_calls(url).await,
        None => None,
    };
    let actions = collect_actions(published.actions).await;
    if let Some(roll) = &mut published.roll {
        roll.moves_per_user = moves_per_user(&users);
    }
    let _ = run.phase.send(Phase::Done);
    let sampled = run.sampler.await.unwrap_or_default();
    let (accounting, worst) = account(&users, &run.tops.snapshot());
    let connected_at_end = run.live.connected.load(Ordering::Relaxed);
    let mut stopping = JoinSet::new();
    for user in users {
        stopping.spawn(user.stop());
    }
    while stopping.join_next().await.is_some() {}
    let redis_limit = measure_redis_limit(scenario, run.topology.as_ref()).await;
    let send_floor = measure_send_floor(scenario, run.targets.len()).await;
    if let Some(topology) = run.topology {
        topology.shutdown().await;
    }
    let mut report = assemble(Assembly {
        scenario,
        targets: run.targets,
        schedule: &run.schedule,
        steps: run.steps.summary(&run.schedule.rates, run.subscriptions),
        subscriptions: run.subscriptions,
        live: &run.live,
        started_unix: run.started_unix,
        run_start: run.run_start,
        generator_cpu_start: run.generator_cpu_start,
        servers: &run.servers,
        ramp: &run.ramp,
        published: &published.figures,
        settle_secs,
        sampled,
        accounting,
        worst,
        actions,
        roll: published.roll,
        connected_at_end,
    });
    if let (Some(before), Some(after)) = (calls_before, calls_after)
        && after > before
    {
        let publishes = report.publishes.acked + report.publishes.failed;
        report.publishes_per_redis_call = Some(publishes as f64 / (after - before) as f64);
    }
    report.redis_limit = redis_limit.map(|mut limit| {
        limit.ratio = Some(report.publishes.per_second / limit.per_second.max(f64::EPSILON));
        limit
    });
    report.send_floor = send_floor.map(|mut floor| {
        floor.ratio = report
            .server_cpu_per_delivery
            .as_ref()
            .map(|cpu| cpu.instances_us / floor.cpu_us_per_send.max(f64::EPSILON));
        floor
    });
    report.verdict = judge(scenario, &report);
    Ok(report)
}

/// With `publish.send_floor_secs`: one instance's deliveries written to bare sockets,
/// once the users are gone (a failure is reported on stderr, not fatal).
async fn measure_send_floor(scenario: &Scenario, targets: usize) -> Option<SendFloor> {
    let secs = scenario.publish.send_floor_secs;
    if secs <= 0.0 {
        return None;
    }
    match send_floor::measure(send_floor::Plan::of(scenario, targets, secs)).await {
        Ok(floor) => Some(floor),
        Err(error) => {
            eprintln!("roomcast-load: the bare-send measurement failed: {error}");
            None
        }
    }
}

/// With `publish.redis_limit_secs`: the publish function driven straight at the spawned
/// Redis, once the users are gone (a failure is reported on stderr, not fatal).
async fn measure_redis_limit(
    scenario: &Scenario,
    topology: Option<&Topology>,
) -> Option<RedisLimit> {
    let secs = scenario.publish.redis_limit_secs;
    let redis = topology?.redis.as_ref().filter(|_| secs > 0.0)?;
    let rooms = scenario.rooms.count;
    match redis_limit::measure(
        &redis.url,
        redis.pid,
        rooms,
        scenario.publish.message_bytes,
        secs,
    )
    .await
    {
        Ok(limit) => Some(limit),
        Err(error) => {
            eprintln!("roomcast-load: the Redis-alone measurement failed: {error}");
            None
        }
    }
}

/// State shared by the phases of a run.
struct Run<'a> {
    scenario: &'a Scenario,
    run_start: Instant,
    started_unix: u64,
    generator_cpu_start: Duration,
    topology: Option<Topology>,
    targets: Vec<String>,
    servers: Arc<ServerSet>,
    live: Arc<Live>,
    schedule: Schedule,
    /// Figures per rate step, as they are measured.
    steps: Arc<StepLog>,
    /// Room subscriptions over all users.
    subscriptions: usize,
    tops: Arc<Tops>,
    phase: watch::Sender<Phase>,
    sampler: tokio::task::JoinHandle<Sampled>,
    ramp: RampFigures,
    stop_users: watch::Sender<bool>,
}

/// What the ramp-up measured.
#[derive(Default)]
struct RampFigures {
    secs: f64,
    rss_before: Vec<u64>,
    rss_ready: Vec<u64>,
    runtime_threads: Vec<usize>,
}

/// What the publishing phase measured.
struct PublishPhase {
    started_at: f64,
    secs: f64,
    server_cpu: Vec<CpuTimes>,
    delivered: u64,
}

struct Published {
    figures: PublishPhase,
    actions: JoinSet<(usize, ActionOutcome)>,
    roll: Option<RollFigures>,
}

impl<'a> Run<'a> {
    /// Starts the servers (if the scenario spawns them) and the sampler.
    async fn start(scenario: &'a Scenario, options: &Options) -> Result<Run<'a>, RunError> {
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
        if topology.is_none() {
            check_reachable(&targets).await?;
        }
        let servers = Arc::new(ServerSet::new(
            topology
                .as_ref()
                .map(Topology::processes)
                .unwrap_or_default(),
        ));
        let live = Arc::new(Live::default());
        let schedule = schedule_of(scenario);
        let steps = Arc::new(StepLog::new(schedule.rates.len()));
        let (phase, phase_rx) = watch::channel(Phase::Ramp);
        let sampler = tokio::spawn(sample(
            live.clone(),
            servers.clone(),
            schedule.clone(),
            steps.clone(),
            run_start,
            phase_rx,
            Progress::new(options.quiet, scenario.users),
        ));
        Ok(Run {
            scenario,
            run_start,
            started_unix,
            generator_cpu_start,
            topology,
            targets,
            servers,
            live,
            schedule,
            steps,
            subscriptions: (0..scenario.users)
                .map(|user| scenario.room_indexes_of(user).len())
                .sum(),
            tops: Arc::new(Tops::new(scenario.rooms.count)),
            phase,
            sampler,
            ramp: RampFigures::default(),
            stop_users: watch::channel(false).0,
        })
    }

    /// Connects the users evenly over the ramp-up, then gives them time to subscribe.
    async fn ramp_up(&mut self) -> Vec<User> {
        let scenario = self.scenario;
        self.ramp.rss_before = self.servers.rss();
        let ramp = Duration::from_secs_f64(scenario.ramp_up_secs);
        let mut users = Vec::with_capacity(scenario.users);
        for index in 0..scenario.users {
            let at = self.run_start + ramp.mul_f64(index as f64 / scenario.users as f64);
            tokio::time::sleep_until(at).await;
            let rooms = scenario
                .room_indexes_of(index)
                .into_iter()
                .map(|room| (room, scenario.room_name(room)))
                .collect();
            users.push(User::start(
                index,
                client_config(scenario, &self.targets, index),
                rooms,
                self.live.clone(),
                self.stop_users.subscribe(),
            ));
        }
        let deadline = Instant::now() + READY_GRACE;
        while Live::get(&self.live.ready) + Live::get(&self.live.gave_up) < scenario.users as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.ramp.secs = self.run_start.elapsed().as_secs_f64();
        // Let allocations settle before reading the servers' memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.ramp.rss_ready = self.servers.rss();
        self.ramp.runtime_threads = self.servers.runtime_threads();
        users
    }

    /// Publishes on schedule (or holds the connections idle) while the timed actions and
    /// the roll run.
    async fn publish(&mut self) -> Published {
        let mut topology = self.topology.take();
        let mut published = self.publish_with(topology.as_mut()).await;
        if let (Some(roll), Some(topology)) = (&mut published.roll, &topology) {
            roll.connections_at_end = topology.connections().await.unwrap_or_default();
        }
        self.topology = topology;
        published
    }

    async fn publish_with(&self, topology: Option<&mut Topology>) -> Published {
        let scenario = self.scenario;
        let mut connecting = JoinSet::new();
        if self.schedule.publishes() {
            for index in 0..scenario.publish.publishers {
                let config = client_config(scenario, &self.targets, index);
                let live = self.live.clone();
                connecting.spawn(async move { (index, Publisher::connect(config, live).await) });
            }
        }
        let mut ready = connecting.join_all().await;
        ready.sort_by_key(|(index, _)| *index);
        let start = Instant::now();
        let _ = self.phase.send(Phase::Publish(start));
        let cpu_before = self.servers.cpu();
        let delivered_before = Live::get(&self.live.delivered);
        let (stop_publishing, publishing_stopped) = watch::channel(false);
        let mut publishers = JoinSet::new();
        let count = scenario.publish.publishers;
        for (index, publisher) in ready {
            let plan = Plan {
                rooms: (0..scenario.rooms.count)
                    .filter(|room| room % count == index)
                    .map(|room| (room, scenario.room_name(room)))
                    .collect(),
                schedule: self.schedule.clone(),
                message_bytes: scenario.publish.message_bytes,
                start,
            };
            publishers.spawn(publisher.run(
                plan,
                publishing_stopped.clone(),
                self.live.clone(),
                self.tops.clone(),
            ));
        }
        let env = topology
            .as_deref()
            .map(Topology::action_env)
            .unwrap_or_default();
        let mut actions = JoinSet::new();
        for (order, action) in scenario.actions.iter().enumerate() {
            let at = start + Duration::from_secs_f64(action.at_secs);
            actions.spawn(run_action(
                order,
                action.clone(),
                at,
                self.run_start,
                env.clone(),
            ));
        }
        let rolling = async {
            match (topology, &scenario.roll) {
                (Some(topology), Some(roll)) => {
                    let at = start + Duration::from_secs_f64(roll.at_secs);
                    Some(roll_instances(topology, roll, at, self.run_start).await)
                }
                _ => None,
            }
        };
        let publishing = async {
            if self.schedule.rates.len() > 1 && scenario.publish.stop_at_knee {
                self.step_until_degraded(start).await;
                let _ = stop_publishing.send(true);
            } else {
                tokio::time::sleep_until(start + self.schedule.duration()).await;
            }
            while publishers.join_next().await.is_some() {}
        };
        let (roll, ()) = tokio::join!(rolling, publishing);
        let cpu_after = self.servers.cpu();
        Published {
            figures: PublishPhase {
                started_at: start.duration_since(self.run_start).as_secs_f64(),
                secs: start.elapsed().as_secs_f64(),
                server_cpu: cpu_after
                    .iter()
                    .zip(&cpu_before)
                    .map(|(after, before)| after.since(before))
                    .collect(),
                delivered: Live::get(&self.live.delivered) - delivered_before,
            },
            actions,
            roll,
        }
    }

    /// Lets the rate steps run until one of them degrades (the knee), or all ran.
    async fn step_until_degraded(&self, start: Instant) {
        let rates = &self.schedule.rates;
        for step in 1..rates.len() {
            // The sampler attributes each second to a step after it ends.
            tokio::time::sleep_until(start + self.schedule.step * step as u32 + KNEE_CHECK_DELAY)
                .await;
            let measured = self.steps.summary(&rates[..step], self.subscriptions);
            if find_knee(&measured).is_some() {
                return;
            }
        }
        tokio::time::sleep_until(start + self.schedule.duration()).await;
    }

    /// Waits until every acknowledged message reached every subscriber (or time is up).
    async fn settle(&self, users: &[User]) -> f64 {
        let _ = self.phase.send(Phase::Settle);
        let start = Instant::now();
        loop {
            let tops = self.tops.snapshot();
            let missing: u64 = users
                .iter()
                .map(|user| {
                    let book = user.book.lock().unwrap_or_else(|p| p.into_inner());
                    book.tallies(&tops)
                        .map(|(_, tally)| tally.missing)
                        .sum::<u64>()
                })
                .sum();
            if missing == 0 || start.elapsed() > SETTLE_TIMEOUT {
                return start.elapsed().as_secs_f64();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sum of every ledger's verdict, and the worst subscribers.
fn account(users: &[User], tops: &[Option<roomcast::stream::Position>]) -> (Tally, Vec<Worst>) {
    let mut accounting = Tally::default();
    let mut worst = Vec::new();
    for user in users {
        let book = user.book.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, tally) in book.tallies(tops) {
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
    worst.truncate(WORST_LISTED);
    (accounting, worst)
}

/// The roll: at `at`, each instance in turn replaced (SIGTERM, drain, exit, a new process
/// on its port), the next once every instance lists every other as ready.
async fn roll_instances(
    topology: &mut Topology,
    roll: &Roll,
    at: Instant,
    run_start: Instant,
) -> RollFigures {
    tokio::time::sleep_until(at).await;
    let mut figures = RollFigures {
        started_at: run_start.elapsed().as_secs_f64(),
        connections_before: topology.connections().await.unwrap_or_default(),
        ..RollFigures::default()
    };
    let exit_timeout = Duration::from_secs_f64(roll.exit_timeout_secs);
    let ready_timeout = Duration::from_secs_f64(roll.ready_timeout_secs);
    for index in 0..topology.instances.len() {
        let at_secs = run_start.elapsed().as_secs_f64();
        let drain_secs = match topology.replace(index, exit_timeout).await {
            Ok(secs) => secs,
            Err(err) => {
                figures.error = Some(err.to_string());
                return figures;
            }
        };
        let replaced = Instant::now();
        if let Err(err) = topology.wait_all_listed_ready(ready_timeout).await {
            figures.error = Some(err.to_string());
            return figures;
        }
        figures.steps.push(RollStep {
            instance: index,
            at_secs,
            drain_secs,
            ready_secs: replaced.elapsed().as_secs_f64(),
        });
    }
    figures.connections_after_roll = topology.connections().await.unwrap_or_default();
    figures
}

/// How many users moved how many times: moves → users.
fn moves_per_user(users: &[User]) -> std::collections::BTreeMap<usize, usize> {
    let mut histogram = std::collections::BTreeMap::new();
    for user in users {
        let moves = user.book.lock().unwrap_or_else(|p| p.into_inner()).moves;
        *histogram.entry(moves).or_default() += 1;
    }
    histogram
}

async fn collect_actions(mut actions: JoinSet<(usize, ActionOutcome)>) -> Vec<ActionOutcome> {
    let mut outcomes = Vec::new();
    while let Some(outcome) = actions.join_next().await {
        if let Ok(outcome) = outcome {
            outcomes.push(outcome);
        }
    }
    outcomes.sort_by_key(|(order, _)| *order);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

/// Everything the report is made of.
struct Assembly<'a> {
    scenario: &'a Scenario,
    targets: Vec<String>,
    schedule: &'a Schedule,
    steps: Vec<Step>,
    subscriptions: usize,
    live: &'a Live,
    started_unix: u64,
    run_start: Instant,
    generator_cpu_start: Duration,
    servers: &'a ServerSet,
    ramp: &'a RampFigures,
    published: &'a PublishPhase,
    settle_secs: f64,
    sampled: Sampled,
    accounting: Tally,
    worst: Vec<Worst>,
    actions: Vec<ActionOutcome>,
    roll: Option<RollFigures>,
    connected_at_end: i64,
}

fn assemble(a: Assembly<'_>) -> Report {
    let scenario = a.scenario;
    let live = a.live;
    let total_secs = a.run_start.elapsed().as_secs_f64();
    let publish_secs = a.published.secs.max(f64::EPSILON);
    let generator_cpu = procstat::cpu_time(None)
        .unwrap_or_default()
        .saturating_sub(a.generator_cpu_start)
        .as_secs_f64();
    let attempted = Live::get(&live.publish_attempts);
    let failed = Live::get(&live.publish_failures);
    let acked = Live::get(&live.acked);
    let publishers = if a.schedule.publishes() {
        scenario.publish.publishers
    } else {
        0
    };
    let connections = connections_per_target(scenario.users, publishers, a.targets.len());
    let servers: Vec<ServerFigures> = a
        .servers
        .entries
        .iter()
        .enumerate()
        .map(|(index, (name, pid))| {
            let is_instance = name.starts_with("instance");
            let connections = if is_instance { connections[index] } else { 0 };
            let cpu = a.published.server_cpu[index];
            let (before, ready) = (a.ramp.rss_before[index], a.ramp.rss_ready[index]);
            ServerFigures {
                name: name.clone(),
                pid: *pid,
                publish_cpu_user_seconds: cpu.user.as_secs_f64(),
                publish_cpu_system_seconds: cpu.system.as_secs_f64(),
                rss_before_mib: mib(before),
                rss_ready_mib: mib(ready),
                runtime_threads: a
                    .ramp
                    .runtime_threads
                    .get(index)
                    .copied()
                    .filter(|&threads| threads > 0),
                connections,
                kib_per_connection: (connections > 0)
                    .then(|| ready.saturating_sub(before) as f64 / 1024.0 / connections as f64),
                idle_cpu_us_per_connection_second: (connections > 0 && !a.schedule.publishes())
                    .then(|| {
                        let held = connections as f64 * a.published.secs;
                        (cpu.user + cpu.system).as_secs_f64() * 1e6 / held.max(f64::EPSILON)
                    }),
            }
        })
        .collect();
    let steps = if a.schedule.rates.len() > 1 {
        a.steps
    } else {
        Vec::new()
    };
    Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        started_unix: a.started_unix,
        setup: Setup {
            users: scenario.users,
            publishers,
            rooms: scenario.rooms.count,
            subscriptions: a.subscriptions,
            targets: a.targets,
            encoding: scenario.encoding.clone(),
            message_bytes: scenario.publish.message_bytes,
            rate_per_room: a.schedule.rates.clone(),
            step_secs: a.schedule.step.as_secs_f64(),
            ramp_up_secs: scenario.ramp_up_secs,
            source_addresses: scenario
                .source_addresses
                .iter()
                .map(|address| address.to_string())
                .collect(),
        },
        phases: Phases {
            ramp_secs: a.ramp.secs,
            publish_secs: a.published.secs,
            settle_secs: a.settle_secs,
            total_secs,
            publish_started_at: a.published.started_at,
        },
        users: UserFigures {
            ready: Live::get(&live.ready),
            never_ready: (scenario.users as u64).saturating_sub(Live::get(&live.ready)),
            gave_up: Live::get(&live.gave_up),
            disconnects: Live::get(&live.disconnects),
            connected_at_end: a.connected_at_end,
        },
        publishes: PublishFigures {
            attempted,
            acked,
            failed,
            per_second: acked as f64 / publish_secs,
            error_rate: if attempted > 0 {
                failed as f64 / attempted as f64
            } else {
                0.0
            },
        },
        deliveries: DeliveryFigures {
            received: Live::get(&live.delivered),
            per_second: a.published.delivered as f64 / publish_secs,
        },
        latency_ms: Percentiles::of(&a.sampled.total),
        resume_ms: Percentiles::of(&live.resume_times()),
        accounting: a.accounting,
        worst_subscribers: a.worst,
        generator: Generator {
            cpu_seconds: generator_cpu,
            average_cores: generator_cpu / total_secs.max(f64::EPSILON),
            peak_cores: a.sampled.peak_generator,
            machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rss_mib: mib(procstat::resident_bytes(std::process::id()).unwrap_or_default()),
        },
        server_cpu_per_delivery: CpuPerDelivery::of(&servers, a.published.delivered),
        cpu_per_publish: CpuPerPublish::of(&servers, acked),
        redis_limit: None,
        publishes_per_redis_call: None,
        send_floor: None,
        servers,
        knee: find_knee(&steps),
        steps,
        actions: a.actions,
        roll: a.roll,
        timeline: a.sampled.timeline,
        verdict: Verdict::default(),
    }
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
    if let Some(error) = report.roll.as_ref().and_then(|roll| roll.error.as_ref()) {
        failures.push(format!("the roll stopped: {error}"));
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
            in_flight: scenario.publish.in_flight,
        }
    } else {
        Schedule {
            rates: scenario.publish.rate_steps.clone(),
            step: Duration::from_secs_f64(scenario.publish.step_secs),
            in_flight: 0,
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
fn connections_per_target(users: usize, publishers: usize, targets: usize) -> Vec<usize> {
    let slots = targets.max(1);
    let mut counts = vec![0; slots];
    for user in 0..users {
        counts[user % slots] += 1;
    }
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
        assert_eq!(connections_per_target(5, 1, 2), vec![4, 2]);
    }

    #[test]
    fn a_constant_rate_lasts_the_duration_and_steps_their_own() {
        let constant = schedule_of(&scenario("[publish]\nrate_per_room = 5.0"));
        assert_eq!(constant.rates, vec![5.0]);
        assert_eq!(constant.duration(), Duration::from_secs(3));
        let steps = schedule_of(&scenario(
            "[publish]\nrate_steps = [1.0, 2.0]\nstep_secs = 4",
        ));
        assert_eq!(steps.duration(), Duration::from_secs(8));
    }
}
