//! The room actor: one per room with local subscribers on this instance.
//!
//! It is the shell of the room's ordering core ([`crate::stream::Follower`]), the only
//! writer of the room's delivery order on this instance. Publications from the broker,
//! subscribes (with their replay) and gap fills are handled one at a time in its
//! mailbox: the core decides, `follow::Shell` reads the broker when the core asks and
//! queues what the core delivers, and the next message waits until the core has nothing
//! left to read. A subscriber therefore gets its replay `(since, cursor]` and then live
//! messages `(cursor, …]` with nothing in between: the seam is exact by construction.

use super::follow::{Core, CoreAction, Joiner, Shell, outgoing, page_of};
use super::inbox::Inbox;
use super::members::{SharedMembers, Subscriber};
use super::registry::Registry;
use crate::broker::{Broker, BrokerError, HistoryQuery, Publication};
use crate::protocol::RoomName;
use crate::stream::{Follower, FollowerSettings, Position, unix_ms};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

/// Handle to a room actor.
pub type RoomRef = ActorRef<RoomMsg>;

/// Messages a room actor handles.
pub enum RoomMsg {
    /// Adds a subscriber: queues its `subscribed` frame and replay, then live messages.
    /// Replies once they are queued, or with the broker error that prevented it.
    Subscribe(SubscribeRequest, RpcReplyPort<Result<(), BrokerError>>),
    /// Removes the subscriber of a connection; replies whether it was subscribed.
    Unsubscribe {
        /// The connection.
        conn_id: u64,
        /// Where to say whether it was subscribed.
        reply: Option<RpcReplyPort<bool>>,
    },
    /// A publication pushed by the broker.
    Publication(Arc<Publication>),
    /// The broker reconnected: compare the cursor with the broker's top and fill.
    Resync,
    /// Drop subscribers whose connection has gone away.
    Sweep,
    /// The linger timer of the given generation fired.
    LingerExpired(u64),
    /// Stop if still without subscribers; replies true when the actor is stopping.
    StopIfIdle(RpcReplyPort<bool>),
    /// Panic on purpose: fault injection for supervision tests.
    Crash,
}

/// A subscribe request.
pub struct SubscribeRequest {
    /// The new subscriber.
    pub subscriber: Arc<Subscriber>,
    /// The client's last position, to resume from.
    pub since: Option<Position>,
    /// The client's request id, echoed in `subscribed`.
    pub request_id: Option<u64>,
}

/// Start-up arguments.
pub struct RoomArgs {
    /// The room.
    pub room: RoomName,
    /// The subscriber set, empty on first start, inherited on restart.
    pub members: SharedMembers,
}

/// Tunables of room actors.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// Publications kept in the local cache.
    pub cache_size: usize,
    /// Age bound of the local cache (ms), the broker's history TTL.
    pub cache_ttl_ms: u64,
    /// How long an empty room lingers.
    pub linger: Duration,
    /// Delay before retrying a failed gap fill.
    pub fill_retry: Duration,
    /// Most out-of-order publications held while a gap is filled; beyond it the gap is
    /// declared lost.
    pub max_pending: usize,
    /// Most publications waiting in the mailbox (see `inbox.rs`).
    pub queue_size: usize,
}

/// The room actor (read-only parts; the mutable part is [`RoomState`]).
pub struct RoomActor {
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// Room name → actor, for routing.
    pub registry: Arc<Registry<RoomMsg>>,
    /// Tunables.
    pub settings: RoomSettings,
    /// Called when the room's linger expired without subscribers (an idle stop follows).
    pub idle: IdleNotice,
    /// This actor's mailbox accounting (see `inbox.rs`), fresh for every actor.
    pub inbox: Arc<Inbox>,
}

/// How a room tells its starter that it became idle.
pub type IdleNotice = Arc<dyn Fn(RoomName) + Send + Sync>;

/// Mutable state of a room actor.
pub struct RoomState {
    room: RoomName,
    /// The ordering core: epoch, cursor, local cache, publications waiting for a gap.
    core: Core,
    members: SharedMembers,
    linger_generation: u64,
}

impl Actor for RoomActor {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: RoomRef,
        args: RoomArgs,
    ) -> Result<RoomState, ActorProcessingErr> {
        // Registered before subscribing to the broker: from here on, the dispatcher
        // queues this room's publications in our mailbox, and whatever was sequenced
        // before the history read below is in that read. Nothing falls in between.
        let room = args.room.clone();
        self.registry.insert(
            room.clone(),
            myself.clone(),
            args.members.clone(),
            self.inbox.clone(),
        );
        match self.start(args).await {
            Ok(state) => Ok(state),
            Err(err) => {
                self.registry.remove_if_current(&room, myself.get_id());
                // The broker subscription may have been made before the failure; the
                // next actor of this room subscribes again (requests stay in order).
                if let Err(err) = self.broker.unsubscribe(&room).await {
                    tracing::debug!(%room, error = %err, "broker unsubscribe after a failed start");
                }
                Err(err.into())
            }
        }
    }

    async fn handle(
        &self,
        myself: RoomRef,
        message: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoomMsg::Subscribe(request, reply) => {
                self.subscribe(&myself, state, request, reply).await
            }
            RoomMsg::Unsubscribe { conn_id, reply } => {
                let removed = state.members.lock().remove(conn_id);
                if let Some(reply) = reply {
                    let _ = reply.send(removed);
                }
                self.linger_if_empty(&myself, state);
            }
            RoomMsg::Publication(publication) => {
                self.inbox.took_publication();
                let actions = state.core.publication(outgoing(publication));
                self.run(&myself, state, actions).await;
            }
            RoomMsg::Resync => {
                self.inbox.took_resync();
                let actions = state.core.resync();
                self.run(&myself, state, actions).await;
            }
            RoomMsg::Sweep => {
                state
                    .members
                    .lock()
                    .subscribers
                    .retain(|s| !s.outbound.is_closed());
                state.core.prune(unix_ms());
                self.linger_if_empty(&myself, state);
            }
            RoomMsg::LingerExpired(generation) => {
                if generation == state.linger_generation
                    && state.members.lock().subscribers.is_empty()
                {
                    (self.idle)(state.room.clone());
                }
            }
            RoomMsg::StopIfIdle(reply) => self.stop_if_idle(&myself, state, reply).await,
            RoomMsg::Crash => panic!("fault injected into room {}", state.room),
        }
        Ok(())
    }
}

impl RoomActor {
    /// Subscribes to the broker, reads the top and warms the cache; on a restart, brings
    /// every inherited subscriber up to the top.
    async fn start(&self, args: RoomArgs) -> Result<RoomState, BrokerError> {
        let RoomArgs { room, members } = args;
        self.broker.subscribe(&room).await?;
        let limit = self.settings.cache_size;
        let page = self
            .broker
            .history(&room, HistoryQuery::Latest { limit })
            .await?;
        let settings = FollowerSettings {
            cache_size: self.settings.cache_size,
            cache_ttl_ms: self.settings.cache_ttl_ms,
            max_pending: self.settings.max_pending,
        };
        let mut core = Follower::new(settings, page_of(page));
        let (inherited, previous_epoch, interrupted) = {
            let mut members = members.lock();
            let previous = members.epoch.replace(core.position().epoch);
            let interrupted = std::mem::take(&mut members.catching_up);
            (members.subscribers.clone(), previous, interrupted)
        };
        if !inherited.is_empty() {
            tracing::info!(%room, subscribers = inherited.len(), "room restarted; resuming its subscribers");
            metrics::counter!("roomcast_room_restarts_total").increment(1);
            let inherited: Vec<(Joiner, Option<Position>)> = inherited
                .into_iter()
                .map(|subscriber| {
                    // One a failed catch-up left behind is still in its own epoch.
                    let since = interrupted.get(&subscriber.conn_id).cloned().or_else(|| {
                        previous_epoch
                            .clone()
                            .map(|epoch| Position::new(epoch, subscriber.last_seq()))
                    });
                    let joiner = Joiner {
                        subscriber,
                        request_id: None,
                        reply: None,
                    };
                    (joiner, since)
                })
                .collect();
            members.lock().catching_up = (inherited.iter())
                .filter_map(|(joiner, since)| Some((joiner.subscriber.conn_id, since.clone()?)))
                .collect();
            let actions = core.catch_up(inherited);
            let shell = Shell {
                broker: self.broker.as_ref(),
                room: &room,
                members: &members,
            };
            if let Some(err) = shell.run(&mut core, actions).await.start_failed {
                return Err(err);
            }
        }
        Ok(RoomState {
            room,
            core,
            members,
            linger_generation: 0,
        })
    }

    async fn subscribe(
        &self,
        myself: &RoomRef,
        state: &mut RoomState,
        request: SubscribeRequest,
        reply: RpcReplyPort<Result<(), BrokerError>>,
    ) {
        let SubscribeRequest {
            subscriber,
            since,
            request_id,
        } = request;
        if !subscriber.activate() {
            // The connection stopped waiting for this subscribe.
            let _ = reply.send(Ok(()));
            return;
        }
        let joiner = Joiner {
            subscriber,
            request_id,
            reply: Some(reply),
        };
        let actions = state.core.subscribe(joiner, since);
        self.run(myself, state, actions).await;
    }

    /// Executes the core's actions (reading the broker as often as it asks).
    async fn run(&self, myself: &RoomRef, state: &mut RoomState, actions: Vec<CoreAction>) {
        let shell = Shell {
            broker: self.broker.as_ref(),
            room: &state.room,
            members: &state.members,
        };
        let outcome = shell.run(&mut state.core, actions).await;
        if outcome.joined {
            state.linger_generation += 1;
        }
        if outcome.schedule_retry {
            myself.send_after(self.settings.fill_retry, || RoomMsg::Resync);
        }
    }

    async fn stop_if_idle(
        &self,
        myself: &RoomRef,
        state: &mut RoomState,
        reply: RpcReplyPort<bool>,
    ) {
        let idle = state.members.lock().subscribers.is_empty();
        if idle {
            if let Err(err) = self.broker.unsubscribe(&state.room).await {
                tracing::warn!(room = %state.room, error = %err, "broker unsubscribe failed");
            }
            self.registry
                .remove_if_current(&state.room, myself.get_id());
            myself.stop(Some("idle".into()));
        }
        let _ = reply.send(idle);
    }

    fn linger_if_empty(&self, myself: &RoomRef, state: &mut RoomState) {
        if state.members.lock().subscribers.is_empty() {
            state.linger_generation += 1;
            let generation = state.linger_generation;
            myself.send_after(self.settings.linger, move || {
                RoomMsg::LingerExpired(generation)
            });
        }
    }
}
