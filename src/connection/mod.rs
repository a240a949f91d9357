//! The session core: one actor per connection (its subscriptions and requests), one
//! task that pumps its transport (its I/O, see `pump.rs`), a bounded outbound queue
//! between them and the room actors, and a supervisor over the actors. Nothing here
//! knows which transport a client uses: WebSocket and Server-Sent Events are adapters
//! in [`crate::transport`].
//!
//! Supervision policy: a connection actor that fails (panics) is not restarted — the
//! client's session state is in the client, which reconnects and resumes. Its pump
//! sees the actor end and closes only that connection, with 1011; the rooms drop its
//! subscriptions when they find its queue closed. Other connections are not affected.

mod actor;
mod admission;
mod context;
mod heartbeat;
mod lifetime;
mod publishing;
mod pump;

pub use actor::{ConnectionActor, ConnectionArgs, ConnectionMsg, ConnectionRef};
pub use admission::{Admission, Refusal};
pub use context::ConnectionContext;

use crate::auth::Principal;
use crate::outbound::Outbound;
use crate::protocol::{CloseCode, Encoding, ServerFrame};
use crate::transport::{Ending, Inbox, Transport};
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest wait for a stopping connection actor to release its subscriptions.
const ACTOR_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A live connection, as seen from outside it.
struct Live {
    /// The session id (kept as its 16 bytes; formatted when a `POST` session ends).
    session: uuid::Uuid,
    /// The principal key of an authenticated connection (for operator actions).
    user: Option<Box<str>>,
    actor: ConnectionRef,
    outbound: Outbound,
    encoding: Encoding,
}

/// The way in of a session whose client frames arrive as `POST`s.
struct Posts {
    inbox: Inbox,
    /// The principal key of the session's owner: only it may post.
    owner: Box<str>,
}

/// Why posted frames were not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRefusal {
    /// No such session here, or not one of the poster's, or not one that takes posts.
    UnknownSession,
    /// The session ended while its frames were handed in.
    Ended,
}

/// The connections of this instance.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    context: Arc<ConnectionContext>,
    supervisor: ActorRef<()>,
    live: DashMap<u64, Live>,
    next_id: AtomicU64,
    max_frame_bytes: usize,
    /// By session id: the ways in of sessions whose client frames arrive as `POST`s
    /// (Server-Sent Events). Other sessions are not here and pay nothing for it.
    posts: DashMap<Box<str>, Posts>,
}

impl Connections {
    /// Starts the connection supervisor.
    pub async fn start(
        context: Arc<ConnectionContext>,
        max_frame_bytes: usize,
    ) -> Result<Connections, ractor::SpawnErr> {
        let (supervisor, _) = Actor::spawn(None, ConnectionSupervisor, ()).await?;
        Ok(Connections {
            inner: Arc::new(Inner {
                context,
                supervisor,
                live: DashMap::new(),
                next_id: AtomicU64::new(1),
                max_frame_bytes,
                posts: DashMap::new(),
            }),
        })
    }

    /// Takes a place for a new connection of `principal` (before the upgrade is
    /// answered), or says why there is none.
    pub fn admit(&self, principal: &Principal) -> Result<Admission, Refusal> {
        self.inner.context.admissions.admit(principal)
    }

    /// Largest client frame, in bytes (transports enforce it on what they read).
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.max_frame_bytes
    }

    /// Serves one connection over `transport` until it ends. `peer` keys the publish
    /// rate limit of anonymous clients of an open server; `admission` is released when
    /// the connection ends.
    ///
    /// The start and the end of a connection are boxed: a future is as large as its
    /// largest state, and this one lives in the connection's task for the connection's
    /// whole life, mostly idle in the pump. Unboxed, the actor's spawn and the close (with
    /// their timers) would be reserved in every idle connection (~1 KiB each). It takes
    /// `self` so that the task can be this future itself, not an async block that would
    /// keep a second copy of the arguments.
    pub async fn serve<T: Transport>(
        self,
        mut transport: T,
        encoding: Encoding,
        principal: Principal,
        admission: Admission,
        peer: std::net::IpAddr,
    ) {
        let opening = self.open::<T>(Start {
            inbox: transport.inbox(),
            encoding,
            principal,
            user: admission.user().map(Box::from),
            peer,
        });
        let Some(mut opened) = Box::pin(opening).await else {
            let failed = Ending::Close(CloseCode::InternalError);
            Box::pin(transport.close(failed)).await;
            return;
        };
        let heartbeat = &self.inner.context.heartbeat;
        let (actor, receiver) = (&opened.actor, &mut opened.receiver);
        let ending = pump::pump(&mut transport, actor, receiver, heartbeat, opened.coalesce).await;
        self.closed::<T>(opened.conn_id, ending);
        Box::pin(finish(transport, ending, opened)).await;
        metrics::gauge!("roomcast_connections", "transport" => T::NAME).decrement(1.0);
        drop(admission);
    }

    /// Starts the connection's actor and registers the connection; `None` when the actor
    /// could not be started.
    async fn open<T: Transport>(&self, start: Start) -> Option<Opened> {
        let inner = &self.inner;
        let conn_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let session = uuid::Uuid::new_v4();
        let (outbound, receiver) = crate::outbound::channel(inner.context.outbound_queue);
        let Start {
            inbox,
            encoding,
            principal,
            user,
            peer,
        } = start;
        let posts = inbox.map(|inbox| Posts {
            inbox,
            owner: principal.key().into(),
        });
        let args = self.connection_args(conn_id, session, encoding, &outbound, principal, peer);
        let coalesce = (args.features.iter()).any(|f| f == crate::flags::COALESCE_WRITES);
        let actor = ConnectionActor {
            context: inner.context.clone(),
        };
        let spawn = Actor::spawn_linked(None, actor, args, inner.supervisor.get_cell());
        let (actor, actor_done) = match spawn.await {
            Ok(spawned) => spawned,
            Err(err) => {
                tracing::error!(error = %err, "cannot start a connection actor");
                return None;
            }
        };
        let live = Live {
            session,
            user,
            actor: actor.clone(),
            outbound,
            encoding,
        };
        self.opened::<T>(conn_id, live, posts);
        Some(Opened {
            conn_id,
            actor,
            actor_done,
            receiver,
            coalesce,
        })
    }

    /// What the connection actor of a new connection starts with: its feature flags, and
    /// the key its publish rate is limited by.
    fn connection_args(
        &self,
        conn_id: u64,
        session: uuid::Uuid,
        encoding: Encoding,
        outbound: &Outbound,
        principal: Principal,
        peer: std::net::IpAddr,
    ) -> ConnectionArgs {
        let context = &self.inner.context;
        let features = context.flags.enabled_for(&principal.key());
        let rate_key = match &principal {
            Principal::User { .. } => Some(Arc::from(principal.key())),
            Principal::Anonymous if context.limit_anonymous_publishes => {
                Some(Arc::from(format!("address:{peer}")))
            }
            Principal::Anonymous | Principal::Service { .. } => None,
        };
        ConnectionArgs {
            conn_id,
            session,
            encoding,
            outbound: outbound.clone(),
            principal,
            features,
            rate_key,
        }
    }

    /// Registers a connection whose actor runs (drain, disconnects, posts) and counts it.
    fn opened<T: Transport>(&self, conn_id: u64, live: Live, posts: Option<Posts>) {
        let encoding = live.encoding;
        if let Some(posts) = posts {
            self.inner
                .posts
                .insert(live.session.to_string().into(), posts);
        }
        self.inner.live.insert(conn_id, live);
        metrics::gauge!("roomcast_connections", "transport" => T::NAME).increment(1.0);
        metrics::counter!(
            "roomcast_connections_opened_total",
            "encoding" => encoding.name(),
            "transport" => T::NAME
        )
        .increment(1);
        tracing::debug!(
            conn = conn_id,
            encoding = encoding.name(),
            transport = T::NAME,
            "connection opened"
        );
    }

    /// Logs and counts how a connection ended, and unregisters it.
    fn closed<T: Transport>(&self, conn_id: u64, ending: Ending) {
        let inner = &self.inner;
        match ending {
            Ending::Close(CloseCode::SlowConsumer) => {
                let user = inner.live.get(&conn_id).and_then(|live| live.user.clone());
                crate::telemetry::recent::slow_consumer(user.as_deref());
                tracing::info!(conn = conn_id, "slow consumer disconnected")
            }
            Ending::Close(CloseCode::InternalError) => {
                tracing::warn!(
                    conn = conn_id,
                    "connection closed after an internal failure"
                )
            }
            _ => tracing::debug!(conn = conn_id, ?ending, "connection closed"),
        }
        metrics::counter!(
            "roomcast_connections_closed_total",
            "reason" => ending.name(),
            "transport" => T::NAME
        )
        .increment(1);
        if let Some((_, live)) = inner.live.remove(&conn_id) {
            let mut buffer = uuid::Uuid::encode_buffer();
            inner
                .posts
                .remove(&*live.session.hyphenated().encode_lower(&mut buffer));
        }
    }

    /// Hands frames posted to `session` by `poster` (a principal key) to that session,
    /// in order. Only the session's owner may post to it, and only to a session whose
    /// transport takes posts; any other session is unknown to the poster.
    pub async fn post(
        &self,
        session: &str,
        poster: &str,
        frames: Vec<crate::protocol::Encoded>,
    ) -> Result<(), PostRefusal> {
        let inbox = self
            .inner
            .posts
            .get(session)
            .filter(|posts| &*posts.owner == poster)
            .map(|posts| posts.inbox.clone())
            .ok_or(PostRefusal::UnknownSession)?;
        if inbox.post(frames).await {
            Ok(())
        } else {
            Err(PostRefusal::Ended)
        }
    }

    /// Disconnects every connection of `user` (a principal key such as `user:alice`):
    /// with `reconnect`, as a drain does (a `reconnect` frame, then 1012); without, with
    /// 4102 (the client does not come back by itself). Returns how many were open.
    pub fn disconnect_user(&self, user: &str, reconnect: bool) -> usize {
        let mut count = 0;
        for entry in self.inner.live.iter() {
            if entry.user.as_deref() != Some(user) {
                continue;
            }
            count += 1;
            if reconnect {
                send_elsewhere(&entry.outbound, entry.encoding, "disconnected", Vec::new());
            } else {
                entry.outbound.close(CloseCode::Disconnected);
            }
        }
        count
    }

    /// Unsubscribes every connection of `user` from `room` (each client gets an
    /// `unsubscribed` frame without `id`). Returns how many connections were told.
    pub fn revoke(&self, user: &str, room: &crate::protocol::RoomName) -> usize {
        let mut count = 0;
        for entry in self.inner.live.iter() {
            if entry.user.as_deref() == Some(user)
                && entry
                    .actor
                    .cast(ConnectionMsg::Revoke(room.clone()))
                    .is_ok()
            {
                count += 1;
            }
        }
        count
    }

    /// Asks every connection of `user` to re-check its subscriptions against what the
    /// user may read now (after a membership shrank); rooms no longer allowed are left
    /// with an `unsubscribed` frame without `id`. Returns how many connections were asked.
    pub fn recheck(&self, user: &str) -> usize {
        self.inner
            .live
            .iter()
            .filter(|entry| entry.user.as_deref() == Some(user))
            .filter(|entry| entry.actor.cast(ConnectionMsg::Recheck).is_ok())
            .count()
    }

    /// Number of open connections.
    pub fn count(&self) -> usize {
        self.inner.live.len()
    }

    /// Closes every connection with `code` (shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for entry in self.inner.live.iter() {
            entry.outbound.close(code);
        }
    }

    /// Tells every client to reconnect elsewhere — to the addresses `hint` returns for
    /// it — and closes it with 1012 after what was already queued to it, spreading the
    /// closes evenly over `window` so that the other instances are not hit by every
    /// client at once. Returns when every connection was told (not when they are gone).
    pub async fn drain(&self, window: Duration, hint: impl Fn() -> Vec<String>) {
        let targets: Vec<(Outbound, Encoding)> = self
            .inner
            .live
            .iter()
            .map(|entry| (entry.outbound.clone(), entry.encoding))
            .collect();
        let count = targets.len().max(1) as u32;
        let start = tokio::time::Instant::now();
        tracing::info!(connections = targets.len(), ?window, "draining connections");
        for (i, (outbound, encoding)) in targets.into_iter().enumerate() {
            tokio::time::sleep_until(start + window * i as u32 / count).await;
            send_elsewhere(&outbound, encoding, "draining", hint());
        }
    }

    /// Moves up to `count` clients to other instances exactly as a drain does (a
    /// `reconnect` frame with reason `rebalancing` and `hint`'s addresses, then 1012
    /// after what was queued). Returns how many were told.
    pub fn shed(&self, count: usize, hint: impl Fn() -> Vec<String>) -> usize {
        let targets: Vec<(Outbound, Encoding)> = self
            .inner
            .live
            .iter()
            .filter(|entry| !entry.outbound.is_closed())
            .take(count)
            .map(|entry| (entry.outbound.clone(), entry.encoding))
            .collect();
        for (outbound, encoding) in &targets {
            send_elsewhere(outbound, *encoding, "rebalancing", hint());
        }
        targets.len()
    }

    /// Makes the actor of the connection with this session id panic, to exercise
    /// supervision. Returns false when no such connection is open.
    pub fn inject_panic(&self, session: &str) -> bool {
        self.inner
            .live
            .iter()
            .find(|entry| {
                let mut buffer = uuid::Uuid::encode_buffer();
                *entry.session.hyphenated().encode_lower(&mut buffer) == *session
            })
            .is_some_and(|entry| entry.actor.cast(ConnectionMsg::Crash).is_ok())
    }

    /// Stops the supervisor.
    pub fn stop(&self) {
        self.inner.supervisor.stop(None);
    }
}

/// What a connection starts with, besides its transport.
struct Start {
    /// Where the transport takes frames posted to the session, if it does.
    inbox: Option<Inbox>,
    encoding: Encoding,
    principal: Principal,
    /// The principal key of an authenticated connection.
    user: Option<Box<str>>,
    peer: std::net::IpAddr,
}

/// A connection whose actor runs.
struct Opened {
    conn_id: u64,
    actor: ConnectionRef,
    actor_done: tokio::task::JoinHandle<()>,
    receiver: crate::outbound::OutboundReceiver,
    /// Feature flag `coalesce_writes`.
    coalesce: bool,
}

/// Ends a connection whose pump returned `ending`: stops taking frames (the actor
/// releases its subscriptions in post_stop), closes the transport, and waits a little
/// for the actor to stop.
async fn finish<T: Transport>(mut transport: T, ending: Ending, opened: Opened) {
    let Opened {
        actor,
        actor_done,
        receiver,
        ..
    } = opened;
    drop(receiver);
    transport.close(ending).await;
    if !actor_done.is_finished() {
        actor.stop(None);
        let _ = tokio::time::timeout(ACTOR_STOP_TIMEOUT, actor_done).await;
    }
}

/// Queues a `reconnect` frame (`reason`, `hint`) and closes with 1012 after it.
fn send_elsewhere(outbound: &Outbound, encoding: Encoding, reason: &str, hint: Vec<String>) {
    let frame = ServerFrame::Reconnect {
        reason: reason.into(),
        hint,
    };
    outbound.close_after(encoding.encode(&frame), CloseCode::ServiceRestart);
}

/// Parent of every connection actor; logs and counts their failures, restarts none.
struct ConnectionSupervisor;

impl Actor for ConnectionSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, error) = event {
            metrics::counter!("roomcast_connection_failures_total").increment(1);
            tracing::error!(%error, "connection actor failed; its socket is closed with 1011");
        }
        Ok(())
    }
}
