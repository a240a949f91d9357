//! TLS to Redis and to PostgreSQL, against servers the tests start with certificates
//! signed by a private CA the test makes: trusted through the configuration, the
//! connections work; without the CA, the certificate is refused and the reason is said.

use crate::support::process::RoomcastProcess;
use crate::support::redis::{RedisCluster, RedisServer, SENTINEL_MASTER, free_port};
use crate::support::tls::TestCa;
use crate::support::{TestClient, WAIT, wait_ready};
use roomcast::protocol::{Encoding, ServerFrame};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    let ca = TestCa::new("redis");
    let tls_port = free_port();
    let ca_cert = ca.ca_cert();
    let mut redis = RedisServer::start_with(&ca.redis_options(tls_port)).await;
    // The TLS port speaks nothing but TLS: whatever roomcast stores there went over it.
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let mut process = RoomcastProcess::start(&[
        ("ROOMCAST_REDIS_URL", &url),
        ("ROOMCAST_REDIS__TLS_CA_FILE", &ca_cert),
    ])
    .await;
    wait_ready(&process.addr).await;
    round_trip(&process, "secure").await;
    let keys = redis
        .cli(&["--scan", "--pattern", "rc:*"])
        .await
        .unwrap_or_default();
    assert!(keys.contains("secure"), "no room keys in Redis: {keys:?}");
    process.signal("KILL");
    process.wait(WAIT).await;
    refused_without_the_ca(&url, "cannot connect to Redis yet").await;
    redis.kill().await;
}

/// A publish in `room` is acknowledged (sequenced over TLS) as seq 1 and delivered back
/// through the Pub/Sub connection (over TLS as well).
async fn round_trip(process: &RoomcastProcess, room: &str) {
    let mut client = TestClient::connect(&process.url(), Encoding::Json).await;
    client.subscribe(room, None).await;
    let (position, _, before_ack) = client.publish(room, json!("over TLS"), None).await;
    assert_eq!(position.seq, 1);
    if !before_ack
        .iter()
        .any(|f| matches!(f, ServerFrame::Message { .. }))
    {
        let (_, _, seq, data) = client.message().await;
        assert_eq!((seq, data), (1, json!("over TLS")));
    }
}

/// An instance on `url` trusting only the system's store refuses the private CA's
/// certificate, and its log line (the one containing `needle`) says why.
async fn refused_without_the_ca(url: &str, needle: &str) {
    let mut untrusting = RoomcastProcess::start(&[("ROOMCAST_REDIS_URL", url)]).await;
    let line = untrusting.wait_for_log(needle, WAIT).await;
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    untrusting.signal("KILL");
    untrusting.wait(WAIT).await;
}

/// A PostgreSQL of the test's own (Debian's binaries, a data directory made by
/// `initdb`), accepting TLS connections only, run as the `postgres` system user
/// (PostgreSQL refuses to run as root). Killed by its process id when dropped.
struct TlsPostgres {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (Debian package postgresql)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("a postgres system user")
    };
    (id("-u"), id("-g"))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

impl TlsPostgres {
    async fn start(ca: &TestCa) -> TlsPostgres {
        let bin = postgres_bin();
        let (uid, gid) = postgres_ids();
        let dir = ca.dir.join("pg");
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        for (path, mode) in [(&ca.dir, 0o755), (&dir, 0o700)] {
            chown(path, uid, gid);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for name in ["server.crt", "server.key"] {
            let to = dir.join(name);
            std::fs::copy(ca.dir.join(name), &to).unwrap();
            chown(&to, uid, gid);
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let status = tokio::process::Command::new(bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        // TLS or nothing: a plain connection is rejected by pg_hba.conf.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(bin.join("postgres"))
            .args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .args(["-c", &format!("unix_socket_directories={}", dir.display())])
            .args([
                "-c",
                &format!("ssl_cert_file={}", dir.join("server.crt").display()),
            ])
            .args([
                "-c",
                &format!("ssl_key_file={}", dir.join("server.key").display()),
            ])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts");
        let server = TlsPostgres { child, port, dir };
        // Ready when pg_isready says it accepts connections (it exits 0 then).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = tokio::process::Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
                .stdout(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "postgres did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_require_and_verify_full() {
    let ca = TestCa::new("pg");
    let postgres = TlsPostgres::start(&ca).await;
    let ca_cert = ca.ca_cert();

    // verify-full with the private CA: the certificate and the address are checked.
    let store = roomcast::store::Store::connect(
        &postgres.url(&format!("sslmode=verify-full&sslrootcert={ca_cert}")),
    )
    .await
    .expect("verify-full with the CA connects");
    store.ping().await.expect("the store answers over TLS");
    drop(store);

    // require: encrypted, the certificate not checked.
    roomcast::store::Store::connect(&postgres.url("sslmode=require"))
        .await
        .expect("require connects");

    // verify-full against the system's trust store: the private CA is unknown.
    let err = roomcast::store::Store::connect(&postgres.url("sslmode=verify-full"))
        .await
        .err()
        .expect("an unknown CA is refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", postgres.port)),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );

    // Without TLS the server refuses: the connections above did use it.
    let err = roomcast::store::Store::connect(&postgres.url("sslmode=disable"))
        .await
        .err()
        .expect("a plain connection is rejected");
    assert!(
        err.to_string().contains("no encryption") || err.to_string().contains("pg_hba"),
        "{err}"
    );
}

/// Three cluster masters whose clients and cluster bus speak TLS (plain ports stay open
/// for the harness's redis-cli checks); returns the cluster and the TLS ports.
async fn tls_cluster(ca: &TestCa) -> (RedisCluster, Vec<u16>) {
    let ca_cert = ca.ca_cert();
    let mut nodes = Vec::new();
    let mut tls_ports = Vec::new();
    for _ in 0..3 {
        let tls_port = free_port();
        let mut options = ca.redis_options(tls_port);
        options.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--tls-cluster",
                "yes",
            ]
            .map(String::from),
        );
        nodes.push(RedisServer::start_with(&options).await);
        tls_ports.push(tls_port);
    }
    let addresses: Vec<String> = tls_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    // redis-cli waits for the nodes to meet without a deadline of its own.
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("redis-cli")
            .args(["--tls", "--cacert", &ca_cert, "--cluster", "create"])
            .args(&addresses)
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("the TLS cluster forms within 30 s")
    .unwrap();
    assert!(status.success(), "redis-cli --tls --cluster create failed");
    let cluster = RedisCluster { nodes };
    cluster.wait_healthy().await;
    (cluster, tls_ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_tls() {
    let ca = TestCa::new("cluster");
    let (mut cluster, tls_ports) = tls_cluster(&ca).await;
    let seeds: Vec<String> = tls_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let url = format!("rediss-cluster://{}", seeds.join(","));
    let mut process = RoomcastProcess::start(&[
        ("ROOMCAST_REDIS_URL", &url),
        ("ROOMCAST_REDIS__TLS_CA_FILE", &ca.ca_cert()),
    ])
    .await;
    wait_ready(&process.addr).await;
    // Rooms in different hash slots: every master's sharded Pub/Sub runs over TLS.
    let rooms: Vec<String> = (0..6).map(|i| format!("tls-{i}")).collect();
    let mut client = TestClient::connect(&process.url(), Encoding::MsgPack).await;
    for room in &rooms {
        client.subscribe(room, None).await;
    }
    // Each publish is acknowledged (sequenced over TLS) and delivered back (through the
    // sharded Pub/Sub connection of its master, over TLS).
    let mut delivered = 0;
    for room in &rooms {
        let (position, _, before_ack) = client.publish(room, json!(room), None).await;
        assert_eq!(position.seq, 1);
        delivered += before_ack
            .iter()
            .filter(|f| matches!(f, ServerFrame::Message { .. }))
            .count();
    }
    while delivered < rooms.len() {
        let (room, _, seq, data) = client.message().await;
        assert_eq!((seq, data), (1, json!(room)));
        delivered += 1;
    }
    process.signal("KILL");
    process.wait(WAIT).await;
    for node in &mut cluster.nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_over_tls() {
    let ca = TestCa::new("sentinel");
    let ca_cert = ca.ca_cert();
    // TLS for clients and for the sentinels' own connections to the master
    // (`tls-replication`); plain ports stay open for the harness's redis-cli checks.
    let options = |port: u16| {
        let mut options = ca.redis_options(port);
        options.extend(["--tls-replication".to_owned(), "yes".to_owned()]);
        options
    };
    let master_tls = free_port();
    let mut master = RedisServer::start_with(&options(master_tls)).await;
    let mut sentinels = Vec::new();
    let mut sentinel_tls = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        sentinels.push(RedisServer::start_sentinel(master_tls, &options(port)).await);
        sentinel_tls.push(format!("127.0.0.1:{port}"));
    }
    // The sentinels reach the master over TLS.
    for sentinel in &sentinels {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = sentinel
                .cli(&["SENTINEL", "MASTER", SENTINEL_MASTER])
                .await
                .unwrap_or_default();
            let flags = state.lines().skip_while(|l| *l != "flags").nth(1);
            if flags == Some("master") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sentinel cannot reach the master over TLS: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Only TLS ports in the URL, and the sentinels name the master's TLS port.
    let url = format!(
        "rediss-sentinel://{}/{SENTINEL_MASTER}",
        sentinel_tls.join(",")
    );
    let mut process = RoomcastProcess::start(&[
        ("ROOMCAST_REDIS_URL", &url),
        ("ROOMCAST_REDIS__TLS_CA_FILE", &ca_cert),
    ])
    .await;
    wait_ready(&process.addr).await;
    let ready = crate::support::http_get(&process.addr, "/readyz").await;
    assert!(
        ready.contains(&format!("Sentinel master 127.0.0.1:{master_tls}")),
        "{ready}"
    );
    round_trip(&process, "guarded").await;
    process.signal("KILL");
    process.wait(WAIT).await;
    refused_without_the_ca(&url, "cannot find the Redis master through the sentinels").await;
    for sentinel in &mut sentinels {
        sentinel.kill().await;
    }
    master.kill().await;
}
