//! What the Redis broker knows about its connections, for `/readyz` and metrics.

use crate::broker::BrokerStatus;
use std::sync::Mutex;

/// Last known state of the Pub/Sub and command connections.
#[derive(Debug)]
pub struct Health {
    pubsub: Mutex<Result<(), String>>,
    commands: Mutex<Result<(), String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            pubsub: Mutex::new(Err("connecting".into())),
            commands: Mutex::new(Err("connecting".into())),
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
                detail: "redis connected".into(),
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
