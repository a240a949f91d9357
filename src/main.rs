//! The `roomcast` binary: parse flags, load configuration, run the server until SIGINT or
//! SIGTERM, then shut down.

use clap::{Parser, Subcommand};
use roomcast::config::Config;
use roomcast::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for unusable configuration (EX_CONFIG... EX_USAGE in sysexits.h).
const EXIT_BAD_CONFIG: u8 = 64;

/// How environment variables map to configuration keys, for `--help`.
const ENV_HELP: &str = "\
Configuration layers, later ones win: the compiled-in defaults (`roomcast config --defaults`),
the --config file, then environment variables:
  ROOMCAST_<KEY>             a top-level key, e.g. ROOMCAST_LISTEN=0.0.0.0:8080
  ROOMCAST_<SECTION>__<KEY>  a key in a section (two underscores),
                             e.g. ROOMCAST_CONNECTION__MAX_ROOMS=500
  DATABASE_URL               database_url, unless ROOMCAST_DATABASE_URL is set
  RUST_LOG                   replaces log.level
Lists are comma separated. `roomcast config` prints the effective configuration.";

/// roomcast: a realtime messaging server.
#[derive(Parser)]
#[command(version, about, after_help = ENV_HELP)]
struct Args {
    /// Configuration file overriding the built-in defaults (see config/default.toml).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Instead of running the server, manage the configured database.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands besides running the server.
#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (defaults, file and environment applied) as
    /// TOML, with secrets and passwords redacted, and exit.
    Config {
        /// Print the compiled-in defaults instead (every key, documented).
        #[arg(long)]
        defaults: bool,
    },
    /// Project memberships (seed a project's first admin).
    #[command(subcommand)]
    Members(Members),
}
/// `roomcast members …`.
#[derive(Subcommand)]
enum Members {
    /// Gives a user a role in a project, creating the membership if needed.
    Grant {
        /// The project id.
        #[arg(long)]
        project: i64,
        /// The user id (the JWT `sub`).
        #[arg(long)]
        user: String,
        /// viewer, member or admin.
        #[arg(long, value_parser = parse_role)]
        role: roomcast::tracker::Role,
    },
    /// Removes a user from a project.
    Revoke {
        /// The project id.
        #[arg(long)]
        project: i64,
        /// The user id (the JWT `sub`).
        #[arg(long)]
        user: String,
    },
}

fn parse_role(text: &str) -> Result<roomcast::tracker::Role, String> {
    roomcast::tracker::Role::parse(text).ok_or_else(|| "expected viewer, member or admin".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    if let Some(Command::Config { defaults }) = args.command {
        return print_config(args.config.as_deref(), env, defaults);
    }
    let config = match roomcast::server::load_config(args.config.as_deref(), env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("roomcast: invalid configuration: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.runtime.worker_threads() {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roomcast: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Members(members)) = args.command {
        return runtime.block_on(run_command(members, &config.database_url));
    }
    runtime.block_on(async {
        let mut config = config;
        if config.node_id.is_empty() {
            config.node_id = format!("{:08x}", rand::random::<u32>());
        }
        let traces = roomcast::telemetry::init_logging(&config);
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let status = run(config).await;
        if let Some(traces) = traces {
            let _ = traces.shutdown();
        }
        status
    })
}

async fn run(config: Config) -> ExitCode {
    let server = match Server::start(&config).await {
        Ok(server) => server,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let requested = server.drain_requested();
    tokio::select! {
        _ = roomcast::cli::stop_signal() => {}
        _ = requested.cancelled() => {}
    }
    let drain = server.drain(config.drain.window(), config.drain.deadline());
    tokio::select! {
        completed = drain => {
            if !completed {
                tracing::warn!("exited at the drain deadline");
            }
        }
        _ = roomcast::cli::stop_signal() => tracing::warn!("second signal: exiting without finishing the drain"),
    }
    ExitCode::SUCCESS
}

/// `roomcast config [--defaults]`.
fn print_config(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    defaults: bool,
) -> ExitCode {
    if defaults {
        print!("{}", roomcast::config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    let env: Vec<(String, String)> = env.into_iter().collect();
    let effective = roomcast::server::load_config(file, env.clone())
        .and_then(|_| Config::effective_toml(file, env));
    match effective {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("roomcast: invalid configuration: {err}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

/// Runs a command other than the server; prints its outcome.
async fn run_command(members: Members, database_url: &str) -> ExitCode {
    let outcome = match members {
        Members::Grant {
            project,
            user,
            role,
        } => roomcast::cli::grant(database_url, project, &user, role).await,
        Members::Revoke { project, user } => {
            roomcast::cli::revoke(database_url, project, &user).await
        }
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("roomcast: {err}");
            ExitCode::FAILURE
        }
    }
}
