//! The room actor: one per room with local subscribers on this instance.
//!
//! It is the only writer of the room's delivery order on this instance. Publications
//! from the broker, subscribes (with their replay) and gap fills are handled one at a
//! time in its mailbox, so a subscriber gets its replay `(since, cursor]` and then live
//! messages `(cursor, …]` with nothing in between: the seam is exact by construction.
//!
//! Continuity: `cursor` is the last sequence number delivered. A publication beyond
//! `cursor + 1` means the transport lost something; it waits in `pending` while the gap
//! is filled from the broker's replay buffer, then delivery continues in order. When the
//! broker cannot fill it (history gone) or the epoch changed, subscribers get an explicit
//! `reset` frame — never a silent skip.

use super::members::{SharedMembers, Subscriber};
use super::outgoing::Outgoing;
use super::registry::Registry;
use crate::broker::{Broker, BrokerError, HistoryQuery, Publication};
use crate::protocol::{RoomName, ServerFrame};
use crate::stream::{
    Epoch, LossReason, Position, Recovery, ReplayBuffer, SeqCheck, check_seq, recover, unix_ms,
};
use crate::telemetry::traces;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
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
}

/// The room actor (read-only parts; the mutable part is [`RoomState`]).
pub struct RoomActor {
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// Room name → actor, for routing.
    pub registry: Arc<Registry<RoomMsg>>,
    /// Tunables.
    pub settings: RoomSettings,
    /// Tells the supervisor that the room's linger expired without subscribers.
    pub idle: IdleNotice,
}

/// How a room tells its supervisor that it became idle.
pub type IdleNotice = Arc<dyn Fn(RoomName) + Send + Sync>;

/// Mutable state of a room actor.
pub struct RoomState {
    room: RoomName,
    epoch: Epoch,
    /// Last sequence number delivered to local subscribers.
    cursor: u64,
    cache: ReplayBuffer<Arc<Outgoing>>,
    /// Publications that arrived ahead of a gap, by sequence number.
    pending: BTreeMap<u64, Arc<Publication>>,
    members: SharedMembers,
    linger_generation: u64,
    fill_retry_scheduled: bool,
    /// A publication reused a delivered sequence number and the broker could not be
    /// told yet: retried with the next resync.
    rewind_pending: bool,
    /// The broker said this room may have missed messages (its Pub/Sub subscription
    /// died or moved) and no comparison with the broker has succeeded since: until one
    /// does, a subscribe checks with the broker first instead of trusting the cursor.
    stale: bool,
}

impl RoomState {
    fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.cursor)
    }
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
        self.registry
            .insert(room.clone(), myself.clone(), args.members.clone());
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
                let result = self.subscribe(state, request).await;
                let _ = reply.send(result);
            }
            RoomMsg::Unsubscribe { conn_id, reply } => {
                let removed = state.members.lock().remove(conn_id);
                if let Some(reply) = reply {
                    let _ = reply.send(removed);
                }
                self.linger_if_empty(&myself, state);
            }
            RoomMsg::Publication(publication) => {
                self.on_publication(&myself, state, publication).await;
            }
            RoomMsg::Resync => {
                state.fill_retry_scheduled = false;
                state.stale = true;
                self.resync(&myself, state).await;
            }
            RoomMsg::Sweep => {
                state
                    .members
                    .lock()
                    .subscribers
                    .retain(|s| !s.outbound.is_closed());
                state.cache.prune(unix_ms());
                self.linger_if_empty(&myself, state);
            }
            RoomMsg::LingerExpired(generation) => {
                if generation == state.linger_generation
                    && state.members.lock().subscribers.is_empty()
                {
                    (self.idle)(state.room.clone());
                }
            }
            RoomMsg::StopIfIdle(reply) => {
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
        let page = self
            .broker
            .history(
                &room,
                HistoryQuery::Latest {
                    limit: self.settings.cache_size,
                },
            )
            .await?;
        let mut cache = ReplayBuffer::new(self.settings.cache_size, self.settings.cache_ttl_ms);
        for publication in page.publications {
            let (seq, time) = (publication.seq, publication.time_ms);
            if cache.push(seq, time, Outgoing::new(publication)).is_err() {
                cache.clear();
            }
        }
        let mut state = RoomState {
            room,
            epoch: page.top.epoch.clone(),
            cursor: page.top.seq,
            cache,
            pending: BTreeMap::new(),
            members,
            linger_generation: 0,
            fill_retry_scheduled: false,
            rewind_pending: false,
            stale: false,
        };
        let (inherited, previous_epoch) = {
            let mut members = state.members.lock();
            let previous = members.epoch.replace(state.epoch.clone());
            (members.subscribers.clone(), previous)
        };
        if !inherited.is_empty() {
            tracing::info!(room = %state.room, subscribers = inherited.len(), "room restarted; resuming its subscribers");
            metrics::counter!("roomcast_room_restarts_total").increment(1);
            for subscriber in inherited {
                let since = previous_epoch
                    .clone()
                    .map(|epoch| Position::new(epoch, subscriber.last_seq()));
                self.catch_up(&mut state, &subscriber, since).await?;
            }
        }
        Ok(state)
    }

    /// Brings an inherited subscriber from `since` to the cursor, or resets it.
    async fn catch_up(
        &self,
        state: &mut RoomState,
        subscriber: &Subscriber,
        since: Option<Position>,
    ) -> Result<(), BrokerError> {
        let (replay, loss) = match since {
            Some(since) => self.plan_replay(state, &since).await?,
            None => (Vec::new(), Some(LossReason::EpochChanged)),
        };
        let mut frames: Vec<_> = loss
            .map(|reason| subscriber.encoding.encode(&reset_frame(state, reason)))
            .into_iter()
            .collect();
        // What the client held as a delta base is unknown to this actor.
        subscriber.forget_base();
        frames.extend(Outgoing::replay_frames(subscriber, &replay));
        if !frames.is_empty() {
            subscriber.outbound.batch_or_evict(frames);
        }
        subscriber.set_last_seq(state.cursor);
        Ok(())
    }

    async fn subscribe(
        &self,
        state: &mut RoomState,
        request: SubscribeRequest,
    ) -> Result<(), BrokerError> {
        let SubscribeRequest {
            subscriber,
            since,
            request_id,
        } = request;
        if !subscriber.activate() {
            // The connection stopped waiting for this subscribe.
            return Ok(());
        }
        // A client coming from an instance that is further along (or already in a newer
        // epoch) than this room, or a room that may have missed messages: catch this
        // room up from the broker first, so the client neither waits for messages it
        // has, nor gets them twice, nor is told a position the broker has moved past.
        let ahead = since
            .as_ref()
            .is_some_and(|since| since.epoch != state.epoch || since.seq > state.cursor);
        if ahead || state.stale {
            self.fill_to_top(state).await?;
            state.stale = false;
        }
        let (replay, loss) = match &since {
            Some(since) => self.plan_replay(state, since).await?,
            None => (Vec::new(), None),
        };
        let recovered = since.is_some() && loss.is_none();
        let outcome = match (&since, loss) {
            (None, _) => "fresh",
            (Some(_), None) => "recovered",
            (Some(_), Some(_)) => "lost",
        };
        metrics::counter!("roomcast_resumes_total", "result" => outcome).increment(1);
        if since.is_some() {
            crate::telemetry::recent::recovery(state.room.as_str(), recovered, replay.len() as u64);
        }
        metrics::counter!("roomcast_replayed_messages_total").increment(replay.len() as u64);
        let subscribed = ServerFrame::Subscribed {
            id: request_id,
            room: state.room.to_string(),
            epoch: state.epoch.clone(),
            seq: state.cursor,
            recovered,
            replayed: replay.len() as u64,
            reason: loss.map(|reason| reason.name().to_owned()),
            delta: subscriber.delta,
        };
        let encoding = subscriber.encoding;
        let mut frames = Vec::with_capacity(1 + replay.len());
        frames.push(encoding.encode(&subscribed));
        frames.extend(Outgoing::replay_frames(&subscriber, &replay));
        let queued = subscriber.outbound.batch_or_evict(frames);
        subscriber.set_last_seq(state.cursor);
        if queued {
            let mut members = state.members.lock();
            members.remove(subscriber.conn_id);
            members.subscribers.push(subscriber);
        }
        state.linger_generation += 1;
        Ok(())
    }

    /// What to replay to a client at `since` so that it reaches the cursor, or why it
    /// cannot be done exactly. Serves from the local cache when it reaches back far
    /// enough, else from the broker's replay buffer.
    async fn plan_replay(
        &self,
        state: &RoomState,
        since: &Position,
    ) -> Result<(Vec<Arc<Outgoing>>, Option<LossReason>), BrokerError> {
        let top = state.position();
        match recover(since, &top, state.cache.first_seq()) {
            Recovery::UpToDate => return Ok((Vec::new(), None)),
            Recovery::Replay { after } => {
                if let Some(replay) = state.cache.range(after, state.cursor) {
                    return Ok((replay, None));
                }
            }
            Recovery::Lost(LossReason::TooFarBehind) => {}
            Recovery::Lost(reason) => return Ok((Vec::new(), Some(reason))),
        }
        // The cache does not reach back: ask the broker.
        let after = since.seq;
        let page = self.read_after(&state.room, after, state.cursor).await?;
        metrics::counter!("roomcast_broker_replays_total").increment(1);
        let covered = page.top.epoch == state.epoch
            && matches!(
                recover(since, &page.top, page.first_seq),
                Recovery::Replay { .. }
            )
            && page.publications.first().map(|p| p.seq) == Some(after + 1)
            && page.publications.iter().any(|p| p.seq == state.cursor);
        if !covered {
            return Ok((Vec::new(), Some(LossReason::TooFarBehind)));
        }
        let replay = page
            .publications
            .into_iter()
            .filter(|p| p.seq <= state.cursor)
            .map(Outgoing::new)
            .collect();
        Ok((replay, None))
    }

    async fn on_publication(
        &self,
        myself: &RoomRef,
        state: &mut RoomState,
        publication: Arc<Publication>,
    ) {
        if publication.epoch != state.epoch {
            // Either a stale message of an old epoch, or the first sign that the broker
            // lost the room's history: the broker's top decides which.
            if let Err(err) = self.fill_to_top(state).await {
                tracing::warn!(room = %state.room, error = %err, "cannot check a foreign epoch; will retry");
                self.schedule_fill_retry(myself, state);
            }
            return;
        }
        if publication.seq <= state.cursor {
            // Normally a repeated delivery. A different publication under a delivered
            // sequence number means the broker's stream went backwards.
            let reused = state
                .cache
                .get(publication.seq)
                .is_some_and(|cached| cached.publication.id != publication.id);
            if reused {
                state.rewind_pending = true;
                self.resync(myself, state).await;
            }
            return;
        }
        state.pending.insert(publication.seq, publication);
        self.drain_pending(myself, state).await;
    }

    /// Delivers pending publications in order, filling gaps from the broker.
    async fn drain_pending(&self, myself: &RoomRef, state: &mut RoomState) {
        loop {
            while let Some(entry) = state.pending.first_entry() {
                match check_seq(state.cursor, *entry.key()) {
                    SeqCheck::Duplicate => {
                        entry.remove();
                    }
                    SeqCheck::Next => {
                        let publication = entry.remove();
                        self.advance(state, publication);
                    }
                    SeqCheck::Gap { .. } => break,
                }
            }
            let Some((&next, _)) = state.pending.first_key_value() else {
                return;
            };
            metrics::counter!("roomcast_gap_fills_total").increment(1);
            if state.pending.len() > self.settings.max_pending {
                self.reset_subscribers(state, LossReason::TooFarBehind, next - 1);
                continue;
            }
            if let Err(err) = self.fill(state, next - 1).await {
                tracing::warn!(room = %state.room, error = %err, missing_from = state.cursor + 1, "gap fill failed; will retry");
                self.schedule_fill_retry(myself, state);
                return;
            }
        }
    }

    /// Catches the cursor up with the broker's current top (and its epoch).
    async fn fill_to_top(&self, state: &mut RoomState) -> Result<(), BrokerError> {
        if state.rewind_pending {
            let fresh = self.broker.reset_epoch(&state.room, &state.epoch).await?;
            state.rewind_pending = false;
            if fresh.epoch != state.epoch {
                self.adopt_epoch(state, fresh.epoch);
            }
        }
        let page = self
            .broker
            .history(&state.room, HistoryQuery::Latest { limit: 0 })
            .await?;
        let top = self.reconcile(state, &page.top).await?.unwrap_or(page.top);
        if top.seq > state.cursor {
            self.fill(state, top.seq).await?;
        }
        Ok(())
    }

    /// Compares the broker's top with what was delivered. A new epoch is adopted; a top
    /// below the cursor in the same epoch means the stream was rewound (the broker came
    /// back from older data), so the room is moved to a new epoch before any reused
    /// sequence number can be mistaken for a delivered one. Returns the new epoch's top
    /// when the room changed epoch: the cursor is then 0, and everything up to that top
    /// is still to be delivered (a page read in the old epoch is stale).
    async fn reconcile(
        &self,
        state: &mut RoomState,
        top: &Position,
    ) -> Result<Option<Position>, BrokerError> {
        if top.epoch != state.epoch {
            self.adopt_epoch(state, top.epoch.clone());
            return Ok(Some(top.clone()));
        }
        if top.seq < state.cursor {
            tracing::warn!(room = %state.room, top = top.seq, delivered = state.cursor, "room stream went backwards; starting a new epoch");
            let fresh = self.broker.reset_epoch(&state.room, &state.epoch).await?;
            if fresh.epoch != state.epoch {
                self.adopt_epoch(state, fresh.epoch.clone());
                return Ok(Some(fresh));
            }
        }
        Ok(None)
    }

    /// Reads `(after, up_to]` from the broker's replay buffer.
    async fn read_after(
        &self,
        room: &RoomName,
        after: u64,
        up_to: u64,
    ) -> Result<crate::broker::HistoryPage, BrokerError> {
        let query = HistoryQuery::After {
            seq: after,
            limit: up_to.saturating_sub(after) as usize,
        };
        self.broker.history(room, query).await
    }

    /// Delivers `(cursor, up_to]` from the broker's replay buffer, or resets subscribers
    /// when the buffer no longer has it.
    async fn fill(&self, state: &mut RoomState, mut up_to: u64) -> Result<(), BrokerError> {
        let (after, page) = loop {
            let after = state.cursor;
            let page = self.read_after(&state.room, after, up_to).await?;
            match self.reconcile(state, &page.top).await? {
                // A new epoch: its stream is read again from its first message.
                Some(top) => {
                    up_to = top.seq;
                    if up_to <= state.cursor {
                        return Ok(());
                    }
                }
                None => break (after, page),
            }
        };
        if page.publications.first().map(|p| p.seq) != Some(after + 1) {
            // The replay buffer no longer holds the next message: continue from what it
            // has, after telling subscribers they missed something.
            let resume_after = page
                .publications
                .first()
                .map(|p| p.seq - 1)
                .unwrap_or(up_to)
                .min(up_to);
            self.reset_subscribers(state, LossReason::TooFarBehind, resume_after);
        }
        for publication in page.publications {
            if publication.seq > up_to {
                break;
            }
            if publication.seq == state.cursor + 1 {
                self.advance(state, publication);
            }
        }
        Ok(())
    }

    /// Compares with the broker after a broker reconnect.
    async fn resync(&self, myself: &RoomRef, state: &mut RoomState) {
        if let Err(err) = self.fill_to_top(state).await {
            tracing::warn!(room = %state.room, error = %err, "resync failed; will retry");
            self.schedule_fill_retry(myself, state);
            return;
        }
        state.stale = false;
        self.drain_pending(myself, state).await;
    }

    fn schedule_fill_retry(&self, myself: &RoomRef, state: &mut RoomState) {
        if !state.fill_retry_scheduled {
            state.fill_retry_scheduled = true;
            myself.send_after(self.settings.fill_retry, || RoomMsg::Resync);
        }
    }

    /// The broker's stream is a new incarnation: every subscriber is told the old epoch
    /// ended, and the new epoch is delivered from its first message (the caller fills
    /// it), so nothing acknowledged in the new epoch is skipped.
    fn adopt_epoch(&self, state: &mut RoomState, epoch: Epoch) {
        tracing::warn!(room = %state.room, old = %state.epoch, new = %epoch, "room epoch changed; history was lost");
        state.epoch = epoch.clone();
        state.members.lock().epoch = Some(epoch);
        state.cache.clear();
        state.pending.retain(|_, p| p.epoch == state.epoch);
        self.reset_subscribers(state, LossReason::EpochChanged, 0);
    }

    /// Tells every subscriber that continuity was lost and moves the cursor to `seq`.
    fn reset_subscribers(&self, state: &mut RoomState, reason: LossReason, seq: u64) {
        metrics::counter!("roomcast_room_resets_total", "reason" => reason.name()).increment(1);
        state.cursor = seq;
        state.cache.clear();
        state.pending.retain(|s, _| *s > seq);
        let frame = reset_frame(state, reason);
        let subscribers = state.members.lock().subscribers.clone();
        for subscriber in &subscribers {
            subscriber
                .outbound
                .send_or_evict(subscriber.encoding.encode(&frame));
            subscriber.set_last_seq(seq);
            subscriber.forget_base();
        }
    }

    /// Delivers the next publication to every subscriber and caches it.
    fn advance(&self, state: &mut RoomState, publication: Arc<Publication>) {
        let seq = publication.seq;
        let time = publication.time_ms;
        let outgoing = Outgoing::new(publication);
        let previous = seq.checked_sub(1).and_then(|s| state.cache.get(s)).cloned();
        state.cursor = seq;
        state.cache.prune(time);
        if state.cache.push(seq, time, outgoing.clone()).is_err() {
            state.cache.clear();
            let _ = state.cache.push(seq, time, outgoing.clone());
        }
        let span = match &outgoing.publication.trace {
            Some(trace) if traces::enabled() => {
                let span = tracing::info_span!("room.deliver", room = %state.room, seq, delivered = tracing::field::Empty);
                traces::set_parent(&span, Some(trace));
                span
            }
            _ => tracing::Span::none(),
        };
        let delivered = span.in_scope(|| deliver(&state.members, &outgoing, previous.as_deref()));
        span.record("delivered", delivered);
        metrics::counter!("roomcast_messages_delivered_total").increment(delivered);
        let latency_ms = unix_ms().saturating_sub(time);
        metrics::histogram!("roomcast_delivery_latency_seconds").record(latency_ms as f64 / 1000.0);
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

/// Queues one publication to every subscriber that has not had it yet (`previous`, the
/// one before it, is the base of deltas). Subscribers whose queue is full are evicted as
/// slow consumers; those whose connection is gone are dropped. Returns how many frames
/// were queued.
fn deliver(members: &SharedMembers, outgoing: &Outgoing, previous: Option<&Outgoing>) -> u64 {
    let seq = outgoing.seq();
    let mut members = members.lock();
    members.publications += 1;
    let mut delivered = 0;
    members.subscribers.retain(|subscriber| {
        if seq <= subscriber.last_seq() {
            return true;
        }
        if subscriber
            .outbound
            .send_or_evict(outgoing.frame_for(subscriber, previous))
        {
            subscriber.set_last_seq(seq);
            delivered += 1;
            true
        } else {
            false
        }
    });
    delivered
}

/// The `reset` frame telling subscribers that continuity broke at the cursor.
fn reset_frame(state: &RoomState, reason: LossReason) -> ServerFrame {
    ServerFrame::Reset {
        room: state.room.to_string(),
        epoch: state.epoch.clone(),
        seq: state.cursor,
        reason: reason.name().to_owned(),
    }
}
