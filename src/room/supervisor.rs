//! The room supervisor: the parent of every room actor of this instance.
//!
//! It serializes room lifecycles (creation, idle stop) so that a room never has two
//! actors, and a broker unsubscribe of a stopping room always completes before the next
//! actor of that room subscribes again. Supervision policy:
//! - a room actor that panics is restarted with the same subscriber set; the new actor
//!   resumes every subscriber from its own last delivered sequence number (replayed from
//!   the cache or the broker's replay buffer), so nobody misses or repeats a message;
//! - more than `max_restarts` failures within `restart_window`, or a restart that cannot
//!   reach the broker, close the room's connections with 1011 instead: the clients
//!   reconnect and resume, which is the same guarantee through a longer path.

use super::actor::{RoomActor, RoomArgs, RoomMsg, RoomRef, RoomSettings};
use super::members::SharedMembers;
use super::registry::Registry;
use crate::broker::{Broker, BrokerError};
use crate::protocol::{CloseCode, RoomName};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages the room supervisor handles.
pub enum SupervisorMsg {
    /// Returns the room's actor, starting it first if needed.
    GetOrCreate(RoomName, RpcReplyPort<Result<RoomRef, BrokerError>>),
    /// A room's linger expired without subscribers: stop it if that is still true.
    RoomIdle(RoomName),
    /// Ask every room to drop subscribers whose connection is gone.
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
    /// The broker every room uses.
    pub broker: Arc<dyn Broker>,
    /// Room name → actor.
    pub registry: Arc<Registry<RoomMsg>>,
    /// Room tunables.
    pub settings: RoomSettings,
    /// Restart policy.
    pub policy: RestartPolicy,
    /// How often rooms sweep closed subscribers.
    pub sweep_interval: Duration,
}

/// What the supervisor tracks per running room actor.
struct Child {
    room: RoomName,
    members: SharedMembers,
}

/// The supervisor's mutable state.
pub struct SupervisorState {
    children: HashMap<ActorId, Child>,
    failures: HashMap<RoomName, VecDeque<Instant>>,
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
            children: HashMap::new(),
            failures: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::GetOrCreate(room, reply) => {
                let result = match self.registry.get(room.as_str()) {
                    Some(actor) => Ok(actor),
                    None => {
                        self.spawn(&myself, state, room, SharedMembers::default())
                            .await
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RoomIdle(room) => {
                if let Some(actor) = self.registry.get(room.as_str()) {
                    // Awaited here, so no GetOrCreate of this room interleaves with the
                    // stop and its broker unsubscribe.
                    let stopping = actor
                        .call(RoomMsg::StopIfIdle, Some(Duration::from_secs(10)))
                        .await;
                    if let Ok(ractor::rpc::CallResult::Success(true)) = stopping {
                        tracing::debug!(%room, "idle room stopped");
                    }
                }
            }
            SupervisorMsg::SweepAll => {
                for actor in self.registry.all() {
                    let _ = actor.cast(RoomMsg::Sweep);
                }
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
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _)
                if state.children.remove(&cell.get_id()).is_some() =>
            {
                metrics::gauge!("roomcast_rooms_active").decrement(1.0);
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(child) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                metrics::gauge!("roomcast_rooms_active").decrement(1.0);
                metrics::counter!("roomcast_room_failures_total").increment(1);
                self.registry.remove_if_current(&child.room, cell.get_id());
                tracing::error!(room = %child.room, %error, "room actor failed");
                self.restart(&myself, state, child).await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl RoomSupervisor {
    async fn spawn(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        room: RoomName,
        members: SharedMembers,
    ) -> Result<RoomRef, BrokerError> {
        let actor = RoomActor {
            broker: self.broker.clone(),
            registry: self.registry.clone(),
            settings: self.settings.clone(),
            idle: {
                let supervisor = myself.clone();
                Arc::new(move |room| {
                    let _ = supervisor.cast(SupervisorMsg::RoomIdle(room));
                })
            },
        };
        let args = RoomArgs {
            room: room.clone(),
            members: members.clone(),
        };
        match Actor::spawn_linked(None, actor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                metrics::gauge!("roomcast_rooms_active").increment(1.0);
                state
                    .children
                    .insert(actor.get_id(), Child { room, members });
                Ok(actor)
            }
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

    async fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        child: Child,
    ) {
        let now = Instant::now();
        let failures = state.failures.entry(child.room.clone()).or_default();
        failures.retain(|at| now.duration_since(*at) <= self.policy.window);
        failures.push_back(now);
        if failures.len() > self.policy.max_restarts as usize {
            tracing::error!(room = %child.room, "room keeps failing; closing its connections");
            close_members(&child.members);
            return;
        }
        let room = child.room.clone();
        if let Err(err) = self
            .spawn(myself, state, child.room, child.members.clone())
            .await
        {
            tracing::error!(%room, error = %err, "room restart failed; closing its connections");
            close_members(&child.members);
        }
    }
}

/// Closes the connections of a room that cannot be served; they reconnect and resume.
fn close_members(members: &SharedMembers) {
    let mut members = members.lock();
    for subscriber in members.subscribers.drain(..) {
        subscriber.outbound.close(CloseCode::InternalError);
    }
}
