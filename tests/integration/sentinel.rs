//! Redis Sentinel moves the master under a steady publisher and subscribers on two
//! instances (`redis-sentinel://` URL): a graceful `SENTINEL FAILOVER`, `kill -9` of the
//! master, the master stopped (SIGSTOP) long enough to be replaced, and a replica that
//! missed acknowledged writes promoted.
//!
//! Each scenario checks, for every subscriber and room, what the Redis Cluster failover
//! tests check (`failover.rs`): nothing delivered twice or out of order, every break of
//! continuity announced, every message of the final epoch delivered from its seq 1, the
//! content at every position the one acknowledged there (no reused position); and that
//! every room changed epoch, every subscriber was told, a resume from the old epoch gets
//! `recovered: false`, every instance follows the new master (`/readyz` names it) within
//! the stated bound, and publishes succeed again on every instance.

use crate::failover::{Acked, SERIAL, Traffic, wait_published, wait_until};
use crate::support::http_get;
use crate::support::process::RoomcastProcess;
use crate::support::redis::{SENTINEL_MASTER, SentinelGroup};
use roomcast::client::{Client, ClientConfig};
use roomcast::stream::Position;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Rooms published to.
const ROOMS: usize = 3;
/// Instances of roomcast.
const INSTANCES: usize = 2;
/// How long every instance may take to serve from the new master once the sentinels
/// name it (docs/cluster.md states the bound; the measured figure is printed).
const RECOVERY: Duration = Duration::from_secs(10);

/// The fault under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SENTINEL FAILOVER`: the sentinels promote the replica and demote the master.
    Graceful,
    /// `kill -9` of the master.
    KillMaster,
    /// The master is stopped (SIGSTOP) until the sentinels replaced it, then continued
    /// (it comes back believing it is master, and the sentinels demote it).
    StopMaster,
    /// The replica is cut off, the master acknowledges more, then the master is killed:
    /// the promoted replica lacks acknowledged writes.
    LaggingReplica,
}

async fn run(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start().await;
    let (old_master, replica) = (group.servers[0].port, group.servers[1].port);
    assert_eq!(group.master_port().await, Some(old_master));
    let traffic = Traffic::start(&group.url(), INSTANCES, ROOMS, 60).await;
    let (instances, rooms, published) = (&traffic.instances, &traffic.rooms, &traffic.published);
    for instance in instances {
        assert!(
            serves_from(instance, old_master).await,
            "/readyz names the master"
        );
    }

    // The fault.
    let mut fault_at = tokio::time::Instant::now();
    match fault {
        Fault::Graceful => {
            let answer = group.sentinels[0]
                .cli(&["SENTINEL", "FAILOVER", SENTINEL_MASTER])
                .await;
            assert_eq!(answer.as_deref(), Some("OK"));
        }
        Fault::KillMaster => group.servers[0].kill().await,
        Fault::StopMaster => group.servers[0].signal("STOP"),
        Fault::LaggingReplica => {
            // Deterministic lag: the master disables the user its replica replicates
            // with and closes that connection. The replica keeps its data and its role
            // and keeps answering the sentinels (so it stays a candidate), but every
            // reconnection is refused, so nothing written from now on reaches it.
            group.cut_replication(0).await;
            let before = published.load(Ordering::Relaxed);
            wait_published(published, before + 20).await;
            let seq_on = |server: usize| {
                let server = &group.servers[server];
                async move {
                    server
                        .cli(&["HGET", "rc:{room-0}:meta", "seq"])
                        .await
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                }
            };
            let (on_master, on_replica) = (seq_on(0).await, seq_on(1).await);
            assert!(
                on_replica < on_master,
                "the replica must lack acknowledged writes (replica at seq {on_replica}, master at {on_master})"
            );
            fault_at = tokio::time::Instant::now();
            group.servers[0].kill().await;
        }
    }

    // The sentinels name the replica; every instance follows it.
    wait_until(
        Duration::from_secs(30),
        "the sentinels promote the replica",
        || async { group.master_port().await == Some(replica) },
    )
    .await;
    let switched_at = tokio::time::Instant::now();
    let promoted_in = switched_at - fault_at;
    if fault == Fault::StopMaster {
        // Back, believing it is master: the sentinels turn it into a replica.
        group.servers[0].signal("CONT");
    }
    for instance in instances {
        wait_until(RECOVERY, "instance ready on the new master", || {
            serves_from(instance, replica)
        })
        .await;
    }
    let recovered_in = switched_at.elapsed();

    // Publishes succeed again on every instance.
    for instance in instances {
        let (client, _events) = Client::start(ClientConfig::new(instance.url()));
        let deadline = tokio::time::Instant::now() + RECOVERY;
        loop {
            match client
                .publish(&rooms[0], json!({ "n": u64::MAX }), None)
                .await
            {
                Ok(_) => break,
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{fault:?}: publishing on {} fails after the switch: {err}",
                        instance.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        client.stop().await;
    }

    // Live again: more messages, then stop and compare. A new master is another Redis
    // process: every room changed epoch, every subscriber was told, and a resume from
    // the old epoch is not "recovered".
    let rooms = rooms.clone();
    let (instances, acks) = traffic.finish(&format!("{fault:?}"), &rooms).await;
    for room in acks.keys() {
        let first: &Acked = &acks[room][0];
        let (client, _events) = Client::start(ClientConfig::new(instances[1].url()));
        let resumed = client
            .subscribe_from(room, Some(Position::new(first.epoch.clone(), first.seq)))
            .await
            .expect("resubscribes");
        assert!(
            !resumed.recovered && resumed.position.epoch != first.epoch,
            "{fault:?}: a resume from the old epoch of {room} claims continuity"
        );
        client.stop().await;
    }
    drop(instances);
    println!(
        "{fault:?}: the sentinels named the new master {promoted_in:?} after the fault; \
         every instance served from it {recovered_in:?} later"
    );
}

/// Whether `instance` is ready and serving from the master on `port`.
async fn serves_from(instance: &RoomcastProcess, port: u16) -> bool {
    let response = http_get(&instance.addr, "/readyz").await;
    response.starts_with("HTTP/1.1 200")
        && response.contains(&format!("Sentinel master 127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_sentinel_failover_keeps_every_room_live() {
    run(Fault::Graceful).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_through_the_sentinels() {
    run(Fault::KillMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_is_replaced_and_demoted_without_reusing_a_position() {
    run(Fault::StopMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_that_missed_acked_writes_changes_every_epoch() {
    run(Fault::LaggingReplica).await;
}
