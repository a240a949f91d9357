//! `roomcast-load`: simulates thousands of users against roomcast instances, accounts
//! for every message, and reports latency, throughput and resume times.
//!
//! ```text
//! roomcast-load run loadtest/scenarios/failover-kill.toml
//! roomcast-load up --instances 2
//! ```

mod accounting;
mod html;
mod procstat;
mod progress;
mod publishers;
mod redis_limit;
mod report;
mod run;
mod sampler;
mod scenario;
mod send_floor;
mod stats;
mod topology;
mod users;

use clap::{Parser, Subcommand};
use scenario::{Scenario, Spawn};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status when the run completed but failed its checks.
const FAILED: u8 = 1;
/// Exit status when the run could not take place.
const UNUSABLE: u8 = 2;

#[derive(Parser)]
#[command(name = "roomcast-load", version, about = "Load tester for roomcast")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario; exits 1 if anything was lost, duplicated or reordered, or a
    /// threshold was exceeded, and 2 if the run could not take place.
    Run {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Where report.json, report.html and the servers' logs go
        /// (default: target/roomcast-load/NAME).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Overrides the scenario's number of users.
        #[arg(long)]
        users: Option<usize>,
        /// Overrides the scenario's duration (seconds).
        #[arg(long)]
        duration: Option<f64>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Starts a local topology (Redis on a free port and N instances), prints the URLs
    /// and process ids, and stops everything on Ctrl-C or SIGTERM.
    Up {
        /// roomcast instances.
        #[arg(long, default_value_t = 2)]
        instances: usize,
        /// Do not start Redis (one instance on the embedded broker).
        #[arg(long)]
        no_redis: bool,
        /// Where logs go (default: target/roomcast-load/up).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            scenario,
            report_dir,
            users,
            duration,
            quiet,
        } => run_scenario(scenario, report_dir, users, duration, quiet).await,
        Command::Up {
            instances,
            no_redis,
            dir,
        } => up(instances, !no_redis, dir).await,
    }
}

async fn run_scenario(
    path: PathBuf,
    report_dir: Option<PathBuf>,
    users: Option<usize>,
    duration: Option<f64>,
    quiet: bool,
) -> ExitCode {
    let mut scenario = match Scenario::load(&path) {
        Ok(scenario) => scenario,
        Err(error) => return unusable(&error),
    };
    if let Some(users) = users {
        scenario.users = users;
    }
    if let Some(duration) = duration {
        scenario.duration_secs = duration;
    }
    let report_dir =
        report_dir.unwrap_or_else(|| PathBuf::from("target/roomcast-load").join(&scenario.name));
    if let Err(error) = std::fs::create_dir_all(&report_dir) {
        return unusable(&format!("{}: {error}", report_dir.display()));
    }
    let options = run::Options {
        report_dir: report_dir.clone(),
        quiet,
    };
    let report = tokio::select! {
        result = run::run(&scenario, &options) => match result {
            Ok(report) => report,
            Err(error) => return unusable(&error),
        },
        // By the time this branch runs, the run's future is dropped, and with it the
        // topology it started: its processes are killed on drop, so a stopped run leaves
        // no server or redis-server behind.
        signal = roomcast::cli::stop_signal() => stopped(signal),
    };
    println!("{}", report.table());
    let json = report_dir.join("report.json");
    let html = report_dir.join("report.html");
    let written = serde_json::to_vec_pretty(&report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&json, bytes))
        .and_then(|()| std::fs::write(&html, html::render(&report)));
    match written {
        Ok(()) => println!("  report: {} and {}", json.display(), html.display()),
        Err(error) => return unusable(&format!("cannot write the report: {error}")),
    }
    if report.verdict.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

async fn up(instances: usize, redis: bool, dir: Option<PathBuf>) -> ExitCode {
    if instances > 1 && !redis {
        return unusable(&"more than one instance needs Redis");
    }
    let spawn = Spawn {
        instances,
        redis,
        binary: String::new(),
        env: Default::default(),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from("target/roomcast-load/up"));
    let topology = match topology::Topology::start(&spawn, &dir).await {
        Ok(topology) => topology,
        Err(error) => return unusable(&error),
    };
    // Listening before saying that everything is up: whoever reads that may stop it at once.
    let stop = roomcast::cli::stop_signal();
    for (key, value) in topology.action_env() {
        println!("{key}={value}");
    }
    println!(
        "# logs in {}; Ctrl-C (or SIGTERM) stops everything",
        topology.dir.display()
    );
    stop.await;
    topology.shutdown().await;
    ExitCode::SUCCESS
}

/// Ends a run stopped by SIGINT or SIGTERM, with the shell's status for that signal. It
/// exits at once: the floor measurement's sending thread may still be busy, and a
/// runtime waits for such threads when it is dropped.
fn stopped(signal: roomcast::cli::StopSignal) -> ! {
    eprintln!(
        "roomcast-load: stopped by {}; the servers it started are stopped too",
        signal.name()
    );
    std::process::exit(signal.exit_status().into())
}

fn unusable(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("roomcast-load: {error}");
    ExitCode::from(UNUSABLE)
}
