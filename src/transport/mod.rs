//! Transport adapters: how frames of the session core reach a client and come back. The
//! session core ([`crate::connection`]) is written against the [`Transport`] trait and
//! knows nothing of WebSocket or Server-Sent Events; each adapter turns the codec's
//! [`Encoded`] frames into its own frame type and back. The session's guarantees
//! (subscriptions, positions, publish/ack, limits, the outbound queue) live once, in the
//! core.
//!
//! - [`websocket`]: one WebSocket per client; frames both ways on the socket.
//! - [`sse`]: Server-Sent Events; server frames as events of one streaming HTTP
//!   response, client frames over `POST`s handed to the session's [`Inbox`].

pub mod sse;
pub mod websocket;

use crate::outbound::OutboundReceiver;
use crate::protocol::{CloseCode, Encoded};
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client closed (a WebSocket close frame, answered by the transport).
    ClientClosed,
    /// The connection failed or reached EOF; nothing more can be sent.
    Gone,
}

impl Ending {
    /// The metrics label of this ending (`reason` of `roomcast_connections_closed_total`).
    pub fn name(self) -> &'static str {
        match self {
            Ending::Close(code) => code.reason(),
            Ending::ClientClosed => "client_closed",
            Ending::Gone => "gone",
        }
    }
}

/// The client can no longer be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// What a transport read from its client.
#[derive(Debug)]
pub enum Inbound {
    /// A client frame for the session core.
    Frame(Encoded),
    /// Something that only proves the client is alive (a pong).
    Heard,
    /// The connection ends.
    End(Ending),
}

/// One client connection's I/O, as the session core's pump drives it.
///
/// Writing is sink-like so that a batch costs one flush: the pump calls
/// [`Transport::poll_ready`] and [`Transport::start_send`] for every queued frame, then
/// [`Transport::poll_flush`] once. Nothing here is boxed or allocated per frame by the
/// core; what a frame costs is the adapter's business.
pub trait Transport: Send + Unpin {
    /// The transport's name, as the `transport` label of the connection metrics.
    const NAME: &'static str;
    /// Whether the client answers the heartbeat (a WebSocket pong): a client silent for
    /// two heartbeats is then closed with 4001. Transports whose client cannot answer
    /// (Server-Sent Events) only send the heartbeat, to keep proxies from timing out.
    const PINGS: bool;

    /// Ready to take one more frame.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>>;
    /// Takes one frame (after [`Transport::poll_ready`] said yes).
    fn start_send(&mut self, frame: Encoded) -> Result<(), Gone>;
    /// Writes out everything taken.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>>;
    /// The next thing read from the client. Must be cancel-safe: the pump polls it in a
    /// `select!` and drops it when something else is ready first.
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
    /// Sends one heartbeat (a ping, or a comment line), giving up after `within`.
    fn heartbeat(&mut self, within: Duration) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Ends the connection according to `ending`, never waiting long on a client that
    /// does not read.
    fn close(&mut self, ending: Ending) -> impl Future<Output = ()> + Send;
    /// Called once before the pump starts: a transport whose socket producers can write
    /// to themselves (a plain-TCP WebSocket) links it to the connection's queue here
    /// (see [`crate::outbound`], the direct path). Others do nothing.
    fn attach(&mut self, _outbound: &OutboundReceiver) {}
    /// Where frames that reach this session by other paths (the `POST`s of Server-Sent
    /// Events) are handed in; `None` when the client sends on the connection itself.
    fn inbox(&self) -> Option<Inbox> {
        None
    }
}

/// Hands client frames that arrived outside the connection (a `POST` of the session) to
/// its transport, which passes them to the pump like frames it read itself — in order,
/// under the same in-flight bound.
#[derive(Debug, Clone)]
pub struct Inbox(mpsc::Sender<Encoded>);

impl Inbox {
    /// Frames posted but not yet taken by the pump, per session.
    const CAPACITY: usize = 16;

    /// An inbox and the receiver its transport reads.
    pub fn channel() -> (Inbox, mpsc::Receiver<Encoded>) {
        let (sender, receiver) = mpsc::channel(Self::CAPACITY);
        (Inbox(sender), receiver)
    }

    /// Hands `frames` in, in order, waiting while the session is behind. False when the
    /// session has ended.
    pub async fn post(&self, frames: impl IntoIterator<Item = Encoded>) -> bool {
        for frame in frames {
            if self.0.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }
}
