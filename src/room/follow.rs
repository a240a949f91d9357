//! The room actor's work on behalf of its ordering core ([`Follower`]): reading the
//! broker when the core asks, and carrying out the core's decisions — deliveries to
//! subscribers, `reset` frames, `subscribed` answers with their replay — plus the logs
//! and metrics that go with them. Nothing here decides an order; it only executes.

use super::members::{SharedMembers, Subscriber};
use super::outgoing::Outgoing;
use crate::broker::{Broker, BrokerError, HistoryPage, HistoryQuery, Publication};
use crate::protocol::{RoomName, ServerFrame};
use crate::stream::{
    Action, Answer, Epoch, Follower, LossReason, Page, Position, Read, RetryCause, Sequenced,
    unix_ms,
};
use crate::telemetry::traces;
use ractor::RpcReplyPort;
use std::sync::Arc;

impl Sequenced for Arc<Outgoing> {
    fn epoch(&self) -> &Epoch {
        &self.publication.epoch
    }
    fn seq(&self) -> u64 {
        self.publication.seq
    }
    fn time_ms(&self) -> u64 {
        self.publication.time_ms
    }
    fn id(&self) -> u64 {
        self.publication.id
    }
}

/// A subscriber the core is serving: a new one (with its request id and where to say
/// that it is in place) or one inherited from the room's previous actor.
pub struct Joiner {
    /// The subscriber.
    pub subscriber: Arc<Subscriber>,
    /// The client's request id, echoed in `subscribed` (new subscribers only).
    pub request_id: Option<u64>,
    /// Where to reply once the `subscribed` frame and the replay are queued.
    pub reply: Option<RpcReplyPort<Result<(), BrokerError>>>,
}

/// The ordering core of a room actor.
pub type Core = Follower<Arc<Outgoing>, Joiner, BrokerError>;
/// One decision of the core.
pub type CoreAction = Action<Arc<Outgoing>, Joiner, BrokerError>;

/// What the shell needs to execute the core's decisions.
pub struct Shell<'a> {
    /// The broker.
    pub broker: &'a dyn Broker,
    /// The room.
    pub room: &'a RoomName,
    /// Its subscribers.
    pub members: &'a SharedMembers,
}

/// What running a batch of actions asks of the actor itself.
#[derive(Default)]
pub struct Outcome {
    /// The core wants a resync after the retry delay.
    pub schedule_retry: bool,
    /// A new subscriber was put in place (the linger timer must forget an idle room).
    pub joined: bool,
    /// Catching up inherited subscribers failed: the room cannot start.
    pub start_failed: Option<BrokerError>,
}

impl Shell<'_> {
    /// Executes `actions`, performing every read the core asks for and feeding the
    /// answers back, until the core has nothing left to read.
    pub async fn run(&self, core: &mut Core, mut actions: Vec<CoreAction>) -> Outcome {
        let mut outcome = Outcome::default();
        loop {
            let mut read = None;
            for action in actions {
                match action {
                    Action::Read(r) => read = Some(r),
                    other => self.apply(other, &mut outcome),
                }
            }
            let Some(read) = read else {
                return outcome;
            };
            actions = match self.perform(read).await {
                Ok(answer) => core.answer(answer),
                Err(err) => core.failed(err),
            };
        }
    }

    async fn perform(&self, read: Read) -> Result<Answer<Arc<Outgoing>>, BrokerError> {
        let query = match read {
            Read::Top => HistoryQuery::Latest { limit: 0 },
            Read::After { after, up_to } => HistoryQuery::After {
                seq: after,
                limit: up_to.saturating_sub(after) as usize,
            },
            Read::ResetEpoch { stale } => {
                let top = self.broker.reset_epoch(self.room, &stale).await?;
                return Ok(Answer::Top(top));
            }
        };
        let page = self.broker.history(self.room, query).await?;
        Ok(Answer::Page(page_of(page)))
    }

    fn apply(&self, action: CoreAction, outcome: &mut Outcome) {
        let room = self.room;
        match action {
            Action::Deliver(outgoing, previous) => self.deliver(&outgoing, previous.as_deref()),
            Action::Reset { position, reason } => self.reset(&position, reason),
            Action::EpochChanged { old, new } => {
                tracing::warn!(%room, %old, %new, "room epoch changed; history was lost");
                self.members.lock().epoch = Some(new);
            }
            Action::Rewound { top, delivered } => {
                tracing::warn!(%room, top, delivered, "room stream went backwards; starting a new epoch");
            }
            Action::GapFound => metrics::counter!("roomcast_gap_fills_total").increment(1),
            Action::BrokerReplay => metrics::counter!("roomcast_broker_replays_total").increment(1),
            Action::Subscribed {
                subscriber,
                position,
                resumed,
                loss,
                replay,
            } => {
                self.subscribed(subscriber, &position, resumed, loss, &replay);
                outcome.joined = true;
            }
            Action::SubscribeFailed { subscriber, error } => {
                if let Some(reply) = subscriber.reply {
                    let _ = reply.send(Err(error));
                }
            }
            Action::CaughtUp {
                subscriber,
                position,
                loss,
                replay,
            } => self.caught_up(&subscriber.subscriber, &position, loss, &replay),
            Action::StartFailed(error) => outcome.start_failed = Some(error),
            Action::ReadFailed { cause, error } => log_failure(room, cause, &error),
            Action::ScheduleRetry => outcome.schedule_retry = true,
            Action::Read(_) => unreachable!("reads are performed by run"),
        }
    }

    /// Delivers the next publication to every subscriber that has not had it.
    fn deliver(&self, outgoing: &Outgoing, previous: Option<&Outgoing>) {
        let (seq, time) = (outgoing.seq(), outgoing.publication.time_ms);
        let span = match &outgoing.publication.trace {
            Some(trace) if traces::enabled() => {
                let span = tracing::info_span!("room.deliver", room = %self.room, seq, delivered = tracing::field::Empty);
                traces::set_parent(&span, Some(trace));
                span
            }
            _ => tracing::Span::none(),
        };
        let delivered = span.in_scope(|| deliver(self.members, outgoing, previous));
        span.record("delivered", delivered);
        let metrics = crate::telemetry::metrics::per_publication();
        metrics.delivered.increment(delivered);
        let latency_ms = unix_ms().saturating_sub(time);
        metrics.delivery_latency.record(latency_ms as f64 / 1000.0);
    }

    /// Tells every subscriber that continuity was lost; each is now at `position`.
    fn reset(&self, position: &Position, reason: LossReason) {
        metrics::counter!("roomcast_room_resets_total", "reason" => reason.name()).increment(1);
        let frame = reset_frame(self.room, position, reason);
        let subscribers = self.members.lock().subscribers.clone();
        for subscriber in &subscribers {
            subscriber
                .outbound
                .send_or_evict(subscriber.encoding.encode(&frame));
            subscriber.set_last_seq(position.seq);
            subscriber.forget_base();
        }
    }

    /// Queues `subscribed` and the replay to a new subscriber, adds it to the room and
    /// tells the connection it is in place.
    fn subscribed(
        &self,
        joiner: Joiner,
        position: &Position,
        resumed: bool,
        loss: Option<LossReason>,
        replay: &[Arc<Outgoing>],
    ) {
        let Joiner {
            subscriber,
            request_id,
            reply,
        } = joiner;
        let recovered = resumed && loss.is_none();
        let outcome = match (resumed, loss) {
            (false, _) => "fresh",
            (true, None) => "recovered",
            (true, Some(_)) => "lost",
        };
        metrics::counter!("roomcast_resumes_total", "result" => outcome).increment(1);
        if resumed {
            crate::telemetry::recent::recovery(self.room.as_str(), recovered, replay.len() as u64);
        }
        metrics::counter!("roomcast_replayed_messages_total").increment(replay.len() as u64);
        let subscribed = ServerFrame::Subscribed {
            id: request_id,
            room: self.room.to_string(),
            epoch: position.epoch.clone(),
            seq: position.seq,
            recovered,
            replayed: replay.len() as u64,
            reason: loss.map(|reason| reason.name().to_owned()),
            delta: subscriber.delta,
            compress: (subscriber.compress_above > 0)
                .then_some(crate::protocol::CompressFormat::Deflate),
        };
        let encoding = subscriber.encoding;
        let mut frames = Vec::with_capacity(1 + replay.len());
        frames.push(encoding.encode(&subscribed));
        frames.extend(Outgoing::replay_frames(&subscriber, replay));
        let queued = subscriber.outbound.batch_or_evict(frames);
        subscriber.set_last_seq(position.seq);
        if queued {
            let mut members = self.members.lock();
            members.remove(subscriber.conn_id);
            members.subscribers.push(subscriber);
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }

    /// Brings an inherited subscriber to `position`: a reset first if it missed
    /// something that cannot be replayed, then the replay.
    fn caught_up(
        &self,
        subscriber: &Subscriber,
        position: &Position,
        loss: Option<LossReason>,
        replay: &[Arc<Outgoing>],
    ) {
        let mut frames: Vec<_> = loss
            .map(|reason| {
                let frame = reset_frame(self.room, position, reason);
                subscriber.encoding.encode(&frame)
            })
            .into_iter()
            .collect();
        // What the client held as a delta base is unknown to this actor.
        subscriber.forget_base();
        frames.extend(Outgoing::replay_frames(subscriber, replay));
        if !frames.is_empty() {
            subscriber.outbound.batch_or_evict(frames);
        }
        let last = replay
            .last()
            .map_or(position.seq, |outgoing| outgoing.seq());
        subscriber.set_last_seq(last);
        self.members.lock().catching_up.remove(&subscriber.conn_id);
    }
}

/// A broker page as the core takes it: each publication wrapped for lazy encoding.
pub fn page_of(page: HistoryPage) -> Page<Arc<Outgoing>> {
    Page {
        top: page.top,
        first_seq: page.first_seq,
        publications: page.publications.into_iter().map(Outgoing::new).collect(),
    }
}

/// Wraps a publication pushed by the broker.
pub fn outgoing(publication: Arc<Publication>) -> Arc<Outgoing> {
    Outgoing::new(publication)
}

fn log_failure(room: &RoomName, cause: RetryCause, error: &BrokerError) {
    match cause {
        RetryCause::ForeignEpoch => {
            tracing::warn!(%room, %error, "cannot check a foreign epoch; will retry")
        }
        RetryCause::Resync => tracing::warn!(%room, %error, "resync failed; will retry"),
        RetryCause::Gap { missing_from } => {
            tracing::warn!(%room, %error, missing_from, "gap fill failed; will retry")
        }
    }
}

/// Delivers one publication to every subscriber that has not had it yet (`previous`, the
/// one before it, is the base of deltas): written to the socket at once where the
/// connection's direct path is open, else queued. Subscribers whose queue is full are evicted as
/// slow consumers; those whose connection is gone are dropped. Returns how many frames
/// were queued.
fn deliver(members: &SharedMembers, outgoing: &Outgoing, previous: Option<&Outgoing>) -> u64 {
    let seq = outgoing.seq();
    members.count_publication();
    let mut members = members.lock();
    let mut delivered = 0;
    let mut gone = Vec::new();
    let subscribers = &members.subscribers;
    for (i, subscriber) in subscribers.iter().enumerate() {
        // Each delivery is a system call whose kernel work pushes the next subscriber's
        // lines out of the cache; fetching them while it runs keeps the loop from
        // waiting on memory (two thirds of the user time per delivery in the one-room
        // reference run were such waits).
        if let Some(next) = subscribers.get(i + 1) {
            next.outbound.prefetch();
        }
        if let Some(later) = subscribers.get(i + 2) {
            later.prefetch();
        }
        if seq <= subscriber.last_seq() {
            continue;
        }
        if subscriber
            .outbound
            .deliver_or_evict(outgoing.frame_for(subscriber, previous))
        {
            subscriber.set_last_seq(seq);
            delivered += 1;
        } else {
            gone.push(subscriber.conn_id);
        }
    }
    if !gone.is_empty() {
        (members.subscribers).retain(|subscriber| !gone.contains(&subscriber.conn_id));
    }
    delivered
}

/// The `reset` frame telling subscribers that continuity broke at `position`.
fn reset_frame(room: &RoomName, position: &Position, reason: LossReason) -> ServerFrame {
    ServerFrame::Reset {
        room: room.to_string(),
        epoch: position.epoch.clone(),
        seq: position.seq,
        reason: reason.name().to_owned(),
    }
}
