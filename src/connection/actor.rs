//! The connection actor: one per WebSocket connection. It owns the client's
//! subscriptions, turns client frames into room and broker operations, and queues the
//! replies. Room messages do not pass through it: room actors queue them directly.
//!
//! Frames are handled one at a time, in the order the client sent them, so a client that
//! subscribes and then publishes sees its subscribe done first. Publishes are only
//! handed over in that order: they run in per-room lanes, several at once (see
//! `publishing.rs`), so their acks may come back in another order than they were sent. Socket I/O is the socket
//! task's job (see `socket.rs`); this actor never waits on the client.

mod presence;

use super::context::ConnectionContext;
use super::lifetime::TokenLifetime;
use super::publishing::{Publishing, Replies};
use crate::access::{Access, RoomAction};
use crate::auth::Principal;
use crate::broker::{PublishRequest, read_history};
use crate::outbound::Outbound;
use crate::protocol::{
    ClientFrame, CloseCode, CompressFormat, DecodeError, DeltaFormat, Encoding, ErrorCode,
    HistoryItem, PROTOCOL_VERSION, RoomName, ServerFrame,
};
use crate::room::{Forms, SubscribeError, Subscriber};
use crate::stream::Position;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Longest idempotency key (bytes), as for the HTTP API's `Idempotency-Key`.
pub const MAX_KEY_BYTES: usize = 255;

/// Handle to a connection actor.
pub type ConnectionRef = ActorRef<ConnectionMsg>;

/// Messages a connection actor handles.
pub enum ConnectionMsg {
    /// A data frame read from the socket. The permit bounds how many frames may wait in
    /// the mailbox; it is released when the frame has been handled.
    Inbound(crate::protocol::Encoded, OwnedSemaphorePermit),
    /// The token of the given generation reached its expiry (see `lifetime.rs`).
    TokenExpired(u64),
    /// An operator removed the user from this room: unsubscribe without being asked.
    Revoke(RoomName),
    /// What the user may read changed: leave the rooms no longer allowed.
    Recheck,
    /// Panic on purpose: fault injection for supervision tests.
    Crash,
}

/// Start-up arguments of a connection actor.
pub struct ConnectionArgs {
    /// Instance-unique id.
    pub conn_id: u64,
    /// Session id announced to the client.
    pub session: uuid::Uuid,
    /// Negotiated encoding.
    pub encoding: Encoding,
    /// The connection's outbound queue.
    pub outbound: Outbound,
    /// Who connected.
    pub principal: Principal,
    /// Feature flags on for this connection.
    pub features: Vec<String>,
    /// Key of the publish rate limit (see [`ConnectionContext::publish_limiter`]);
    /// `None` for connections it does not limit.
    pub rate_key: Option<Arc<str>>,
}

/// The connection actor.
pub struct ConnectionActor {
    /// Shared, read-only services and limits.
    pub context: Arc<ConnectionContext>,
}

/// Mutable state of a connection.
pub struct ConnectionState {
    /// The connection's id, encoding and outbound queue.
    replies: Replies,
    principal: Principal,
    rate_key: Option<Arc<str>>,
    subscriptions: HashSet<RoomName>,
    publishing: Publishing,
    lifetime: TokenLifetime,
    /// The session id (presence names the connection by it).
    session: uuid::Uuid,
    /// The connection's entries in presence sets: made when it first joins one.
    presence: Option<crate::presence::Member>,
}

/// The state goes when the actor does — stopped, or failed in a handler — and with it
/// the only reader of the client's frames: the socket is closed with 1011 then. (When the
/// socket ended first, nobody reads the queue any more and this does nothing.)
impl Drop for ConnectionState {
    fn drop(&mut self) {
        self.replies.outbound.close(CloseCode::InternalError);
    }
}

impl ConnectionState {
    fn send(&self, frame: &ServerFrame) {
        self.replies.send(frame);
    }

    fn send_error(&self, id: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.replies.send_error(id, code, message);
    }
}

/// What the token timer does when it fires: tell the actor.
fn token_expired(myself: &ConnectionRef) -> impl FnOnce(u64) + Send + 'static {
    let myself = myself.clone();
    move |generation| {
        let _ = myself.cast(ConnectionMsg::TokenExpired(generation));
    }
}

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ConnectionRef,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let mut lifetime = TokenLifetime::default();
        let auth = &self.context.auth;
        let expires_at = lifetime.watch(
            &args.principal,
            |exp| auth.valid_until(exp),
            token_expired(&myself),
        );
        let state = ConnectionState {
            replies: Replies {
                conn_id: args.conn_id,
                encoding: args.encoding,
                outbound: args.outbound,
            },
            principal: args.principal,
            rate_key: args.rate_key,
            subscriptions: HashSet::new(),
            publishing: Publishing::default(),
            lifetime,
            session: args.session,
            presence: None,
        };
        state.send(&ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION.to_owned(),
            server: self.context.node_id.clone(),
            session: args.session.to_string(),
            limits: self.context.limits.clone(),
            features: args.features,
            expires_at,
        });
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ConnectionRef,
        message: ConnectionMsg,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: handling a request takes a large future, and an unboxed one would be
        // reserved inside every idle connection's actor task.
        Box::pin(self.handle_message(&myself, message, state)).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ConnectionRef,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        for room in state.subscriptions.drain() {
            self.context.rooms.unsubscribe(&room, state.replies.conn_id);
        }
        let conn_id = state.replies.conn_id;
        if let Some(member) = state.presence.as_mut() {
            self.context.presence.leave_all(member, conn_id);
        }
        Ok(())
    }
}

impl ConnectionActor {
    async fn handle_message(
        &self,
        myself: &ConnectionRef,
        message: ConnectionMsg,
        state: &mut ConnectionState,
    ) {
        match message {
            ConnectionMsg::Inbound(frame, _permit) => {
                // A compressed `data` inflates to no more than a plain frame may carry.
                let max_inflated = self.context.limits.max_frame_bytes as usize;
                match state.replies.encoding.decode_client(&frame, max_inflated) {
                    Ok(ClientFrame::Refresh { id, token }) => {
                        self.refresh(myself, state, id, &token)
                    }
                    Ok(frame) => self.handle_frame(state, frame).await,
                    Err(DecodeError { id, code, message }) => {
                        if code == ErrorCode::CompressedTooLarge {
                            metrics::counter!("roomcast_inflate_refused_total").increment(1);
                        }
                        state.send_error(id, code, message)
                    }
                }
            }
            ConnectionMsg::TokenExpired(generation) => {
                if state.lifetime.is_current(generation) {
                    metrics::counter!("roomcast_tokens_expired_total").increment(1);
                    state.replies.outbound.close(CloseCode::TokenExpired);
                }
            }
            ConnectionMsg::Revoke(room) => self.revoke(state, room).await,
            ConnectionMsg::Recheck => self.recheck(state).await,
            ConnectionMsg::Crash => {
                panic!("fault injected into connection {}", state.replies.conn_id)
            }
        }
    }

    async fn handle_frame(&self, state: &mut ConnectionState, frame: ClientFrame) {
        match frame {
            ClientFrame::Subscribe {
                id,
                room,
                since,
                presence,
                info,
                delta,
                compress,
            } => {
                self.subscribe(state, id, &room, since, (presence, info), (delta, compress))
                    .await
            }
            ClientFrame::Unsubscribe { id, room } => self.unsubscribe(state, id, &room).await,
            ClientFrame::Publish {
                id,
                room,
                data,
                key,
            } => self.publish(state, id, &room, data, key).await,
            ClientFrame::Ping { id } => state.send(&ServerFrame::Pong { id }),
            ClientFrame::History {
                id,
                room,
                since,
                limit,
            } => self.history(state, id, &room, since, limit).await,
            ClientFrame::Presence { id, room } => self.presence(state, id, &room, false).await,
            ClientFrame::PresenceStats { id, room } => self.presence(state, id, &room, true).await,
            // Handled before: it needs the actor's own reference.
            ClientFrame::Refresh { .. } => {}
        }
    }

    /// `refresh`: a new token of the same user replaces the connection's one.
    fn refresh(
        &self,
        myself: &ConnectionRef,
        state: &mut ConnectionState,
        id: Option<u64>,
        token: &str,
    ) {
        let principal = match self.context.auth.authenticate(Some(token)) {
            Ok(principal) => principal,
            Err(err) => {
                metrics::counter!("roomcast_auth_failures_total", "endpoint" => "ws_refresh")
                    .increment(1);
                return state.send_error(id, ErrorCode::Unauthorized, err.to_string());
            }
        };
        if principal.key() != state.principal.key() {
            return state.send_error(
                id,
                ErrorCode::Unauthorized,
                "a refreshed token must name the same user as the connection's",
            );
        }
        let auth = &self.context.auth;
        let expires_at = state.lifetime.watch(
            &principal,
            |exp| auth.valid_until(exp),
            token_expired(myself),
        );
        state.principal = principal;
        // The new token may grant fewer rooms than the old one.
        let _ = myself.cast(ConnectionMsg::Recheck);
        match expires_at {
            Some(expires_at) => state.send(&ServerFrame::Refreshed { id, expires_at }),
            None => state.send_error(
                id,
                ErrorCode::InvalidFrame,
                "this connection's credentials do not expire; there is nothing to refresh",
            ),
        }
    }

    /// Leaves every subscribed room the principal may no longer read (after a membership
    /// shrank, or a refreshed token with fewer room claims).
    async fn recheck(&self, state: &mut ConnectionState) {
        let rooms: Vec<RoomName> = state.subscriptions.iter().cloned().collect();
        for room in rooms {
            let access = self
                .context
                .access
                .room_access(&state.principal, room.as_str(), RoomAction::Read)
                .await;
            if let Ok(Access::Denied(reason)) = access {
                tracing::debug!(room = %room, reason, "subscription no longer allowed");
                self.revoke(state, room).await;
            }
        }
    }

    /// An operator removed the user from `room`: the client is told with an
    /// `unsubscribed` frame without `id`.
    async fn revoke(&self, state: &mut ConnectionState, room: RoomName) {
        if state.subscriptions.remove(&room) {
            self.leave(state, None, room).await;
        }
    }

    fn room_name(&self, state: &ConnectionState, id: Option<u64>, room: &str) -> Option<RoomName> {
        match self.context.room_rules.parse(room) {
            Ok(room) => Some(room),
            Err(err) => {
                state.send_error(id, ErrorCode::InvalidRoom, err.to_string());
                None
            }
        }
    }

    /// Whether the client may do `action` with `room` (see [`crate::access`]); when
    /// not, the client is told why.
    async fn allowed(
        &self,
        state: &ConnectionState,
        id: Option<u64>,
        room: &RoomName,
        action: RoomAction,
    ) -> bool {
        let access = self
            .context
            .access
            .room_access(&state.principal, room.as_str(), action);
        match access.await {
            Ok(Access::Allowed) => true,
            Ok(Access::Denied(reason)) => {
                state.send_error(id, ErrorCode::Forbidden, reason);
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot check room access");
                state.send_error(id, ErrorCode::Unavailable, "cannot check access now; retry");
                false
            }
        }
    }

    /// A `subscribe` frame: its checks (name, access, presence options, a repeat, the
    /// room limit), then the room's answer and the presence join, in order in one place
    /// (slightly over ~60 lines).
    async fn subscribe(
        &self,
        state: &mut ConnectionState,
        id: Option<u64>,
        room: &str,
        since: Option<Position>,
        (presence, info): (bool, Option<Value>),
        forms: (Option<DeltaFormat>, Option<CompressFormat>),
    ) {
        let Some(room) = self.room_name(state, id, room) else {
            return;
        };
        if !self.allowed(state, id, &room, RoomAction::Read).await {
            return;
        }
        if let Err(message) = self
            .context
            .presence
            .check_subscribe(&room, presence, info.as_ref())
        {
            return state.send_error(id, ErrorCode::InvalidFrame, message);
        }
        if state.subscriptions.contains(&room) {
            return state.send_error(
                id,
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {room}"),
            );
        }
        let max = self.context.limits.max_rooms as usize;
        if state.subscriptions.len() >= max {
            return state.send_error(
                id,
                ErrorCode::TooManyRooms,
                format!("a connection may subscribe to at most {max} rooms"),
            );
        }
        let subscriber = Subscriber::with_forms(
            state.replies.conn_id,
            state.replies.encoding,
            state.replies.outbound.clone(),
            Forms {
                delta: forms.0,
                compress_above: forms.1.map_or(0, |_| self.context.compress_above),
            },
        );
        let result = self
            .context
            .rooms
            .subscribe(&room, subscriber.clone(), since, id)
            .await;
        match result {
            Ok(()) => {
                state.subscriptions.insert(room.clone());
            }
            Err(SubscribeError::Broker(err)) => {
                state.send_error(id, err.code(), format!("cannot subscribe to {room}: {err}"))
            }
            // The room may still get to it: whichever of us moves first decides.
            Err(SubscribeError::Timeout) if !subscriber.cancel() => {
                state.subscriptions.insert(room.clone());
            }
            Err(SubscribeError::Timeout) => state.send_error(
                id,
                ErrorCode::Timeout,
                format!("subscribing to {room} timed out"),
            ),
        }
        if state.subscriptions.contains(&room) {
            self.join_presence(state, &room, presence, info).await;
        }
    }

    async fn unsubscribe(&self, state: &mut ConnectionState, id: Option<u64>, room: &str) {
        let Some(room) = self.room_name(state, id, room) else {
            return;
        };
        if !state.subscriptions.remove(&room) {
            return state.send_error(
                id,
                ErrorCode::NotSubscribed,
                format!("not subscribed to {room}"),
            );
        }
        self.leave(state, id, room).await;
    }

    /// Leaves a room the connection was subscribed to (already removed from its set)
    /// and says so with `unsubscribed`: waits for the room to drop the connection, so no
    /// message of the room follows the frame.
    async fn leave(&self, state: &mut ConnectionState, id: Option<u64>, room: RoomName) {
        self.context
            .rooms
            .unsubscribe_and_wait(&room, state.replies.conn_id)
            .await;
        self.leave_presence(state, &room).await;
        state.send(&ServerFrame::Unsubscribed {
            id,
            room: room.to_string(),
        });
    }

    async fn publish(
        &self,
        state: &mut ConnectionState,
        id: Option<u64>,
        room: &str,
        data: Value,
        key: Option<String>,
    ) {
        let Some(room) = self.room_name(state, id, room) else {
            return;
        };
        if !self.allowed(state, id, &room, RoomAction::Publish).await {
            return;
        }
        if key.as_ref().is_some_and(|key| key.len() > MAX_KEY_BYTES) {
            return state.send_error(
                id,
                ErrorCode::InvalidFrame,
                format!("key is longer than {MAX_KEY_BYTES} bytes"),
            );
        }
        if let Some(Err(wait)) = state
            .rate_key
            .as_ref()
            .map(|key| self.context.publish_limiter.check(key))
        {
            metrics::counter!("roomcast_rate_limited_total", "endpoint" => "ws_publish")
                .increment(1);
            return state.send(&ServerFrame::Error {
                id,
                code: ErrorCode::RateLimited,
                name: ErrorCode::RateLimited.name().to_owned(),
                message: format!(
                    "too many publishes; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            });
        }
        if self.context.limits.publish_requires_subscription && !state.subscriptions.contains(&room)
        {
            return state.send_error(
                id,
                ErrorCode::NotSubscribed,
                format!("subscribe to {room} before publishing to it"),
            );
        }
        // WebSocket publishes are not traced: traces start at HTTP changes (or at an
        // incoming traceparent), so the WebSocket path pays nothing for tracing.
        let request = PublishRequest {
            data,
            idempotency_key: key.map(|key| state.principal.publish_key(&key)),
            trace: None,
            key_retention: Default::default(),
        };
        state
            .publishing
            .submit(&self.context, &state.replies, room, id, request)
            .await;
    }

    async fn history(
        &self,
        state: &mut ConnectionState,
        id: Option<u64>,
        room: &str,
        since: Option<Position>,
        limit: Option<u32>,
    ) {
        let Some(room) = self.room_name(state, id, room) else {
            return;
        };
        if !self.allowed(state, id, &room, RoomAction::Read).await {
            return;
        }
        let max = self.context.limits.max_history as usize;
        let limit = limit.map_or(max, |l| (l as usize).min(max));
        let reply = match read_history(&*self.context.broker, &room, since.as_ref(), limit).await {
            Ok(reply) => reply,
            Err(err) => {
                return state.send_error(
                    id,
                    err.code(),
                    format!("history of {room} failed: {err}"),
                );
            }
        };
        let messages = reply
            .publications
            .iter()
            .map(|p| HistoryItem {
                seq: p.seq,
                time: p.time_ms,
                data: p.data.clone(),
            })
            .collect();
        state.send(&ServerFrame::History {
            id,
            room: room.to_string(),
            epoch: reply.top.epoch,
            seq: reply.top.seq,
            recovered: reply.recovered,
            messages,
        });
    }
}
