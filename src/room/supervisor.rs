//! The room supervisor: the parent of every room actor of this instance.
//!
//! It decides and records; it does no I/O in its handlers, so nothing queues behind it.
//! Starts and idle stops run in the tasks that need them, one at a time per room (see
//! `starter.rs`). Supervision policy:
//! - a room actor that panics is restarted with the same subscriber set; the new actor
//!   resumes every subscriber from its own last delivered sequence number (replayed from
//!   the cache or the broker's replay buffer), so nobody misses or repeats a message;
//! - more than `max_restarts` failures within `restart_window`, or a restart that cannot
//!   reach the broker, close the room's connections with 1011 instead: the clients
//!   reconnect and resume, which is the same guarantee through a longer path.
//!
//! The failure history it keeps for that decision is bounded: a room's entry goes once
//! its last failure is older than the window, and at most [`MAX_FAILING_ROOMS`] rooms
//! are tracked (the one whose last failure is oldest makes room).

use super::actor::RoomMsg;
use super::registry::Registry;
use super::starter::{Starter, close_members};
use crate::protocol::RoomName;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most rooms whose recent failures are remembered.
pub const MAX_FAILING_ROOMS: usize = 10_000;

/// Messages the room supervisor handles.
pub enum SupervisorMsg {
    /// Ask every room to drop subscribers whose connection is gone, and forget failures
    /// older than the restart window.
    SweepAll,
}

/// Restart policy of room actors.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Failures tolerated within the window.
    pub max_restarts: u32,
    /// The window.
    pub window: Duration,
}

/// The supervisor's read-only parts.
pub struct RoomSupervisor {
    /// Starts replacement actors.
    pub starter: Arc<Starter>,
    /// Room name → actor.
    pub registry: Arc<Registry<RoomMsg>>,
    /// Restart policy.
    pub policy: RestartPolicy,
    /// How often rooms sweep closed subscribers.
    pub sweep_interval: Duration,
}

/// The supervisor's mutable state.
pub struct SupervisorState {
    failures: FailureLog,
}

impl Actor for RoomSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        _: (),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        myself.send_interval(self.sweep_interval, || SupervisorMsg::SweepAll);
        Ok(SupervisorState {
            failures: FailureLog::new(self.policy.window, MAX_FAILING_ROOMS),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::SweepAll => {
                for (actor, _) in self.registry.all() {
                    let _ = actor.cast(RoomMsg::Sweep);
                }
                state.failures.prune(Instant::now());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A room that stopped (idle) has already left the registry; only failures matter.
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some((room, members)) = self.registry.find(cell.get_id()) else {
            return Ok(());
        };
        metrics::counter!("roomcast_room_failures_total").increment(1);
        tracing::error!(%room, %error, "room actor failed");
        let failures = state.failures.record(&room, Instant::now());
        if failures > self.policy.max_restarts as usize {
            tracing::error!(%room, "room keeps failing; closing its connections");
            self.registry.remove_if_current(&room, cell.get_id());
            close_members(&members);
            return Ok(());
        }
        self.starter
            .restart(room, cell.get_id(), members, myself.get_cell());
        Ok(())
    }
}

/// Recent failures per room, bounded in time (the restart window) and in rooms.
struct FailureLog {
    window: Duration,
    max_rooms: usize,
    rooms: HashMap<RoomName, VecDeque<Instant>>,
}

impl FailureLog {
    fn new(window: Duration, max_rooms: usize) -> Self {
        FailureLog {
            window,
            max_rooms: max_rooms.max(1),
            rooms: HashMap::new(),
        }
    }

    /// Records a failure of `room` at `now`; returns its failures within the window.
    fn record(&mut self, room: &RoomName, now: Instant) -> usize {
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.max_rooms {
            self.prune(now);
            if self.rooms.len() >= self.max_rooms {
                self.evict_oldest();
            }
        }
        let window = self.window;
        let failures = self.rooms.entry(room.clone()).or_default();
        failures.retain(|at| now.saturating_duration_since(*at) <= window);
        failures.push_back(now);
        failures.len()
    }

    /// Forgets the rooms whose last failure is older than the window.
    fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.rooms.retain(|_, failures| {
            failures
                .back()
                .is_some_and(|last| now.saturating_duration_since(*last) <= window)
        });
    }

    /// Forgets the room whose last failure is the oldest.
    fn evict_oldest(&mut self) {
        let oldest = self
            .rooms
            .iter()
            .min_by_key(|(_, failures)| failures.back().copied())
            .map(|(room, _)| room.clone());
        if let Some(room) = oldest {
            self.rooms.remove(&room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_within_the_window_only() {
        let start = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(10), 100);
        assert_eq!(log.record(&RoomName::new_unchecked("a"), start), 1);
        assert_eq!(
            log.record(
                &RoomName::new_unchecked("a"),
                start + Duration::from_secs(5)
            ),
            2
        );
        assert_eq!(
            log.record(
                &RoomName::new_unchecked("a"),
                start + Duration::from_secs(12)
            ),
            2,
            "the first fell out of the window"
        );
        assert_eq!(
            log.record(&RoomName::new_unchecked("b"), start),
            1,
            "per room"
        );
    }

    #[test]
    fn prune_forgets_rooms_whose_last_failure_is_old() {
        let start = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(10), 100);
        log.record(&RoomName::new_unchecked("old"), start);
        log.record(
            &RoomName::new_unchecked("recent"),
            start + Duration::from_secs(8),
        );
        log.prune(start + Duration::from_secs(15));
        assert_eq!(log.rooms.len(), 1);
        assert_eq!(
            log.record(
                &RoomName::new_unchecked("recent"),
                start + Duration::from_secs(15)
            ),
            2,
            "the recent room kept its history"
        );
        log.prune(start + Duration::from_secs(60));
        assert_eq!(log.rooms.len(), 0, "everything expires");
    }

    #[test]
    fn at_most_max_rooms_are_tracked() {
        let start = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(3600), 3);
        for (n, name) in ["a", "b", "c"].into_iter().enumerate() {
            log.record(
                &RoomName::new_unchecked(name),
                start + Duration::from_secs(n as u64),
            );
        }
        log.record(
            &RoomName::new_unchecked("d"),
            start + Duration::from_secs(10),
        );
        assert_eq!(log.rooms.len(), 3, "bounded");
        assert_eq!(
            log.record(
                &RoomName::new_unchecked("a"),
                start + Duration::from_secs(11)
            ),
            1,
            "the room with the oldest failure was forgotten"
        );
        assert_eq!(log.rooms.len(), 3);
        assert_eq!(
            log.record(
                &RoomName::new_unchecked("d"),
                start + Duration::from_secs(12)
            ),
            2,
            "a newer one was kept"
        );
    }
}
