//! Rooms on this instance: one actor per room with local subscribers, a supervisor over
//! them, the starter that creates them concurrently, and the dispatcher that routes
//! broker events to them within each room's mailbox bound (see `inbox.rs`).

mod actor;
mod follow;
mod inbox;
mod members;
mod outgoing;
mod registry;
mod starter;
mod supervisor;

pub use actor::{RoomMsg, RoomRef, RoomSettings, SubscribeRequest};
pub use members::{Forms, Subscriber};
pub use supervisor::RestartPolicy;

use crate::broker::{Broker, BrokerError, BrokerEvent, EventReceiver, ResyncScope};
use crate::protocol::RoomName;
use crate::stream::Position;
use inbox::Inbox;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use registry::Registry;
use starter::Starter;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{RoomSupervisor, SupervisorMsg};

/// How long a subscribe may wait for its room actor (which may be reading the broker).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts at reaching a live room actor (one may be stopping or restarting).
const SUBSCRIBE_ATTEMPTS: u32 = 20;

/// Handle to this instance's rooms, shared by connections and the dispatcher.
#[derive(Clone)]
pub struct Rooms {
    registry: Arc<Registry<RoomMsg>>,
    starter: Arc<Starter>,
    supervisor: ActorRef<SupervisorMsg>,
}

/// One room's load on this instance.
#[derive(Debug, Clone)]
pub struct RoomLoad {
    /// The room.
    pub room: RoomName,
    /// Its local subscribers.
    pub subscribers: usize,
    /// Publications it delivered since its actor started (a counter: rates come from
    /// differences).
    pub publications: u64,
}

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The broker could not serve the room.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The room actor did not answer in time.
    #[error("the room did not answer in time")]
    Timeout,
}

impl Rooms {
    /// Starts the room supervisor, and the dispatcher that feeds broker events to rooms.
    pub async fn start(
        broker: Arc<dyn Broker>,
        events: EventReceiver,
        settings: RoomSettings,
        policy: RestartPolicy,
    ) -> Result<Rooms, ractor::SpawnErr> {
        let registry = Arc::new(Registry::default());
        let starter = Starter::new(broker, registry.clone(), settings);
        let supervisor = RoomSupervisor {
            starter: starter.clone(),
            registry: registry.clone(),
            policy,
            sweep_interval: Duration::from_secs(30),
        };
        let (supervisor, _) = Actor::spawn(None, supervisor, ()).await?;
        let rooms = Rooms {
            registry,
            starter,
            supervisor,
        };
        tokio::spawn(dispatch(rooms.registry.clone(), events));
        Ok(rooms)
    }

    /// Subscribes `subscriber` to `room`. The room actor queues the `subscribed` frame
    /// and any replay to the subscriber itself, in order, before live messages.
    pub async fn subscribe(
        &self,
        room: &RoomName,
        subscriber: Arc<Subscriber>,
        since: Option<Position>,
        request_id: Option<u64>,
    ) -> Result<(), SubscribeError> {
        for attempt in 0..SUBSCRIBE_ATTEMPTS {
            let actor = self.get_or_create(room).await?;
            let request = SubscribeRequest {
                subscriber: subscriber.clone(),
                since: since.clone(),
                request_id,
            };
            let reply = actor
                .call(
                    |reply| RoomMsg::Subscribe(request, reply),
                    Some(SUBSCRIBE_TIMEOUT),
                )
                .await;
            match reply {
                Ok(CallResult::Success(result)) => return result.map_err(Into::into),
                Ok(CallResult::Timeout) => return Err(SubscribeError::Timeout),
                // The actor stopped (idle) or failed before answering: a new one is, or
                // will shortly be, in its place.
                Ok(CallResult::SenderError) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt + 1))).await;
                }
            }
        }
        Err(SubscribeError::Timeout)
    }

    /// Removes a connection's subscription to `room` (no reply awaited).
    pub fn unsubscribe(&self, room: &RoomName, conn_id: u64) {
        if let Some(actor) = self.registry.get(room.as_str()) {
            let _ = actor.cast(RoomMsg::Unsubscribe {
                conn_id,
                reply: None,
            });
        }
    }

    /// Removes a connection's subscription to `room` and waits until the room actor has
    /// done it, so that nothing of the room is queued to the connection afterwards.
    pub async fn unsubscribe_and_wait(&self, room: &RoomName, conn_id: u64) {
        if let Some(actor) = self.registry.get(room.as_str()) {
            let _ = actor
                .call(
                    |reply| RoomMsg::Unsubscribe {
                        conn_id,
                        reply: Some(reply),
                    },
                    Some(SUBSCRIBE_TIMEOUT),
                )
                .await;
        }
    }

    /// Number of rooms with a running actor on this instance.
    pub fn active(&self) -> usize {
        self.registry.len()
    }

    /// Subscribers and publications delivered of every room with an actor here, the
    /// server's internal rooms (`$…`) left out.
    pub fn loads(&self) -> Vec<RoomLoad> {
        self.registry
            .loads()
            .into_iter()
            .filter(|(room, _, _)| !room.as_str().starts_with('$'))
            .map(|(room, subscribers, publications)| RoomLoad {
                room,
                subscribers,
                publications,
            })
            .collect()
    }

    /// Makes the room's actor panic, to exercise supervision (tests and fault drills).
    /// Returns false when the room has no actor.
    pub fn inject_panic(&self, room: &str) -> bool {
        self.registry
            .get(room)
            .is_some_and(|actor| actor.cast(RoomMsg::Crash).is_ok())
    }

    /// Stops the supervisor and with it every room actor.
    pub fn stop(&self) {
        self.supervisor.stop(None);
    }

    async fn get_or_create(&self, room: &RoomName) -> Result<RoomRef, BrokerError> {
        self.starter
            .get_or_start(room, self.supervisor.get_cell(), SUBSCRIBE_TIMEOUT)
            .await
    }
}

/// Routes broker events to room actors until the broker's channel closes. A publication
/// beyond its room's mailbox bound is dropped and the room resynced instead (it fills
/// from the replay buffer); resyncs are coalesced to one waiting per room.
async fn dispatch(registry: Arc<Registry<RoomMsg>>, mut events: EventReceiver) {
    while let Some(event) = events.recv().await {
        match event {
            BrokerEvent::Publication(publication) => {
                crate::telemetry::metrics::per_publication()
                    .broker_received
                    .increment(1);
                let Some((actor, inbox)) = registry.route(publication.room.as_str()) else {
                    continue;
                };
                if !inbox.admit() {
                    resync(&actor, &inbox);
                } else if actor.cast(RoomMsg::Publication(publication)).is_err() {
                    inbox.took_publication();
                }
            }
            BrokerEvent::Resync(ResyncScope::All) => {
                for (actor, inbox) in registry.all() {
                    resync(&actor, &inbox);
                }
            }
            BrokerEvent::Resync(ResyncScope::Rooms(rooms)) => {
                for room in rooms {
                    if let Some((actor, inbox)) = registry.route(room.as_str()) {
                        resync(&actor, &inbox);
                    }
                }
            }
        }
    }
}

/// Asks a room to compare its position with the broker and fill, unless it already has
/// such a request waiting.
fn resync(actor: &RoomRef, inbox: &Inbox) {
    if inbox.request_resync() && actor.cast(RoomMsg::Resync).is_err() {
        inbox.took_resync();
    }
}
