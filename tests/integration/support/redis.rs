//! `redis-server` processes owned by a test: on free loopback ports, paused, killed and
//! restarted at will, and always killed when the test ends.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A free loopback TCP port (released before use; a collision is unlikely and fails loudly).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis server process (or a Redis Sentinel: see [`SentinelGroup`]).
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    /// A configuration file given before the options (a sentinel needs one it can
    /// rewrite).
    config: Option<PathBuf>,
    extra: Vec<String>,
}

impl RedisServer {
    /// A fresh Redis with no persistence configured (SAVE still writes a snapshot).
    pub async fn start() -> RedisServer {
        Self::start_with(&[] as &[&str]).await
    }

    /// A fresh Redis with extra command-line options.
    pub async fn start_with(extra: &[impl AsRef<str>]) -> RedisServer {
        Self::start_configured(None, extra).await
    }

    /// A sentinel watching the master on `master_port` as [`SENTINEL_MASTER`] (quorum 2;
    /// down after 1 s without an answer), with extra options.
    pub async fn start_sentinel(master_port: u16, extra: &[impl AsRef<str>]) -> RedisServer {
        let write = |dir: &std::path::Path| {
            let path = dir.join("sentinel.conf");
            std::fs::write(
                &path,
                format!(
                    "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
                ),
            )
            .unwrap();
            path
        };
        let mut options = vec!["--sentinel"];
        options.extend(extra.iter().map(AsRef::as_ref));
        Self::start_configured(Some(&write), &options).await
    }

    /// A server started with `config(dir)` as its configuration file (written into the
    /// server's own directory), then the usual options and `extra`.
    async fn start_configured(
        config: Option<&dyn Fn(&std::path::Path) -> PathBuf>,
        extra: &[impl AsRef<str>],
    ) -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("roomcast-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port,
            config: config.map(|write| write(&dir)),
            dir,
            extra: extra.iter().map(|s| s.as_ref().to_owned()).collect(),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            command.arg(config);
        }
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        self.wait_until_up().await;
    }

    /// Waits until the server answers PING.
    pub async fn wait_until_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli(&["PING"]).await.as_deref() == Some("PONG") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a redis-cli command against this server; its trimmed output, if it ran.
    pub async fn cli(&self, args: &[&str]) -> Option<String> {
        let output = tokio::time::timeout(
            Duration::from_secs(5),
            Command::new("redis-cli")
                .args(["-p", &self.port.to_string()])
                .args(args)
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the server (SIGKILL: nothing is saved) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts the server again on the same port and directory: it loads the snapshot
    /// in the directory, if any.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Starts the server again empty (snapshot deleted).
    pub async fn restart_empty(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of three masters (with or without a replica each), created
/// with `redis-cli --cluster create`.
pub struct RedisCluster {
    /// Every node: masters first, as created (roles change with failovers).
    pub nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Its port.
    pub port: u16,
    /// Whether it is a master (and not failed).
    pub master: bool,
    /// Slot ranges it serves, as `(first, last)`.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them.
    pub async fn start() -> RedisCluster {
        Self::create(0).await
    }

    /// Three masters, each with one replica that takes over when its master fails
    /// (failure detection after one second).
    pub async fn start_with_replicas() -> RedisCluster {
        Self::create(1).await
    }

    async fn create(replicas: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        let timeout = if replicas > 0 { "1000" } else { "2000" };
        for _ in 0..3 * (1 + replicas) {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    timeout,
                    // A lagging replica may still take over (the case under test).
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy().await;
        if replicas > 0 {
            // Replicas must have synced before a failover can be tested.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            for node in &cluster.nodes {
                loop {
                    let info = node.cli(&["INFO", "replication"]).await.unwrap_or_default();
                    if info.contains("role:master") || info.contains("master_link_status:up") {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "replica did not sync"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees on the
    /// masters of all slots.
    pub async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut views = Vec::new();
            let mut ok = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info = node.cli(&["CLUSTER", "INFO"]).await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
                let mut masters: Vec<(u16, u16, u16)> = self
                    .topology_from(node)
                    .await
                    .into_iter()
                    .filter(|n| n.master)
                    .flat_map(|n| n.slots.into_iter().map(move |(a, b)| (a, b, n.port)))
                    .collect();
                masters.sort();
                views.push(masters);
            }
            if ok && views.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `CLUSTER NODES` as one running node sees it.
    pub async fn topology(&self) -> Vec<ClusterNode> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        self.topology_from(node).await
    }

    async fn topology_from(&self, node: &RedisServer) -> Vec<ClusterNode> {
        let text = node.cli(&["CLUSTER", "NODES"]).await.unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let flags = fields.get(2)?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|f| !f.starts_with('['))
                    .filter_map(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some(ClusterNode {
                    port,
                    master: flags.contains("master") && !flags.contains("fail"),
                    slots,
                })
            })
            .collect()
    }

    /// The index in `nodes` of the node with this port.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// The index of the master serving `slot`.
    pub async fn master_of(&self, slot: u16) -> usize {
        self.master_of_checked(slot)
            .await
            .expect("slot has a master")
    }

    /// The index of the master serving `slot`, if a running node knows one.
    pub async fn master_of_checked(&self, slot: u16) -> Option<usize> {
        let topology = self.topology().await;
        let master = topology
            .iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))?;
        Some(self.index_of(master.port))
    }

    /// The indexes of the masters that serve slots.
    pub async fn masters(&self) -> Vec<usize> {
        let topology = self.topology().await;
        topology
            .iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .map(|n| self.index_of(n.port))
            .collect()
    }

    /// The index of a replica of the master at `master`.
    pub async fn replica_of(&self, master: usize) -> usize {
        let master_port = self.nodes[master].port;
        for (i, node) in self.nodes.iter().enumerate() {
            let info = node.cli(&["INFO", "replication"]).await.unwrap_or_default();
            if info.contains(&format!("master_port:{master_port}")) {
                return i;
            }
        }
        panic!("master on {master_port} has no replica");
    }

    /// The hash slot of a key.
    pub async fn keyslot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .await
            .and_then(|s| s.parse().ok())
            .expect("CLUSTER KEYSLOT answers")
    }

    /// The node id of the node at `index`.
    pub async fn id_of(&self, index: usize) -> String {
        self.nodes[index]
            .cli(&["CLUSTER", "MYID"])
            .await
            .expect("CLUSTER MYID answers")
    }

    /// Moves one slot and its keys from master `from` to master `to`, the way
    /// `redis-cli --cluster reshard` does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
    pub async fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let (from_id, to_id) = (self.id_of(from).await, self.id_of(to).await);
        let slot = slot.to_string();
        target
            .cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
            .await;
        source
            .cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
            .await;
        loop {
            let keys = source
                .cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .await
                .unwrap_or_default();
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = target.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let answer = source.cli(&args).await.unwrap_or_default();
            assert!(
                answer.contains("OK") || answer.contains("NOKEY"),
                "MIGRATE: {answer}"
            );
        }
        for node in [target, source] {
            node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                .await;
        }
        for node in &self.nodes {
            node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                .await;
        }
    }

    /// `redis-cluster://host:port,…` over every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }
}

/// The name the sentinels of a [`SentinelGroup`] know their master by.
pub const SENTINEL_MASTER: &str = "mymaster";

/// The replication user of a [`SentinelGroup`]: every server has it and replicates with
/// it, so a master can cut its replica off by disabling it.
const REPLICATION: [&str; 13] = [
    "--user",
    "repl",
    "on",
    ">repl-secret",
    "~*",
    "&*",
    "+@all",
    "--masteruser",
    "repl",
    "--masterauth",
    "repl-secret",
    // A replica syncs at once (not after the 5 s wait for more replicas).
    "--repl-diskless-sync-delay",
    "0",
];

/// A Redis master, one replica, and three sentinels watching them (quorum 2), each on a
/// free port: the sentinels call the master down after 1 s without an answer.
pub struct SentinelGroup {
    /// The master, then the replica, as started (roles change with failovers).
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
}

impl SentinelGroup {
    /// Starts the servers and sentinels; returns once the replica is in sync and every
    /// sentinel knows the replica and the other sentinels (so that they can agree on a
    /// failover).
    pub async fn start() -> SentinelGroup {
        let master = RedisServer::start_with(&REPLICATION).await;
        let master_port = master.port.to_string();
        let mut replica_options = REPLICATION.to_vec();
        replica_options.extend(["--replicaof", "127.0.0.1", &master_port]);
        let replica = RedisServer::start_with(&replica_options).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(RedisServer::start_sentinel(master.port, &[] as &[&str]).await);
        }
        let group = SentinelGroup {
            servers: vec![master, replica],
            sentinels,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let synced = group.servers[1]
                .cli(&["INFO", "replication"])
                .await
                .unwrap_or_default()
                .contains("master_link_status:up");
            let mut known = true;
            for sentinel in &group.sentinels {
                let state = sentinel
                    .cli(&["SENTINEL", "MASTER", SENTINEL_MASTER])
                    .await
                    .unwrap_or_default();
                let fields: Vec<&str> = state.lines().collect();
                let field = |name: &str| {
                    fields
                        .iter()
                        .position(|f| *f == name)
                        .and_then(|i| fields.get(i + 1))
                        .copied()
                };
                known &=
                    field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2");
            }
            if synced && known {
                return group;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica or the sentinels did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis-sentinel://` URL of the three sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis-sentinel://{}/{SENTINEL_MASTER}", sentinels.join(","))
    }

    /// The port of the master, as the first sentinel that answers names it.
    pub async fn master_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let answer = sentinel
                .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                .await
                .unwrap_or_default();
            if let Some(port) = answer.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Some(port);
            }
        }
        None
    }

    /// Cuts the replica off the master at `master`: the replication user is disabled
    /// there and its connection closed, so the replica keeps its data and its role but
    /// receives nothing more (its reconnections are refused).
    pub async fn cut_replication(&self, master: usize) {
        let server = &self.servers[master];
        assert_eq!(
            server
                .cli(&["ACL", "SETUSER", "repl", "off"])
                .await
                .as_deref(),
            Some("OK")
        );
        server.cli(&["CLIENT", "KILL", "USER", "repl"]).await;
    }
}
