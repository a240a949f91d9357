//! What Redis alone can sequence: the servers' publish function (the same command the
//! broker sends for publishes that waited together, built by
//! `roomcast::broker::publish_batch_command`, as many per call as the broker puts in one)
//! driven straight at the spawned Redis, pipelined, with no roomcast in between. Its rate
//! and the Redis CPU per publish, beside the publishes per second a scenario reached
//! through the servers, show how much of Redis the servers can use.
//!
//! The calls use keys and channels of their own (prefix `limit`), so no instance is
//! subscribed to them and the measurement adds nothing to the scenario's deliveries.

use crate::procstat;
use crate::report::RedisLimit;
use roomcast::broker::{
    HistorySettings, KeyRetention, PUBLISH_BATCH_MAX, PublishRequest, publish_batch_command,
};
use roomcast::protocol::RoomName;
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Connections to Redis, each with its own driving task.
const CONNECTIONS: usize = 2;
/// Publishes per call: as many as the broker puts in one.
const BATCH: usize = PUBLISH_BATCH_MAX;
/// Calls each connection keeps outstanding.
const DEPTH: usize = 2;

/// How many calls of the publish functions (`FCALL`) the Redis at `url` has run, from
/// `INFO commandstats` (none if it cannot be read). The servers call functions only to
/// publish (their other scripts are `EVALSHA`s).
pub async fn publish_calls(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .ok()?;
    Some(fcalls_in(&stats))
}

/// The `FCALL` count in the text of `INFO commandstats` (0 when none ran).
fn fcalls_in(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_fcall:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Drives the publish function at `url` (Redis process `pid`) for `secs` over `rooms`
/// rooms with `message_bytes` of padding per message, like a closed-loop scenario's
/// publishes (each with its own idempotency key).
pub async fn measure(
    url: &str,
    pid: u32,
    rooms: usize,
    message_bytes: usize,
    secs: f64,
) -> Result<RedisLimit, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let defaults = roomcast::config::Config::defaults();
    let history = HistorySettings::from_config(&defaults.history);
    let compress_above = defaults.redis.compress_above_bytes;
    let names: Vec<RoomName> = (0..rooms.max(1))
        .map(|room| RoomName::new_unchecked(format!("limit-{room}")))
        .collect();
    let padding = "x".repeat(message_bytes);
    let mut setup = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    roomcast::broker::publish_library_load()
        .query_async::<redis::Value>(&mut setup)
        .await
        .map_err(|e| e.to_string())?;
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let cpu_before = procstat::cpu_times(Some(pid)).unwrap_or_default();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut drivers = JoinSet::new();
    for driver in 0..CONNECTIONS * DEPTH {
        let mut connection = connections[driver % CONNECTIONS].clone();
        let (names, history, padding) = (names.clone(), history.clone(), padding.clone());
        drivers.spawn(async move {
            let mut calls = 0u64;
            let mut room = driver;
            while Instant::now() < end {
                let mut publications = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    room = (room + 1) % names.len();
                    let request = PublishRequest {
                        data: json!({ "t": 0, "p": padding }),
                        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
                        trace: None,
                        key_retention: KeyRetention::Window,
                    };
                    publications.push((names[room].clone(), request));
                }
                let command =
                    publish_batch_command("limit", &history, compress_above, publications);
                let replies: Vec<redis::Value> = command
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| e.to_string())?;
                if replies.len() != BATCH {
                    return Err(format!("{} replies to {BATCH} publishes", replies.len()));
                }
                // A publication that failed is answered {2, message} inside the reply.
                for reply in &replies {
                    match reply {
                        redis::Value::Array(items)
                            if matches!(items.first(), Some(redis::Value::Int(0 | 1))) => {}
                        other => return Err(format!("a publish failed: {other:?}")),
                    }
                }
                calls += BATCH as u64;
            }
            Ok::<u64, String>(calls)
        });
    }
    let mut calls = 0;
    while let Some(done) = drivers.join_next().await {
        calls += done.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = procstat::cpu_times(Some(pid))
        .unwrap_or_default()
        .since(&cpu_before);
    Ok(RedisLimit {
        secs: elapsed,
        calls,
        per_second: calls as f64 / elapsed,
        redis_cpu_us_per_call: cpu.total().as_secs_f64() * 1e6 / calls.max(1) as f64,
        ratio: None,
    })
}

#[cfg(test)]
mod tests {
    use super::fcalls_in;

    #[test]
    fn reads_the_fcall_count_of_commandstats() {
        let stats = "# Commandstats\r\ncmdstat_xadd:calls=90,usec=5,usec_per_call=0.1,rejected_calls=0,failed_calls=0\r\ncmdstat_fcall:calls=12,usec=300,usec_per_call=25.00,rejected_calls=0,failed_calls=1\r\n";
        assert_eq!(fcalls_in(stats), 12);
        assert_eq!(fcalls_in("# Commandstats\r\n"), 0);
    }
}
