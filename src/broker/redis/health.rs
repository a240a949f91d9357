//! What the Redis broker knows about its connections, for `/readyz` and metrics.

use crate::broker::{BrokerStatus, PubSubHealth};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Last known state of the Pub/Sub and command connections.
#[derive(Debug)]
pub struct Health {
    pubsub: Mutex<Result<(), String>>,
    commands: Mutex<Result<(), String>>,
    /// The master in use, when found through Sentinel.
    master: Mutex<Option<String>>,
    /// When the latest probe came back over Pub/Sub (any node's).
    last_probe: Mutex<Option<Instant>>,
    /// The latest publication's Pub/Sub lag, in microseconds.
    lag_micros: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            pubsub: Mutex::new(Err("connecting".into())),
            commands: Mutex::new(Err("connecting".into())),
            master: Mutex::new(None),
            last_probe: Mutex::new(None),
            lag_micros: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Records that a probe came back.
    pub fn probe_received(&self) {
        *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Records the lag of a publication received over Pub/Sub.
    pub fn lag(&self, seconds: f64) {
        self.lag_micros
            .store((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Probe age and latest lag.
    pub fn pubsub(&self) -> PubSubHealth {
        let last_probe = *self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
        PubSubHealth {
            probe_age: last_probe.map(|at| at.elapsed()),
            lag_seconds: self.lag_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Records the Pub/Sub connection's state.
    pub fn set_pubsub(&self, state: Result<(), String>) {
        metrics::gauge!("roomcast_broker_pubsub_up").set(if state.is_ok() { 1.0 } else { 0.0 });
        *self.pubsub.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Records the outcome of the latest command (probe publish, publish, read).
    pub fn set_commands(&self, state: Result<(), String>) {
        crate::telemetry::metrics::per_publication()
            .commands_up
            .set(if state.is_ok() { 1.0 } else { 0.0 });
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Records the master the sentinels named (shown by `/readyz`).
    pub fn set_master(&self, address: Option<String>) {
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = address;
    }

    /// Ready when both connections work; otherwise says which does not.
    pub fn status(&self) -> BrokerStatus {
        let pubsub = self
            .pubsub
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (pubsub, commands) {
            (Ok(()), Ok(())) => BrokerStatus {
                ready: true,
                detail: match &*self.master.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(master) => format!("redis connected (Sentinel master {master})"),
                    None => "redis connected".into(),
                },
            },
            (pubsub, commands) => BrokerStatus {
                ready: false,
                detail: [
                    pubsub.err().map(|e| format!("pubsub: {e}")),
                    commands.err().map(|e| format!("commands: {e}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
            },
        }
    }
}
