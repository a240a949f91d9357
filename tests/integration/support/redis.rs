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

/// A Redis server process.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// A fresh Redis with no persistence configured (SAVE still writes a snapshot).
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// A fresh Redis with extra command-line options.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("roomcast-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
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
