//! Starting and stopping room actors, concurrently across rooms and one at a time per
//! room.
//!
//! A room actor's start reads the broker (subscribe, then the top and recent history:
//! two round trips), so starts run in the task that needs the room, never inside the
//! supervisor's handler: a reconnect storm that touches a thousand rooms starts them
//! side by side instead of queueing them behind one another.
//!
//! Per room, a gate orders the lifecycle: a start and an idle stop (with its broker
//! unsubscribe) of one room never overlap, and two subscribes of a room that has no
//! actor start one actor, not two (the second finds the first registered once the gate
//! opens). A restart after a failure goes through the same gate, and the failed actor's
//! subscribers wait in the gate until whichever start comes next takes them: the
//! supervisor's restart task or a subscribe that got there first. Gates exist only while
//! someone uses them.

use super::actor::{RoomActor, RoomArgs, RoomMsg, RoomRef, RoomSettings};
use super::inbox::Inbox;
use super::members::SharedMembers;
use super::registry::Registry;
use crate::broker::{Broker, BrokerError};
use crate::protocol::{CloseCode, RoomName};
use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long an idle stop waits for its actor (which may be reading the broker).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts room actors on demand and stops idle ones.
pub struct Starter {
    /// The broker every room uses.
    pub broker: Arc<dyn Broker>,
    /// Room name → actor.
    pub registry: Arc<Registry<RoomMsg>>,
    /// Room tunables.
    pub settings: RoomSettings,
    gates: Gates,
}

impl Starter {
    /// A starter of rooms over `broker`, registering them in `registry`.
    pub fn new(
        broker: Arc<dyn Broker>,
        registry: Arc<Registry<RoomMsg>>,
        settings: RoomSettings,
    ) -> Arc<Starter> {
        Arc::new(Starter {
            broker,
            registry,
            settings,
            gates: Gates::default(),
        })
    }

    /// The room's actor, started (linked to `supervisor`) if none runs. The start runs in
    /// a task of its own: a caller that gives up waiting (`timeout`) leaves it to finish,
    /// so a room is never left half started.
    pub async fn get_or_start(
        self: &Arc<Self>,
        room: &RoomName,
        supervisor: ActorCell,
        timeout: Duration,
    ) -> Result<RoomRef, BrokerError> {
        if let Some(actor) = self.registry.get(room.as_str()) {
            return Ok(actor);
        }
        let starting = tokio::spawn(self.clone().start(room.clone(), supervisor));
        match tokio::time::timeout(timeout, starting).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(BrokerError::Internal(format!("room start failed: {err}"))),
            Err(_) => Err(BrokerError::Timeout("room start".into())),
        }
    }

    /// Replaces the failed actor `failed` of `room` with a new one that takes over its
    /// subscribers, in the background. If that start fails, they are closed with 1011
    /// (they reconnect and resume).
    pub fn restart(
        self: &Arc<Self>,
        room: RoomName,
        failed: ActorId,
        members: SharedMembers,
        supervisor: ActorCell,
    ) {
        // In this order: a start that no longer finds the failed actor must find its
        // subscribers.
        self.gates.bequeath(&room, members);
        self.registry.remove_if_current(&room, failed);
        tokio::spawn(self.clone().start(room, supervisor));
    }

    /// Starts the room unless an actor runs, through its gate.
    async fn start(
        self: Arc<Self>,
        room: RoomName,
        supervisor: ActorCell,
    ) -> Result<RoomRef, BrokerError> {
        let gate = self.gates.enter(&room);
        let result = async {
            let _turn = gate.turn.lock().await;
            if let Some(actor) = self.registry.get(room.as_str()) {
                return Ok(actor);
            }
            let inherited = gate.take_inherited();
            let members = inherited.clone().unwrap_or_default();
            let result = self.spawn(&room, members, supervisor).await;
            if let (Err(err), Some(members)) = (&result, inherited) {
                tracing::error!(%room, error = %err, "room restart failed; closing its connections");
                close_members(&members);
            }
            result
        }
        .await;
        self.gates.leave(&room, gate);
        result
    }

    /// Stops the room if it is still without subscribers, through its gate (so that the
    /// broker unsubscribe completes before the room's next actor subscribes again).
    fn stop_if_idle(self: &Arc<Self>, room: RoomName) {
        let this = self.clone();
        tokio::spawn(async move {
            let gate = this.gates.enter(&room);
            {
                let _turn = gate.turn.lock().await;
                if let Some(actor) = this.registry.get(room.as_str()) {
                    let stopping = actor.call(RoomMsg::StopIfIdle, Some(STOP_TIMEOUT)).await;
                    if let Ok(ractor::rpc::CallResult::Success(true)) = stopping {
                        tracing::debug!(%room, "idle room stopped");
                    }
                }
            }
            this.gates.leave(&room, gate);
        });
    }

    async fn spawn(
        self: &Arc<Self>,
        room: &RoomName,
        members: SharedMembers,
        supervisor: ActorCell,
    ) -> Result<RoomRef, BrokerError> {
        let actor = RoomActor {
            broker: self.broker.clone(),
            registry: self.registry.clone(),
            settings: self.settings.clone(),
            idle: {
                let starter = Arc::downgrade(self);
                Arc::new(move |room| {
                    if let Some(starter) = starter.upgrade() {
                        starter.stop_if_idle(room);
                    }
                })
            },
            inbox: Arc::new(Inbox::new(self.settings.queue_size)),
        };
        let args = RoomArgs {
            room: room.clone(),
            members,
        };
        match Actor::spawn_linked(None, actor, args, supervisor).await {
            Ok((actor, _)) => Ok(actor),
            // The client sees the broker's own error (Redis unreachable, timed out), never
            // ractor's wording of a failed start ("Actor panicked during startup").
            Err(ractor::SpawnErr::StartupFailed(err)) => match err.downcast::<BrokerError>() {
                Ok(err) => Err(*err),
                Err(err) => {
                    tracing::error!(%room, error = %err, "room actor failed to start");
                    Err(BrokerError::Unavailable(format!(
                        "room {room} could not be started; retry"
                    )))
                }
            },
            Err(err) => {
                tracing::error!(%room, error = %err, "room actor failed to start");
                Err(BrokerError::Unavailable(format!(
                    "room {room} could not be started; retry"
                )))
            }
        }
    }
}

/// Closes the connections of a room that cannot be served; they reconnect and resume.
pub fn close_members(members: &SharedMembers) {
    let mut members = members.lock();
    for subscriber in members.subscribers.drain(..) {
        subscriber.outbound.close(CloseCode::InternalError);
    }
}

/// One room's gate: whoever holds `turn` may start or stop the room.
#[derive(Default)]
struct Gate {
    turn: tokio::sync::Mutex<()>,
    /// Subscribers of a failed actor, for the room's next actor.
    inherited: Mutex<Option<SharedMembers>>,
}

impl Gate {
    fn take_inherited(&self) -> Option<SharedMembers> {
        self.inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn has_inherited(&self) -> bool {
        self.inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// The gates of rooms being started, stopped or restarted.
#[derive(Default)]
struct Gates {
    rooms: DashMap<RoomName, Arc<Gate>>,
}

impl Gates {
    /// The room's gate, created if nobody uses it. Give it back with [`Gates::leave`].
    fn enter(&self, room: &RoomName) -> Arc<Gate> {
        self.rooms.entry(room.clone()).or_default().clone()
    }

    /// Gives a gate back; the last user removes it unless it holds subscribers.
    fn leave(&self, room: &RoomName, gate: Arc<Gate>) {
        drop(gate);
        self.rooms.remove_if(room, |_, gate| {
            Arc::strong_count(gate) == 1 && !gate.has_inherited()
        });
    }

    /// Leaves a failed actor's subscribers for the room's next start.
    fn bequeath(&self, room: &RoomName, members: SharedMembers) {
        let gate = self.enter(room);
        *gate
            .inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_exists_only_while_used() {
        let gates = Gates::default();
        let first = gates.enter(&RoomName::new_unchecked("a"));
        let second = gates.enter(&RoomName::new_unchecked("a"));
        assert!(Arc::ptr_eq(&first, &second), "one gate per room");
        let turn = first.turn.lock().await;
        assert!(second.turn.try_lock().is_err(), "one holder at a time");
        drop(turn);
        gates.leave(&RoomName::new_unchecked("a"), first);
        assert_eq!(gates.rooms.len(), 1, "still used");
        gates.leave(&RoomName::new_unchecked("a"), second);
        assert_eq!(gates.rooms.len(), 0, "removed by its last user");
    }

    #[tokio::test]
    async fn a_gate_keeps_inherited_subscribers_until_taken() {
        let gates = Gates::default();
        gates.bequeath(&RoomName::new_unchecked("a"), SharedMembers::default());
        assert_eq!(gates.rooms.len(), 1, "kept for the next start");
        let gate = gates.enter(&RoomName::new_unchecked("a"));
        assert!(gate.take_inherited().is_some());
        assert!(gate.take_inherited().is_none(), "taken once");
        gates.leave(&RoomName::new_unchecked("a"), gate);
        assert_eq!(gates.rooms.len(), 0);
    }
}
