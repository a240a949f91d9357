//! What the Redis broker knows about its connections, for `/readyz` and metrics.

use crate::broker::BrokerStatus;
use std::sync::Mutex;

/// Last known state of the Pub/Sub and command connections.
#[derive(Debug)]
pub struct Health {
    pubsub: Mutex<Result<(), String>>,
    commands: Mutex<Result<(), String>>,
    /// The master in use, when found through Sentinel.
    master: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            pubsub: Mutex::new(Err("connecting".into())),
            commands: Mutex::new(Err("connecting".into())),
            master: Mutex::new(None),
        }
    }
}

impl Health {
    /// Records the Pub/Sub connection's state.
    pub fn set_pubsub(&self, state: Result<(), String>) {
        metrics::gauge!("roomcast_broker_pubsub_up").set(if state.is_ok() { 1.0 } else { 0.0 });
        *self.pubsub.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Records the outcome of the latest command (probe publish, publish, read).
    pub fn set_commands(&self, state: Result<(), String>) {
        metrics::gauge!("roomcast_broker_commands_up").set(if state.is_ok() { 1.0 } else { 0.0 });
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
