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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (defaults, file and environment applied) as
    /// TOML, with secrets and passwords redacted, and exit.
    Config {
        /// Print the compiled-in defaults instead (every key, documented).
        #[arg(long)]
        defaults: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    if let Some(Command::Config { defaults }) = args.command {
        return print_config(args.config.as_deref(), env, defaults);
    }
    let config = match Config::load(args.config.as_deref(), env) {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roomcast: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
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
        _ = shutdown_signal() => {}
        _ = requested.cancelled() => {}
    }
    let drain = server.drain(config.drain.window(), config.drain.deadline());
    tokio::select! {
        completed = drain => {
            if !completed {
                tracing::warn!("exited at the drain deadline");
            }
        }
        _ = shutdown_signal() => tracing::warn!("second signal: exiting without finishing the drain"),
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
    match Config::effective_toml(file, env) {
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
