//! The local topology a scenario runs against: a `redis-server` on a free loopback port
//! and N roomcast instances on ephemeral ports, each with its own SQLite file, all in a
//! scratch directory; logs go to files there. Everything started here is killed when
//! the topology is shut down or dropped.

use crate::scenario::Spawn;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Longest wait for a started process to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A topology that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A started process did not come up.
    #[error("{0}")]
    NotReady(String),
    /// The scratch directory could not be prepared.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// One roomcast instance.
pub struct Instance {
    child: Child,
    /// Process id.
    pub pid: u32,
    /// WebSocket URL (`ws://127.0.0.1:PORT/ws`).
    pub url: String,
}

/// The Redis server.
pub struct Redis {
    child: Child,
    /// Process id.
    pub pid: u32,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
}

/// Servers started for a run.
pub struct Topology {
    /// The Redis server, if one was asked for.
    pub redis: Option<Redis>,
    /// The roomcast instances, in order.
    pub instances: Vec<Instance>,
    /// Where logs and databases live.
    pub dir: PathBuf,
}

impl Topology {
    /// Starts what `spawn` describes; logs go to `dir`.
    pub async fn start(spawn: &Spawn, dir: &Path) -> Result<Topology, TopologyError> {
        std::fs::create_dir_all(dir).map_err(|source| TopologyError::Scratch {
            path: dir.to_owned(),
            source,
        })?;
        let binary = roomcast_binary(&spawn.binary)?;
        let mut topology = Topology {
            redis: None,
            instances: Vec::new(),
            dir: dir.to_owned(),
        };
        if spawn.redis {
            topology.redis = Some(start_redis(dir).await?);
        }
        for index in 0..spawn.instances {
            let instance = start_instance(
                &binary,
                index,
                dir,
                topology.redis.as_ref().map(|redis| redis.url.as_str()),
                spawn,
            )
            .await?;
            topology.instances.push(instance);
        }
        Ok(topology)
    }

    /// The instances' WebSocket URLs.
    pub fn urls(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.url.clone()).collect()
    }

    /// Environment for timed actions: `ROOMCAST_PID_n`, `ROOMCAST_URL_n`, `REDIS_PID`,
    /// `REDIS_URL`.
    pub fn action_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for (index, instance) in self.instances.iter().enumerate() {
            env.push((format!("ROOMCAST_PID_{index}"), instance.pid.to_string()));
            env.push((format!("ROOMCAST_URL_{index}"), instance.url.clone()));
        }
        if let Some(redis) = &self.redis {
            env.push(("REDIS_PID".into(), redis.pid.to_string()));
            env.push(("REDIS_URL".into(), redis.url.clone()));
        }
        env
    }

    /// Every process started, named `instance-N` and `redis`, instances first.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes: Vec<(String, u32)> = self
            .instances
            .iter()
            .enumerate()
            .map(|(index, instance)| (format!("instance-{index}"), instance.pid))
            .collect();
        if let Some(redis) = &self.redis {
            processes.push(("redis".into(), redis.pid));
        }
        processes
    }

    /// Stops everything: instances first (SIGKILL), then Redis.
    pub async fn shutdown(mut self) {
        for instance in &mut self.instances {
            let _ = instance.child.kill().await;
        }
        if let Some(redis) = &mut self.redis {
            let _ = redis.child.kill().await;
        }
    }
}

/// The roomcast binary: the configured one, else the one next to this executable.
fn roomcast_binary(configured: &str) -> Result<PathBuf, TopologyError> {
    let path = if configured.is_empty() {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("roomcast")))
            .unwrap_or_else(|| PathBuf::from("roomcast"))
    } else {
        PathBuf::from(configured)
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(TopologyError::NotReady(format!(
            "no roomcast binary at {} (build it with `cargo build --release --bin roomcast`, \
             or set spawn.binary)",
            path.display()
        )))
    }
}

fn free_port() -> Result<u16, TopologyError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| TopologyError::Spawn {
            program: "a listener on 127.0.0.1".into(),
            source,
        })
}

async fn start_redis(dir: &Path) -> Result<Redis, TopologyError> {
    let port = free_port()?;
    let log =
        std::fs::File::create(dir.join("redis.log")).map_err(|source| TopologyError::Scratch {
            path: dir.to_owned(),
            source,
        })?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TopologyError::Spawn {
            program: "redis-server".into(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while !redis_answers(port).await {
        if tokio::time::Instant::now() > deadline {
            return Err(TopologyError::NotReady(format!(
                "redis-server on port {port} did not answer PING"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Redis {
        child,
        pid,
        url: format!("redis://127.0.0.1:{port}"),
    })
}

async fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_)) if &reply == b"+PONG\r\n"
    )
}

async fn start_instance(
    binary: &Path,
    index: usize,
    dir: &Path,
    redis_url: Option<&str>,
    spawn: &Spawn,
) -> Result<Instance, TopologyError> {
    let mut command = Command::new(binary);
    command
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("ROOMCAST_LISTEN", "127.0.0.1:0")
        .env("ROOMCAST_LOG__FORMAT", "json")
        .env("ROOMCAST_LOG__LEVEL", "info")
        .env(
            "ROOMCAST_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("instance-{index}.db")).display()
            ),
        )
        .env("ROOMCAST_REDIS_URL", redis_url.unwrap_or(""))
        .envs(&spawn.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| TopologyError::Spawn {
        program: binary.display().to_string(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    let log_path = dir.join(format!("instance-{index}.log"));
    let log =
        tokio::fs::File::create(&log_path)
            .await
            .map_err(|source| TopologyError::Scratch {
                path: log_path.clone(),
                source,
            })?;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    tokio::spawn(copy_log(stdout, log, Some(addr_tx)));
    let err_log = tokio::fs::File::create(dir.join(format!("instance-{index}.stderr.log")))
        .await
        .map_err(|source| TopologyError::Scratch {
            path: dir.to_owned(),
            source,
        })?;
    tokio::spawn(copy_log(stderr, err_log, None));
    let addr = match tokio::time::timeout(START_TIMEOUT, addr_rx).await {
        Ok(Ok(addr)) => addr,
        _ => {
            return Err(TopologyError::NotReady(format!(
                "roomcast instance {index} did not start listening; see {}",
                log_path.display()
            )));
        }
    };
    Ok(Instance {
        child,
        pid,
        url: format!("ws://{addr}/ws"),
    })
}

/// Copies a process's output into a log file; reports the address from the
/// `roomcast listening` line when asked.
async fn copy_log(
    stream: impl tokio::io::AsyncRead + Unpin,
    mut log: tokio::fs::File,
    mut listening: Option<tokio::sync::oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if listening.is_some()
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
            && value["message"] == "roomcast listening"
            && let Some(addr) = value["addr"].as_str()
            && let Some(tx) = listening.take()
        {
            let _ = tx.send(addr.to_owned());
        }
        if log.write_all(line.as_bytes()).await.is_err() || log.write_all(b"\n").await.is_err() {
            return;
        }
    }
    let _ = log.flush().await;
}
