//! Commands on the command connection, each admitted by the node's circuit breaker and
//! recorded in the broker's health and metrics.

use super::breaker::Breaker;
use super::health::Health;
use super::link::{self, Link, broker_error};
use crate::broker::BrokerError;
use redis::Value;
use std::sync::Arc;
use std::time::Duration;

/// What every command goes through. Cheap to clone (handles).
#[derive(Clone)]
pub(super) struct Commands {
    pub link: Link,
    pub health: Arc<Health>,
    pub breaker: Arc<Breaker>,
    /// Wakes the Sentinel watcher when a command fails (Sentinel mode only).
    pub master_lost: Option<Arc<tokio::sync::Notify>>,
    /// Longest a command may take (`redis.command_timeout_ms`), a reconnect of the
    /// command connection included: the connection manager of one Redis starts its
    /// response timeout only once it is connected again. `None` with a Redis Cluster,
    /// whose client bounds each try and retries a command moved by a failover.
    pub timeout: Option<Duration>,
}

impl Commands {
    /// Runs `command` on the node that holds `key`, recording the connection's health
    /// from the outcome; fails at once while that node's circuit is open (see
    /// `breaker.rs`). `op` names the operation in the metrics, where a failure or a
    /// refusal counts as `operations` (the publications of a call of several).
    pub async fn call(
        &self,
        key: &str,
        op: &'static str,
        operations: u64,
        command: impl AsyncFnOnce(&mut link::Connection) -> redis::RedisResult<Value>,
    ) -> Result<Value, BrokerError> {
        // Before the first connection there is nothing to wait for and nothing to
        // learn about the node: fail at once without touching its circuit.
        let mut connection = match self.link.get() {
            Ok(connection) => connection,
            Err(err) => {
                metrics::counter!("roomcast_broker_errors_total", "op" => op).increment(operations);
                return Err(err);
            }
        };
        let pass = self.breaker.admit(key).inspect_err(|_| {
            metrics::counter!("roomcast_broker_fast_failures_total").increment(operations);
        })?;
        let result = match self.timeout {
            None => command(&mut connection).await.map_err(broker_error),
            Some(limit) => match tokio::time::timeout(limit, command(&mut connection)).await {
                Ok(result) => result.map_err(broker_error),
                Err(_) => Err(BrokerError::Timeout(format!("no answer within {limit:?}"))),
            },
        };
        self.breaker.record(pass, result.as_ref().map(|_| ()));
        match &result {
            Ok(_) => self.health.set_commands(Ok(())),
            Err(err) => {
                metrics::counter!("roomcast_broker_errors_total", "op" => op).increment(operations);
                if !matches!(err, BrokerError::Internal(_)) {
                    self.health.set_commands(Err(err.to_string()));
                    // The master may have moved: ask the sentinels.
                    if let Some(master_lost) = &self.master_lost {
                        master_lost.notify_one();
                    }
                }
            }
        }
        result
    }
}
