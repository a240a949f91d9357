//! The background task of a [`super::Client`]: connect, resubscribe, resend, reconnect.

use super::events::EventConnection;
use super::{Ack, ClientConfig, ClientError, Command, Connection, Event, Received, Subscription};
use crate::protocol::{ClientFrame, CloseCode, CompressFormat, DeltaFormat, ServerFrame};
use crate::stream::Position;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How often unanswered requests are checked for their deadline.
const TICK: Duration = Duration::from_millis(100);
/// Wait before resending a publish the server refused temporarily.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Longest wait for the `welcome` frame.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);

/// A room the application subscribed to.
struct Room {
    /// Last position received (what a resume starts after).
    position: Option<Position>,
    /// Waiting for the first `subscribed`.
    reply: Option<oneshot::Sender<Result<Subscription, ClientError>>>,
    /// The subscribe request id in flight on the current connection.
    request_id: Option<u64>,
    /// Not before this instant (a retry after a temporary refusal).
    resend_at: Instant,
    /// Whether a `subscribed` was already received once.
    active_once: bool,
    /// Presence events asked for, and the client's `info`.
    presence: (bool, Option<Value>),
    /// Messages come as Fossil deltas (see [`Room::receive`]).
    delta: bool,
    /// Large messages may come compressed (see [`Room::receive`]).
    compress: bool,
    /// With `delta`: the last message's position and JSON text, the base of the next delta.
    base: Option<(Position, String)>,
    /// A delta could not be applied: unsubscribe and subscribe again (from `position`)
    /// on this connection, dropping this room's messages until the new `subscribed`.
    resubscribe: Resubscribe,
}

/// Where a room is in subscribing again after a delta it could not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resubscribe {
    /// Not resubscribing.
    No,
    /// The `unsubscribe` is still to be sent.
    Due,
    /// Sent: waiting for the new `subscribed`.
    Sent,
}

/// Largest value a delta may make (a bound against a delta that expands without end).
const MAX_DELTA_OUTPUT: usize = 64 << 20;

impl Room {
    /// The value of a `message` frame of this room, or `None` when the frame is to be
    /// dropped: while resubscribing, or when its data cannot be inflated or its delta
    /// applied (which starts a resubscribe, so the client resumes from the last message
    /// it has).
    fn receive(
        &mut self,
        position: &Position,
        data: Value,
        forms: (Option<bool>, bool),
    ) -> Option<Value> {
        if self.resubscribe != Resubscribe::No {
            return None;
        }
        let (delta, compressed) = forms;
        let data = if compressed {
            let text = match &data {
                Value::String(packed) => {
                    crate::protocol::compress::unpack(packed, MAX_DELTA_OUTPUT)
                        .map_err(|err| format!("compressed data: {err}"))
                }
                _ => Err("compressed data is not text".to_owned()),
            };
            match (text, delta) {
                (Ok(text), Some(_)) => Value::String(text),
                (Ok(text), None) => match serde_json::from_str(&text) {
                    Ok(value) => return Some(value),
                    Err(err) => return self.undecodable(position, format!("inflated data: {err}")),
                },
                (Err(reason), _) => return self.undecodable(position, reason),
            }
        } else {
            data
        };
        let Some(is_delta) = delta else {
            return Some(data);
        };
        let text = match (data, is_delta) {
            (Value::String(text), false) => Ok(text),
            (Value::String(delta), true) => match &self.base {
                Some((base, text))
                    if base.epoch == position.epoch && base.seq + 1 == position.seq =>
                {
                    crate::protocol::fossil::apply(
                        text.as_bytes(),
                        delta.as_bytes(),
                        MAX_DELTA_OUTPUT,
                    )
                    .map_err(|err| err.to_string())
                    .and_then(|bytes| String::from_utf8(bytes).map_err(|err| err.to_string()))
                }
                _ => Err("no base message for the delta".to_owned()),
            },
            _ => Err("a delta subscription's message data is not text".to_owned()),
        };
        match text.and_then(|text| {
            let value = serde_json::from_str(&text).map_err(|err| err.to_string())?;
            Ok((text, value))
        }) {
            Ok((text, value)) => {
                self.base = Some((position.clone(), text));
                Some(value)
            }
            Err(reason) => self.undecodable(position, reason),
        }
    }

    /// A message this subscription cannot turn into a value: subscribe again from the
    /// last position, dropping the room's messages until then.
    fn undecodable(&mut self, position: &Position, reason: String) -> Option<Value> {
        tracing::warn!(seq = position.seq, %reason, "cannot decode a message; subscribing again");
        self.base = None;
        self.resubscribe = Resubscribe::Due;
        self.request_id = None;
        self.resend_at = Instant::now();
        None
    }
}

/// A presence query not yet answered.
struct Query {
    room: String,
    stats: bool,
    reply: oneshot::Sender<Result<ServerFrame, ClientError>>,
    deadline: Instant,
    /// When to (re)send: `None` once sent on the current connection.
    resend_at: Option<Instant>,
}

/// A publish not yet acknowledged.
struct Publish {
    room: String,
    data: Value,
    key: String,
    reply: oneshot::Sender<Result<Ack, ClientError>>,
    deadline: Instant,
    /// When to (re)send: `None` once sent on the current connection.
    resend_at: Option<Instant>,
}

struct State {
    config: ClientConfig,
    events: mpsc::Sender<Event>,
    rooms: BTreeMap<String, Room>,
    publishes: HashMap<u64, Publish>,
    queries: HashMap<u64, Query>,
    next_id: u64,
    /// Addresses the server named in its last `reconnect` frame, tried (in order) before
    /// the configured URLs by the next connection attempts.
    hint: VecDeque<String>,
}

enum SessionEnd {
    Lost(Option<u16>),
    Stop,
}

/// The client's life: connect (a hinted URL first, then the configured ones in turn),
/// serve the session, reconnect with a jittered backoff, until stopped or told not to
/// come back. A little over ~60 lines on purpose: the reconnect policy reads in one
/// place.
pub(super) async fn run(
    config: ClientConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let mut state = State {
        config,
        events,
        rooms: BTreeMap::new(),
        publishes: HashMap::new(),
        queries: HashMap::new(),
        next_id: 1,
        hint: VecDeque::new(),
    };
    // Settings that can never connect stop the client at once, saying why (to the log
    // and to every request made meanwhile), instead of failing each attempt for ever.
    if let Some(ca_file) = state.config.tls_ca_file.as_deref()
        && let Err(error) = super::tls::client_config(Some(ca_file))
    {
        tracing::error!(%error, "the client cannot connect with these settings; stopping");
        while let Ok(command) = commands.try_recv() {
            if matches!(command, Command::Stop) {
                break;
            }
            state.accept(command);
        }
        return state.stop_with(None, error).await;
    }
    let mut url_index = 0;
    let mut delay = state.config.reconnect_min;
    let mut connected_before = false;
    loop {
        // A draining or rebalancing server names where to go: there first, then on
        // through the configured list.
        let url = state.hint.pop_front().unwrap_or_else(|| {
            url_index += 1;
            state.config.urls[(url_index - 1) % state.config.urls.len()].clone()
        });
        let config = state.config.clone();
        let connection = tokio::select! {
            connection = connect(&config, &url) => connection,
            _ = queue_until_stop(&mut commands, &mut state) => return state.stop(None).await,
        };
        let (mut connection, session, server) = match connection {
            Ok(connected) => connected,
            Err(_) => {
                state.expire_requests();
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(state.config.reconnect_max);
                continue;
            }
        };
        delay = state.config.reconnect_min;
        state.hint.clear();
        state
            .emit(Event::Connected {
                url,
                session,
                server,
                reconnect: connected_before,
                transport: connection.name(),
            })
            .await;
        connected_before = true;
        match state.session(&mut connection, &mut commands).await {
            SessionEnd::Stop => {
                connection.close().await;
                return state.stop(None).await;
            }
            SessionEnd::Lost(code) => {
                state.emit(Event::Disconnected { code }).await;
                let retry = code
                    .and_then(CloseCode::from_number)
                    .is_none_or(CloseCode::should_reconnect);
                if !retry {
                    return state.stop(code).await;
                }
                // A short randomized pause spreads the reconnects of many clients.
                tokio::time::sleep(jitter(state.config.reconnect_min)).await;
            }
        }
    }
}

/// The connection of a session: a WebSocket, or Server-Sent Events when WebSocket
/// cannot connect (see [`ClientConfig::sse_fallback`]).
enum Link {
    // Boxed: a WebSocket connection is some 1.4 KB, the event stream much less.
    WebSocket(Box<Connection>),
    Events(Box<EventConnection>),
}

impl Link {
    fn name(&self) -> &'static str {
        match self {
            Link::WebSocket(_) => "websocket",
            Link::Events(_) => "sse",
        }
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        match self {
            Link::WebSocket(connection) => connection.send(frame).await,
            Link::Events(connection) => connection.send(frame).await,
        }
    }

    async fn recv(&mut self) -> Result<Received, ClientError> {
        match self {
            Link::WebSocket(connection) => connection.recv().await,
            Link::Events(connection) => connection.recv().await,
        }
    }

    async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        match self {
            Link::WebSocket(connection) => connection.next_frame(timeout).await,
            Link::Events(connection) => connection.next_frame(timeout).await,
        }
    }

    async fn close(self) {
        match self {
            Link::WebSocket(connection) => (*connection).close().await,
            // Dropping the event stream ends the session.
            Link::Events(_) => {}
        }
    }
}

/// Opens a session at `url`: a WebSocket, or (when that cannot connect and the fallback
/// is on) Server-Sent Events at the same server; then reads `welcome`.
async fn connect(config: &ClientConfig, url: &str) -> Result<(Link, String, String), ClientError> {
    let headers: Vec<(&str, &str)> = config
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let ca_file = config.tls_ca_file.as_deref();
    let websocket = Connection::connect_trusting(
        url,
        Some(config.encoding),
        &headers,
        config.local_address,
        ca_file,
    )
    .await;
    let mut link = match websocket {
        Ok(connection) => Link::WebSocket(Box::new(connection)),
        Err(ClientError::Connect(reason)) if config.sse_fallback => {
            tracing::debug!(url, %reason, "WebSocket cannot connect; trying Server-Sent Events");
            Link::Events(Box::new(
                EventConnection::connect_trusting(url, &config.headers, ca_file).await?,
            ))
        }
        Err(err) => return Err(err),
    };
    match link.next_frame(WELCOME_TIMEOUT).await? {
        ServerFrame::Welcome {
            session, server, ..
        } => Ok((link, session, server)),
        other => Err(ClientError::Protocol(format!(
            "expected welcome, got {other:?}"
        ))),
    }
}

/// While connecting: records commands until asked to stop.
async fn queue_until_stop(commands: &mut mpsc::UnboundedReceiver<Command>, state: &mut State) {
    loop {
        match commands.recv().await {
            None | Some(Command::Stop) => return,
            Some(command) => state.accept(command),
        };
    }
}

fn jitter(delay: Duration) -> Duration {
    let factor = 0.5 + rand::random::<f64>();
    delay.mul_f64(factor)
}

impl State {
    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    async fn stop(self, code: Option<u16>) {
        self.stop_with(code, ClientError::Stopped).await;
    }

    /// Stops, answering every request still waiting with `error`.
    async fn stop_with(mut self, code: Option<u16>, error: ClientError) {
        for (_, room) in std::mem::take(&mut self.rooms) {
            if let Some(reply) = room.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
        for (_, publish) in std::mem::take(&mut self.publishes) {
            let _ = publish.reply.send(Err(error.clone()));
        }
        for (_, query) in std::mem::take(&mut self.queries) {
            let _ = query.reply.send(Err(error.clone()));
        }
        self.emit(Event::Stopped { code }).await;
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records a command; it is sent when a connection is up. One arm per command, so
    /// slightly over ~60 lines.
    fn accept(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                room,
                since,
                presence,
                forms: (delta, compress),
                reply,
            } => {
                if self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(ClientError::Server {
                        code: crate::protocol::ErrorCode::AlreadySubscribed,
                        message: format!("already subscribed to {room}"),
                    }));
                    return;
                }
                self.rooms.insert(
                    room,
                    Room {
                        position: since,
                        reply: Some(reply),
                        request_id: None,
                        resend_at: Instant::now(),
                        active_once: false,
                        presence,
                        delta,
                        compress,
                        base: None,
                        resubscribe: Resubscribe::No,
                    },
                );
            }
            Command::Query { room, stats, reply } => {
                let id = self.id();
                self.queries.insert(
                    id,
                    Query {
                        room,
                        stats,
                        reply,
                        deadline: Instant::now() + self.config.request_timeout,
                        resend_at: Some(Instant::now()),
                    },
                );
            }
            Command::Publish {
                room,
                data,
                key,
                reply,
            } => {
                let id = self.id();
                self.publishes.insert(
                    id,
                    Publish {
                        room,
                        data,
                        key,
                        reply,
                        deadline: Instant::now() + self.config.request_timeout,
                        resend_at: Some(Instant::now()),
                    },
                );
            }
            Command::DropConnection | Command::Stop => {}
        }
    }

    /// Fails requests whose deadline passed.
    fn expire_requests(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .publishes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(publish) = self.publishes.remove(&id) {
                let _ = publish.reply.send(Err(ClientError::Timeout));
            }
        }
        let expired: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(query) = self.queries.remove(&id) {
                let _ = query.reply.send(Err(ClientError::Timeout));
            }
        }
    }

    async fn session(
        &mut self,
        connection: &mut Link,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> SessionEnd {
        // Everything in flight on the previous connection is sent again.
        for room in self.rooms.values_mut() {
            room.request_id = None;
            room.resend_at = Instant::now();
            // A new connection has no subscription to end first.
            if room.resubscribe == Resubscribe::Due {
                room.resubscribe = Resubscribe::Sent;
            }
        }
        for publish in self.publishes.values_mut() {
            publish.resend_at = Some(Instant::now());
        }
        for query in self.queries.values_mut() {
            query.resend_at = Some(Instant::now());
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.flush_requests(connection).await.is_err() {
                return SessionEnd::Lost(None);
            }
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => return SessionEnd::Stop,
                    Some(Command::DropConnection) => return SessionEnd::Lost(None),
                    Some(command) => { self.accept(command); }
                },
                received = connection.recv() => match received {
                    Ok(Received::Frame(frame)) => self.on_frame(frame).await,
                    Ok(Received::Closed(code)) => return SessionEnd::Lost(code),
                    Err(_) => return SessionEnd::Lost(None),
                },
                // Only publishes have deadlines: an idle client sets no timer (thousands
                // of them in one load generator would otherwise wake up constantly).
                _ = tick.tick(), if !self.publishes.is_empty() || !self.queries.is_empty() => {
                    self.expire_requests()
                }
            }
        }
    }

    /// Sends subscribes and publishes that are due on this connection.
    async fn flush_requests(&mut self, connection: &mut Link) -> Result<(), ClientError> {
        let mut frames = Vec::new();
        let now = Instant::now();
        let mut next_id = self.next_id;
        for (name, room) in self.rooms.iter_mut() {
            if room.request_id.is_none() && room.resend_at <= now {
                if room.resubscribe == Resubscribe::Due {
                    room.resubscribe = Resubscribe::Sent;
                    next_id += 1;
                    frames.push(ClientFrame::Unsubscribe {
                        id: Some(next_id),
                        room: name.clone(),
                    });
                }
                next_id += 1;
                room.request_id = Some(next_id);
                frames.push(ClientFrame::Subscribe {
                    id: Some(next_id),
                    room: name.clone(),
                    since: room.position.clone(),
                    presence: room.presence.0,
                    info: room.presence.1.clone(),
                    delta: room.delta.then_some(DeltaFormat::Fossil),
                    compress: room.compress.then_some(CompressFormat::Deflate),
                });
            }
        }
        self.next_id = next_id;
        for (id, publish) in self.publishes.iter_mut() {
            if publish.resend_at.is_some_and(|at| at <= now) {
                publish.resend_at = None;
                frames.push(ClientFrame::Publish {
                    id: Some(*id),
                    room: publish.room.clone(),
                    data: publish.data.clone(),
                    key: Some(publish.key.clone()),
                });
            }
        }
        for (id, query) in self.queries.iter_mut() {
            if query.resend_at.is_some_and(|at| at <= now) {
                query.resend_at = None;
                let (id, room) = (Some(*id), query.room.clone());
                frames.push(if query.stats {
                    ClientFrame::PresenceStats { id, room }
                } else {
                    ClientFrame::Presence { id, room }
                });
            }
        }
        for frame in frames {
            connection
                .send(&frame)
                .await
                .map_err(|_| ClientError::Closed(None))?;
        }
        Ok(())
    }

    /// Handles one server frame. One arm per frame kind, most a few lines: it runs
    /// past ~60 lines because every pattern spells out its fields.
    async fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Message {
                room,
                epoch,
                seq,
                time,
                data,
                delta,
                compressed,
            } => {
                let position = Position::new(epoch.clone(), seq);
                let data = match self.rooms.get_mut(&room) {
                    Some(tracked) => match tracked.receive(&position, data, (delta, compressed)) {
                        Some(data) => {
                            tracked.position = Some(position);
                            data
                        }
                        None => return,
                    },
                    None => data,
                };
                self.emit(Event::Message {
                    room,
                    epoch,
                    seq,
                    time_ms: time,
                    data,
                })
                .await;
            }
            ServerFrame::Subscribed {
                room,
                epoch,
                seq,
                recovered,
                replayed,
                ..
            } => {
                self.on_subscribed(room, Position::new(epoch, seq), recovered, replayed)
                    .await
            }
            ServerFrame::Reset {
                room,
                epoch,
                seq,
                reason,
            } => {
                let position = Position::new(epoch, seq);
                if let Some(tracked) = self.rooms.get_mut(&room) {
                    tracked.position = Some(position.clone());
                    tracked.base = None;
                }
                self.emit(Event::Reset {
                    room,
                    position,
                    reason,
                })
                .await;
            }
            ServerFrame::Ack {
                id,
                epoch,
                seq,
                time,
                duplicate,
                ..
            } => {
                let ack = Ack {
                    position: Position::new(epoch, seq),
                    time_ms: time,
                    duplicate,
                };
                if let Some(publish) = id.and_then(|id| self.publishes.remove(&id)) {
                    let _ = publish.reply.send(Ok(ack));
                }
            }
            ServerFrame::Presence { id: Some(id), .. }
            | ServerFrame::PresenceStats { id: Some(id), .. } => {
                if let Some(query) = self.queries.remove(&id) {
                    let _ = query.reply.send(Ok(frame));
                }
            }
            ServerFrame::Presence {
                id: None,
                room,
                clients,
            } => self.emit(Event::Presence { room, clients }).await,
            ServerFrame::PresenceDiff {
                room,
                joins,
                leaves,
            } => {
                self.emit(Event::PresenceDiff {
                    room,
                    joins,
                    leaves,
                })
                .await
            }
            ServerFrame::Error {
                id: Some(id),
                code,
                message,
                ..
            } => self.on_error(id, code, message),
            ServerFrame::Reconnect { hint, .. } => self.hint = hint.into(),
            _ => {}
        }
    }

    /// The server confirmed a subscription: answers whoever asked for it and tells
    /// the application (`resumed` when the room was subscribed before).
    async fn on_subscribed(
        &mut self,
        room: String,
        position: Position,
        recovered: bool,
        replayed: u64,
    ) {
        let Some(tracked) = self.rooms.get_mut(&room) else {
            return;
        };
        // A new subscription: the first message after it comes whole.
        tracked.base = None;
        tracked.resubscribe = Resubscribe::No;
        // With replayed messages still to come, the position advances as they
        // arrive; a connection lost before then must resume from the old one.
        if !(recovered && replayed > 0) {
            tracked.position = Some(position.clone());
        }
        let resumed = tracked.active_once;
        tracked.active_once = true;
        let subscription = Subscription {
            position: position.clone(),
            recovered,
            replayed,
        };
        if let Some(reply) = tracked.reply.take() {
            let _ = reply.send(Ok(subscription));
        }
        self.emit(Event::Subscribed {
            room,
            position,
            recovered,
            replayed,
            resumed,
        })
        .await;
    }

    fn on_error(&mut self, id: u64, code: crate::protocol::ErrorCode, message: String) {
        if let Some(query) = self.queries.get_mut(&id) {
            if code.is_temporary() {
                query.resend_at = Some(Instant::now() + RETRY_DELAY);
            } else if let Some(query) = self.queries.remove(&id) {
                let _ = query.reply.send(Err(ClientError::Server { code, message }));
            }
            return;
        }
        if let Some(publish) = self.publishes.get_mut(&id) {
            if code.is_temporary() {
                publish.resend_at = Some(Instant::now() + RETRY_DELAY);
            } else if let Some(publish) = self.publishes.remove(&id) {
                let _ = publish
                    .reply
                    .send(Err(ClientError::Server { code, message }));
            }
            return;
        }
        let room = self
            .rooms
            .iter()
            .find(|(_, room)| room.request_id == Some(id))
            .map(|(name, _)| name.clone());
        if let Some(name) = room {
            if code.is_temporary() {
                // Subscribe again shortly.
                if let Some(room) = self.rooms.get_mut(&name) {
                    room.request_id = None;
                    room.resend_at = Instant::now() + RETRY_DELAY;
                }
            } else if let Some(room) = self.rooms.remove(&name)
                && let Some(reply) = room.reply
            {
                let _ = reply.send(Err(ClientError::Server { code, message }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fossil;
    use crate::stream::Epoch;

    fn room() -> Room {
        Room {
            position: None,
            reply: None,
            request_id: Some(1),
            resend_at: Instant::now(),
            active_once: true,
            presence: (false, None),
            delta: true,
            compress: true,
            base: None,
            resubscribe: Resubscribe::No,
        }
    }

    fn at(seq: u64) -> Position {
        Position::new(Epoch::new("e"), seq)
    }

    #[tokio::test]
    async fn deltas_rebuild_values_and_a_missing_base_starts_a_resubscribe() {
        let first = r#"{"id":1,"status":"open","title":"a title long enough to be copied"}"#;
        let second = r#"{"id":1,"status":"done","title":"a title long enough to be copied"}"#;
        let delta = String::from_utf8(fossil::create(first.as_bytes(), second.as_bytes())).unwrap();
        let mut room = room();
        let text = |t: &str| Value::from(t);
        assert_eq!(
            room.receive(&at(1), text(first), (Some(false), false)),
            Some(serde_json::from_str(first).unwrap())
        );
        assert_eq!(
            room.receive(&at(2), text(&delta), (Some(true), false)),
            Some(serde_json::from_str(second).unwrap())
        );
        // seq 3 never arrived: the delta of seq 4 has no base.
        assert_eq!(
            room.receive(&at(4), text(&delta), (Some(true), false)),
            None
        );
        assert_eq!(room.resubscribe, Resubscribe::Due);
        assert_eq!(
            room.request_id, None,
            "a subscribe is due on this connection"
        );
        // Until the new `subscribed`, the room's messages are dropped, whole ones too.
        assert_eq!(
            room.receive(&at(5), text(second), (Some(false), false)),
            None
        );
        // A delta applied to the wrong text fails its checksum instead of delivering.
        let mut other = self::room();
        let unrelated =
            r#"{"id":9,"status":"open","title":"not the text the delta was made from"}"#;
        other.receive(&at(1), text(unrelated), (Some(false), false));
        assert_eq!(
            other.receive(&at(2), text(&delta), (Some(true), false)),
            None
        );
        assert_eq!(other.resubscribe, Resubscribe::Due);
        // Subscriptions without delta pass values through untouched.
        let mut plain = self::room();
        plain.delta = false;
        assert_eq!(
            plain.receive(&at(1), text("x"), (None, false)),
            Some(text("x"))
        );
    }

    #[tokio::test]
    async fn compressed_data_inflates_and_corrupt_data_starts_a_resubscribe() {
        use crate::protocol::compress;
        let value = serde_json::json!({"body": "a paragraph written again ".repeat(80)});
        let json = value.to_string();
        let packed = Value::from(compress::pack(&json, 1024).unwrap());
        let mut plain = room();
        plain.delta = false;
        assert_eq!(
            plain.receive(&at(1), packed.clone(), (None, true)),
            Some(value.clone())
        );
        // On a delta subscription the inflated text is the JSON text (or the delta).
        let mut texts = room();
        assert_eq!(
            texts.receive(&at(1), packed, (Some(false), true)),
            Some(value)
        );
        assert_eq!(
            texts.base.as_ref().map(|(_, text)| text.as_str()),
            Some(json.as_str())
        );
        assert_eq!(
            plain.receive(&at(2), Value::from("@@not base64"), (None, true)),
            None
        );
        assert_eq!(plain.resubscribe, Resubscribe::Due);
    }

    #[tokio::test]
    async fn a_ca_file_that_does_not_load_stops_the_client_saying_why() {
        use crate::client::{Client, ClientConfig};
        let missing =
            std::env::temp_dir().join(format!("roomcast-no-such-ca-{}.pem", std::process::id()));
        let mut config = ClientConfig::new("wss://127.0.0.1:9/ws");
        config.tls_ca_file = Some(missing);
        let (client, mut events) = Client::start(config);
        // Asked before the session task first runs (a current-thread runtime): answered
        // with the reason, not left to time out.
        let error = client
            .publish("room", serde_json::json!(1), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Connect(why) if why.contains("roomcast-no-such-ca")),
            "{error:?}"
        );
        let stopped = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
        assert!(
            matches!(stopped, Ok(Some(Event::Stopped { code: None }))),
            "{stopped:?}"
        );
    }
}
