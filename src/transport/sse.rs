//! Server-Sent Events: the session's server frames as events of one streaming HTTP
//! response (`text/event-stream`, JSON encoding), client frames posted to the session
//! and handed in through its [`Inbox`].
//!
//! Every event is one server frame, exactly as a WebSocket text frame carries it, in a
//! single `data:` line (compact JSON has no raw line breaks). Events that move the
//! connection's position in a room (`subscribed`, `message`, `reset`, `unsubscribed`)
//! carry an `id:` that lists the position of every subscribed room ([`Positions`]): the
//! browser's `EventSource` sends the last one back as `Last-Event-ID` when it reconnects,
//! and the server resumes every room from it, exactly as a WebSocket client's
//! `subscribe` with `since` does. A comment line (`:`) is the heartbeat; the stream
//! ends with a `close` event (`{"type":"close","code":…,"reason":…}`) when the server
//! closes the session.
//!
//! The stream's own subscribes (of `rooms` and of the resumed ones) ask for the forms
//! the stream was opened with (`delta`, `compress`), and carry ids from [`OWN_IDS`] up:
//! a room one of them is refused for good (a `1xx` error: no longer readable, say)
//! leaves the positions, so the next reconnect does not ask for it again.

use super::{Ending, Gone, Inbound, Inbox, Transport};
use crate::protocol::{ClientFrame, CompressFormat, DeltaFormat, Encoded, Encoding};
use crate::stream::{Epoch, Position};
use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Bytes gathered before a write is forced (a flush always writes).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Chunks handed to the HTTP response but not yet written to the socket.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Longest wait for the close event to be taken by a client that may not be reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// What `EventSource` waits before it reconnects (the `retry:` field), in milliseconds.
pub const RETRY_MS: u64 = 1000;
/// The first id of the stream's own subscribes (2^52: exact in a JavaScript number, and
/// far above the ids clients count up from 1).
pub const OWN_IDS: u64 = 1 << 52;

/// The forms a stream's subscriptions ask for (the `delta` and `compress` query
/// parameters of `GET /sse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamForms {
    /// Messages as deltas.
    pub delta: Option<DeltaFormat>,
    /// Large messages compressed.
    pub compress: Option<CompressFormat>,
}

/// One Server-Sent Events session, as a [`Transport`].
pub struct EventStream {
    buffer: BytesMut,
    chunks: PollSender<Bytes>,
    /// Resolves when the response is gone (the client went away).
    gone: mpsc::Sender<Bytes>,
    /// Frames the session starts with (the subscribes of `rooms` and `Last-Event-ID`).
    first: VecDeque<Encoded>,
    inbox: Inbox,
    posted: mpsc::Receiver<Encoded>,
    positions: Positions,
    /// The rooms of the stream's own subscribes still unanswered, by request id.
    own: HashMap<u64, String>,
}

/// The streaming body of the response that carries an [`EventStream`].
pub type EventBody = http_body_util::StreamBody<
    futures_util::stream::PollFn<
        Box<
            dyn FnMut(
                    &mut Context<'_>,
                )
                    -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>>
                + Send
                + Sync,
        >,
    >,
>;

impl EventStream {
    /// A session that starts by subscribing to `rooms`, each from its position in
    /// `resume` when it has one (a reconnect), all in `forms`, and the response body
    /// that carries it.
    pub fn open(
        rooms: &[String],
        resume: Positions,
        forms: StreamForms,
    ) -> (EventStream, EventBody) {
        let (sender, mut receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let next: Box<dyn FnMut(&mut Context<'_>) -> _ + Send + Sync> =
            Box::new(move |cx: &mut Context<'_>| {
                receiver
                    .poll_recv(cx)
                    .map(|chunk| chunk.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
            });
        let body = http_body_util::StreamBody::new(futures_util::stream::poll_fn(next));
        let resumed = resume.iter().map(|(room, at)| (room, Some(at.clone())));
        let fresh = (rooms.iter())
            .filter(|room| resume.get(room).is_none())
            .map(|room| (room.as_str(), None));
        let mut first = VecDeque::new();
        let mut own = HashMap::new();
        for (id, (room, since)) in (OWN_IDS..).zip(resumed.chain(fresh)) {
            first.push_back(subscribe(id, room, since, forms));
            own.insert(id, room.to_owned());
        }
        let (inbox, posted) = Inbox::channel();
        let mut buffer = BytesMut::new();
        buffer.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
        let stream = EventStream {
            buffer,
            chunks: PollSender::new(sender.clone()),
            gone: sender,
            first,
            inbox,
            posted,
            positions: resume,
            own,
        };
        (stream, body)
    }

    /// Appends one event carrying `frame`.
    fn event(&mut self, frame: &str) {
        let moved = match serde_json::from_str::<Head<'_>>(frame) {
            Ok(head) => self.answered(&head) || self.positions.follow_head(&head),
            Err(_) => false,
        };
        if moved {
            self.buffer.put_slice(b"id: ");
            self.positions.write(&mut self.buffer);
            self.buffer.put_u8(b'\n');
        }
        for line in frame.split('\n') {
            self.buffer.put_slice(b"data: ");
            self.buffer
                .put_slice(line.trim_end_matches('\r').as_bytes());
            self.buffer.put_u8(b'\n');
        }
        self.buffer.put_u8(b'\n');
    }

    /// Notes the answer to one of the stream's own subscribes; true when it refused a
    /// room for good, which then leaves the positions (and the next event id).
    fn answered(&mut self, head: &Head<'_>) -> bool {
        let Some(room) = head.id.and_then(|id| self.own.remove(&id)) else {
            return false;
        };
        let refused = head.kind == "error" && head.code.is_some_and(|code| code < 200);
        refused && self.positions.0.remove(&room).is_some()
    }
}

/// A `subscribe` client frame of the stream's own.
fn subscribe(id: u64, room: &str, since: Option<Position>, forms: StreamForms) -> Encoded {
    Encoding::Json.encode(&ClientFrame::Subscribe {
        id: Some(id),
        room: room.to_owned(),
        since,
        presence: false,
        info: None,
        delta: forms.delta,
        compress: forms.compress,
    })
}

impl Transport for EventStream {
    const NAME: &'static str = "sse";
    const PINGS: bool = false;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            return self.poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Encoded) -> Result<(), Gone> {
        // The session of a Server-Sent Events client is always JSON.
        match frame.as_text() {
            Some(text) => self.event(text),
            None => debug_assert!(false, "binary frame on a JSON-only transport"),
        }
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        if self.buffer.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.chunks.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                let chunk = self.buffer.split().freeze();
                Poll::Ready(self.chunks.send_item(chunk).map_err(|_| Gone))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(Gone)),
            Poll::Pending => Poll::Pending,
        }
    }

    async fn next(&mut self) -> Inbound {
        if let Some(frame) = self.first.pop_front() {
            return Inbound::Frame(frame);
        }
        tokio::select! {
            // Never `None`: this stream holds a sender of its own inbox.
            Some(frame) = self.posted.recv() => Inbound::Frame(frame),
            () = self.gone.closed() => Inbound::End(Ending::Gone),
        }
    }

    async fn heartbeat(&mut self, within: Duration) -> Result<(), Gone> {
        self.buffer.put_slice(b":\n\n");
        match tokio::time::timeout(within, poll_fn(|cx| self.poll_flush(cx))).await {
            Ok(result) => result,
            Err(_) => Err(Gone),
        }
    }

    async fn close(&mut self, ending: Ending) {
        if let Ending::Close(code) = ending {
            let frame = serde_json::json!({
                "type": "close",
                "code": code.number(),
                "reason": code.reason(),
            });
            self.event(&frame.to_string());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| self.poll_flush(cx))).await;
        }
        // Dropping the senders ends the response.
        self.chunks.close();
    }

    fn inbox(&self) -> Option<Inbox> {
        Some(self.inbox.clone())
    }
}

/// The positions of a session in its rooms, as an event id.
///
/// Format (`roomcast.v1`): entries separated by `,`, sorted by room; an entry is
/// `room~epoch~seq` with `seq` in base 36; an epoch equal to the previous entry's is left
/// empty; `%`, `,`, `~` and bytes outside printable ASCII in a room or epoch are written
/// `%XX`. An empty id means no room. Example:
/// `issue:7~9f2c04e1a7d3b655~2s,project:42~0b1d5e9a33c7f014~rs`.
/// A room costs its name, its epoch (16 characters from the Redis broker) and a few
/// characters of seq: about 35 bytes for a name like `project:42`, so the 128 rooms a
/// connection may hold by default take about 4.5 KiB, below the 8 KiB of request
/// headers proxies commonly accept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, Position>);

/// The fields of a server frame that move a position.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    replayed: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    code: Option<u16>,
}

/// Why an event id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID is not a roomcast event id: {0}")]
pub struct BadEventId(&'static str);

impl Positions {
    /// The positions, by room.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Position)> {
        self.0
            .iter()
            .map(|(room, position)| (room.as_str(), position))
    }

    /// The position in `room`.
    pub fn get(&self, room: &str) -> Option<&Position> {
        self.0.get(room)
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without rooms.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves the positions by a server frame; true when they changed (the event then
    /// carries the new id).
    ///
    /// A `subscribed` frame is followed by `replayed` messages that end at its `seq`, so
    /// the position it stands for is `seq - replayed`: a client that goes away during
    /// the replay resumes where the replay had brought it.
    pub fn follow(&mut self, frame: &str) -> bool {
        serde_json::from_str::<Head<'_>>(frame).is_ok_and(|head| self.follow_head(&head))
    }

    fn follow_head(&mut self, head: &Head<'_>) -> bool {
        let Some(room) = &head.room else {
            return false;
        };
        let at = |seq: u64| {
            head.epoch
                .as_deref()
                .map(|epoch| Position::new(Epoch::new(epoch), seq))
        };
        let position = match (&*head.kind, head.seq) {
            ("message" | "reset", Some(seq)) => at(seq),
            ("subscribed", Some(seq)) => at(seq.saturating_sub(head.replayed.unwrap_or(0))),
            ("unsubscribed", _) => return self.0.remove(&**room).is_some(),
            _ => None,
        };
        match position {
            Some(position) if self.0.get(&**room) != Some(&position) => {
                self.0.insert(room.to_string(), position);
                true
            }
            _ => false,
        }
    }

    /// Writes the id (see the type's documentation).
    pub fn write(&self, out: &mut BytesMut) {
        let mut previous: Option<&Epoch> = None;
        for (i, (room, position)) in self.0.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            escape(room, out);
            out.put_u8(b'~');
            if previous != Some(&position.epoch) {
                escape(position.epoch.as_str(), out);
            }
            out.put_u8(b'~');
            out.put_slice(base36(position.seq).as_bytes());
            previous = Some(&position.epoch);
        }
    }

    /// The id as a string.
    pub fn to_id(&self) -> String {
        let mut out = BytesMut::new();
        self.write(&mut out);
        String::from_utf8(out.to_vec()).expect("ids are ASCII")
    }

    /// Reads an id (a `Last-Event-ID`); an empty one means no rooms.
    pub fn parse(id: &str) -> Result<Positions, BadEventId> {
        let mut positions = BTreeMap::new();
        let mut previous: Option<Epoch> = None;
        for entry in id.split(',').filter(|entry| !entry.is_empty()) {
            let mut fields = entry.split('~');
            let (Some(room), Some(epoch), Some(seq), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(BadEventId("an entry is not room~epoch~seq"));
            };
            let room = unescape(room).ok_or(BadEventId("bad escape in a room"))?;
            let epoch = if epoch.is_empty() {
                previous
                    .clone()
                    .ok_or(BadEventId("the first entry has no epoch"))?
            } else {
                Epoch::new(unescape(epoch).ok_or(BadEventId("bad escape in an epoch"))?)
            };
            let seq = u64::from_str_radix(seq, 36).map_err(|_| BadEventId("bad seq"))?;
            if room.is_empty() {
                return Err(BadEventId("empty room"));
            }
            previous = Some(epoch.clone());
            positions.insert(room, Position::new(epoch, seq));
        }
        Ok(Positions(positions))
    }
}

fn escape(text: &str, out: &mut BytesMut) {
    for byte in text.bytes() {
        if matches!(byte, b'%' | b',' | b'~') || !(0x21..0x7f).contains(&byte) {
            out.put_slice(format!("%{byte:02X}").as_bytes());
        } else {
            out.put_u8(byte);
        }
    }
}

fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, seq: u64) -> Position {
        Position::new(Epoch::new(epoch), seq)
    }

    #[test]
    fn ids_round_trip_and_share_equal_epochs() {
        let mut positions = Positions::default();
        positions
            .0
            .insert("project:42".into(), at("0b1d5e9a33c7f014", 1000));
        positions
            .0
            .insert("issue:7".into(), at("9f2c04e1a7d3b655", 100));
        positions
            .0
            .insert("odd,~%room".into(), at("9f2c04e1a7d3b655", 0));
        let id = positions.to_id();
        assert_eq!(
            id,
            "issue:7~9f2c04e1a7d3b655~2s,odd%2C%7E%25room~~0,project:42~0b1d5e9a33c7f014~rs"
        );
        assert_eq!(Positions::parse(&id).unwrap(), positions);
        assert!(Positions::parse("").unwrap().is_empty());
        for bad in ["a~b", "a~~1", "a~e~zz!", "a~e~1~x", "%zz~e~1", "~e~1"] {
            assert!(Positions::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_move_positions_and_a_replay_counts_from_its_start() {
        let mut positions = Positions::default();
        assert!(positions.follow(
            r#"{"type":"subscribed","room":"r","epoch":"e","seq":10,"recovered":true,"replayed":3}"#
        ));
        assert_eq!(positions.get("r"), Some(&at("e", 7)));
        assert!(positions.follow(
            r#"{"type":"message","room":"r","epoch":"e","seq":8,"time":1,"data":{"seq":99}}"#
        ));
        assert_eq!(positions.get("r"), Some(&at("e", 8)));
        assert!(!positions.follow(
            r#"{"type":"ack","id":1,"room":"r","epoch":"e","seq":9,"time":1,"duplicate":false}"#
        ));
        assert!(!positions.follow(r#"{"type":"pong"}"#));
        assert!(
            positions.follow(
                r#"{"type":"reset","room":"r","epoch":"f","seq":4,"reason":"epoch_changed"}"#
            )
        );
        assert_eq!(positions.get("r"), Some(&at("f", 4)));
        assert!(positions.follow(r#"{"type":"unsubscribed","room":"r"}"#));
        assert!(positions.is_empty());
    }

    #[tokio::test]
    async fn events_carry_ids_and_the_stream_ends_with_a_close_event() {
        use http_body_util::BodyExt;
        let (mut stream, body) =
            EventStream::open(&["r".into()], Positions::default(), StreamForms::default());
        match stream.next().await {
            Inbound::Frame(frame) => assert_eq!(
                frame.as_text(),
                Some(r#"{"type":"subscribe","id":4503599627370496,"room":"r"}"#)
            ),
            other => panic!("{other:?}"),
        }
        let frames = [
            r#"{"type":"welcome"}"#,
            r#"{"type":"subscribed","room":"r","epoch":"e","seq":0,"recovered":false,"replayed":0}"#,
            r#"{"type":"message","room":"r","epoch":"e","seq":1,"time":1,"data":"a\nb"}"#,
        ];
        for frame in frames {
            poll_fn(|cx| stream.poll_ready(cx)).await.unwrap();
            stream.start_send(Encoded::text(frame)).unwrap();
        }
        poll_fn(|cx| stream.poll_flush(cx)).await.unwrap();
        stream
            .close(Ending::Close(crate::protocol::CloseCode::ServiceRestart))
            .await;
        drop(stream);
        let text = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            concat!(
                "retry: 1000\n\n",
                "data: {\"type\":\"welcome\"}\n\n",
                "id: r~e~0\n",
                "data: {\"type\":\"subscribed\",\"room\":\"r\",\"epoch\":\"e\",\"seq\":0,\"recovered\":false,\"replayed\":0}\n\n",
                "id: r~e~1\n",
                "data: {\"type\":\"message\",\"room\":\"r\",\"epoch\":\"e\",\"seq\":1,\"time\":1,\"data\":\"a\\nb\"}\n\n",
                "data: {\"type\":\"close\",\"code\":1012,\"reason\":\"service_restart\"}\n\n",
            )
        );
    }

    #[tokio::test]
    async fn resumed_rooms_keep_the_forms_and_a_refused_one_leaves_the_id() {
        let resume = Positions::parse("a~e~5,b~~7").unwrap();
        let forms = StreamForms {
            delta: Some(DeltaFormat::Fossil),
            compress: Some(CompressFormat::Deflate),
        };
        let (mut stream, _body) = EventStream::open(&["a".into(), "c".into()], resume, forms);
        let mut subscribes = Vec::new();
        for _ in 0..3 {
            match stream.next().await {
                Inbound::Frame(frame) => subscribes.push(frame.as_text().unwrap().to_owned()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            subscribes,
            [
                r#"{"type":"subscribe","id":4503599627370496,"room":"a","since":{"epoch":"e","seq":5},"delta":"fossil","compress":"deflate"}"#,
                r#"{"type":"subscribe","id":4503599627370497,"room":"b","since":{"epoch":"e","seq":7},"delta":"fossil","compress":"deflate"}"#,
                r#"{"type":"subscribe","id":4503599627370498,"room":"c","delta":"fossil","compress":"deflate"}"#,
            ]
        );
        // `b` is refused for good: it leaves the id. A temporary refusal of `a` keeps it.
        stream.event(r#"{"type":"error","id":4503599627370497,"code":107,"name":"forbidden","message":"no"}"#);
        stream.event(r#"{"type":"error","id":4503599627370496,"code":200,"name":"unavailable","message":"later"}"#);
        // An error of the client's own request never touches the positions.
        stream.event(r#"{"type":"error","id":3,"code":107,"name":"forbidden","message":"no"}"#);
        let text = String::from_utf8(stream.buffer.to_vec()).unwrap();
        let ids: Vec<&str> = text.lines().filter(|l| l.starts_with("id: ")).collect();
        assert_eq!(ids, ["id: a~e~5"]);
        assert_eq!(stream.positions.get("b"), None);
    }
}
