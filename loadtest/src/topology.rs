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
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Processes that held this port before this one (replaced by a roll).
    pub replaced: usize,
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
    binary: PathBuf,
    spawn: Spawn,
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
            binary,
            spawn: spawn.clone(),
        };
        if spawn.redis {
            topology.redis = Some(start_redis(dir).await?);
        }
        for index in 0..spawn.instances {
            let instance = topology.start_instance(index, "127.0.0.1:0", 0).await?;
            topology.instances.push(instance);
        }
        Ok(topology)
    }

    /// Replaces instance `index` as a deploy does: SIGTERM, waits (up to `exit_timeout`)
    /// until it has drained and exited, then starts a new process on the same port.
    /// Returns the seconds from SIGTERM to exit.
    pub async fn replace(
        &mut self,
        index: usize,
        exit_timeout: Duration,
    ) -> Result<f64, TopologyError> {
        let signalled = tokio::time::Instant::now();
        let old = &mut self.instances[index];
        let status = Command::new("kill")
            .args(["-TERM", &old.pid.to_string()])
            .status()
            .await
            .map_err(|source| TopologyError::Spawn {
                program: "kill".into(),
                source,
            })?;
        if !status.success() {
            return Err(TopologyError::NotReady(format!(
                "instance {index} (pid {}) could not be signalled",
                old.pid
            )));
        }
        match tokio::time::timeout(exit_timeout, old.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                return Err(TopologyError::NotReady(format!(
                    "instance {index} exited with {status} after SIGTERM"
                )));
            }
            _ => {
                return Err(TopologyError::NotReady(format!(
                    "instance {index} did not exit within {exit_timeout:?} of SIGTERM"
                )));
            }
        }
        let drained = signalled.elapsed().as_secs_f64();
        let (addr, replaced) = (old.addr.clone(), old.replaced + 1);
        let instance = self.start_instance(index, &addr, replaced).await?;
        if instance.addr != addr {
            return Err(TopologyError::NotReady(format!(
                "the replacement of instance {index} listens on {} instead of {addr}",
                instance.addr
            )));
        }
        self.instances[index] = instance;
        Ok(drained)
    }

    /// Waits (up to `timeout`) until every instance answers `/readyz` with 200 and lists
    /// exactly the running instances, all ready, in its cluster view.
    pub async fn wait_all_listed_ready(&self, timeout: Duration) -> Result<(), TopologyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.all_listed_ready().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TopologyError::NotReady(format!(
                    "the instances did not all list each other as ready within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn all_listed_ready(&self) -> bool {
        for instance in &self.instances {
            if !matches!(http_get(&instance.addr, "/readyz").await, Some((200, _))) {
                return false;
            }
            let Some(view) = cluster_view(&instance.addr).await else {
                return false;
            };
            let listed = view["instances"].as_array().cloned().unwrap_or_default();
            let every_one = self.instances.iter().all(|other| {
                listed
                    .iter()
                    .any(|i| i["advertise_url"] == other.url.as_str() && i["state"] == "ready")
            });
            if listed.len() != self.instances.len() || !every_one {
                return false;
            }
        }
        true
    }

    /// Connections per instance, in order, as the cluster view of the first instance
    /// that answers lists them (by advertised address); `None` when none answers.
    pub async fn connections(&self) -> Option<Vec<u64>> {
        for instance in &self.instances {
            if let Some(view) = cluster_view(&instance.addr).await {
                let listed = view["instances"].as_array().cloned().unwrap_or_default();
                return Some(
                    self.instances
                        .iter()
                        .map(|other| {
                            listed
                                .iter()
                                .find(|i| i["advertise_url"] == other.url.as_str())
                                .and_then(|i| i["connections"].as_u64())
                                .unwrap_or(0)
                        })
                        .collect(),
                );
            }
        }
        None
    }

    /// Starts instance `index` listening on `listen`; its `replaced`-th replacement
    /// logs to `instance-N.R.log` (the first process to `instance-N.log`).
    async fn start_instance(
        &self,
        index: usize,
        listen: &str,
        replaced: usize,
    ) -> Result<Instance, TopologyError> {
        let name = if replaced == 0 {
            format!("instance-{index}")
        } else {
            format!("instance-{index}.{replaced}")
        };
        let redis_url = self.redis.as_ref().map(|redis| redis.url.as_str());
        let mut instance = start_instance(
            &self.binary,
            &name,
            index,
            &self.dir,
            redis_url,
            &self.spawn,
            listen,
        )
        .await?;
        instance.replaced = replaced;
        Ok(instance)
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

/// `GET path` over HTTP/1.0 (so the body is neither chunked nor kept alive): the status
/// and the body, or `None` when the server cannot be reached or answers nonsense.
async fn http_get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&response[..split]).ok()?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, response[split + 4..].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// `GET /api/v1/admin/cluster` of the instance at `addr` (open to every caller on
/// loopback without authentication), when it answers 200 with JSON.
async fn cluster_view(addr: &str) -> Option<serde_json::Value> {
    match http_get(addr, "/api/v1/admin/cluster").await? {
        (200, body) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

async fn start_instance(
    binary: &Path,
    name: &str,
    index: usize,
    dir: &Path,
    redis_url: Option<&str>,
    spawn: &Spawn,
    listen: &str,
) -> Result<Instance, TopologyError> {
    let mut command = Command::new(binary);
    command
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("ROOMCAST_LISTEN", listen)
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
    let log_path = dir.join(format!("{name}.log"));
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
    let err_log = tokio::fs::File::create(dir.join(format!("{name}.stderr.log")))
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
                "roomcast {name} did not start listening; see {}",
                log_path.display()
            )));
        }
    };
    Ok(Instance {
        child,
        pid,
        url: format!("ws://{addr}/ws"),
        addr,
        replaced: 0,
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
