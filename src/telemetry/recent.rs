//! The instance's latest slow-consumer disconnects and resume outcomes, kept in small
//! rings for the cluster view. Process-wide, like the metrics registry: the connection
//! and room code record into them without carrying a handle.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// Most events of each kind kept (per instance, and in the merged cluster view).
pub const RING: usize = 20;

/// A client closed with 4000 because it read too slowly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowConsumer {
    /// When (RFC 3339).
    pub at: String,
    /// Which instance.
    #[serde(default)]
    pub instance: String,
    /// Whose connection (`user:…`, `service:…` or `anonymous`).
    pub user: String,
}

/// A subscribe that resumed from a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// When (RFC 3339).
    pub at: String,
    /// Which instance.
    #[serde(default)]
    pub instance: String,
    /// The room.
    pub room: String,
    /// Whether the stream continued exactly from the position.
    pub recovered: bool,
    /// Messages replayed to the client.
    pub replayed: u64,
}

#[derive(Default)]
struct Rings {
    slow_consumers: VecDeque<SlowConsumer>,
    recoveries: VecDeque<Recovery>,
}

static RINGS: Mutex<Rings> = Mutex::new(Rings {
    slow_consumers: VecDeque::new(),
    recoveries: VecDeque::new(),
});

fn push<T>(ring: &mut VecDeque<T>, item: T) {
    if ring.len() == RING {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Records a slow-consumer disconnect of `user`'s connection.
pub fn slow_consumer(user: Option<&str>) {
    let event = SlowConsumer {
        at: now(),
        instance: String::new(),
        user: user.unwrap_or("anonymous").to_owned(),
    };
    push(
        &mut RINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slow_consumers,
        event,
    );
}

/// Records the outcome of a resume in `room`.
pub fn recovery(room: &str, recovered: bool, replayed: u64) {
    let event = Recovery {
        at: now(),
        instance: String::new(),
        room: room.to_owned(),
        recovered,
        replayed,
    };
    push(
        &mut RINGS.lock().unwrap_or_else(|e| e.into_inner()).recoveries,
        event,
    );
}

/// Both rings, newest first, labelled with `instance`.
pub fn snapshot(instance: &str) -> (Vec<SlowConsumer>, Vec<Recovery>) {
    let rings = RINGS.lock().unwrap_or_else(|e| e.into_inner());
    let slow = rings
        .slow_consumers
        .iter()
        .rev()
        .map(|e| SlowConsumer {
            instance: instance.to_owned(),
            ..e.clone()
        })
        .collect();
    let recoveries = rings
        .recoveries
        .iter()
        .rev()
        .map(|e| Recovery {
            instance: instance.to_owned(),
            ..e.clone()
        })
        .collect();
    (slow, recoveries)
}
