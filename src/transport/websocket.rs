//! WebSocket: encoded frames as WebSocket messages (JSON as text, MessagePack as binary),
//! and the WebSocket adapter of the session core.

use super::{Ending, Gone, Inbound, Transport};
use crate::outbound::{OutboundReceiver, WireStream};
use crate::protocol::{CloseCode, Encoded};
use futures_util::{Sink, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

/// Longest wait for a close frame to be written to a client that may not be reading,
/// and for its close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The WebSocket message carrying `frame`. Shares the frame's bytes (no copy).
pub fn message(frame: Encoded) -> Message {
    match frame {
        // SAFETY: `Text` holds valid UTF-8 by construction (it is built only from a
        // `String`, a `&str` or checked bytes), which is all `Utf8Bytes` requires.
        Encoded::Text(text) => {
            Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(text.into_bytes()) })
        }
        Encoded::Binary(bytes) => Message::Binary(bytes),
    }
}

/// The frame a WebSocket data message carries; `None` for control messages (ping, pong,
/// close). Shares the message's bytes (no copy).
pub fn encoded(message: Message) -> Option<Encoded> {
    match message {
        Message::Text(text) => Some(Encoded::Text(
            crate::protocol::Text::try_from(bytes::Bytes::from(text)).ok()?,
        )),
        Message::Binary(bytes) => Some(Encoded::Binary(bytes)),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
    }
}

/// WebSocket buffers sized for many mostly idle connections: tungstenite's defaults
/// (128 KiB read buffer allocated up front per socket, unbounded write buffer) would cost
/// far more than the rest of a connection.
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES.max(max_frame_bytes * 2))
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Initial read buffer per socket; it grows for a larger frame. Client frames are
/// mostly small, and an idle connection should cost little.
const READ_BUFFER_BYTES: usize = 256;
/// Frames are buffered up to this size before a socket write (a flush always writes).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Hard bound on buffered outgoing bytes per socket.
const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// The stream under a WebSocket: the plain TCP socket taken over from the HTTP server
/// ([`WireStream`], which has the direct path), or hyper's upgraded stream (TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// Opens the direct path to the connection's queue, where the stream has one.
    fn attach(&mut self, _outbound: &OutboundReceiver) {}
}

impl Io for WireStream {
    fn attach(&mut self, outbound: &OutboundReceiver) {
        WireStream::attach(self, outbound);
    }
}

impl Io for TokioIo<Upgraded> {}

/// One upgraded WebSocket connection, as a [`Transport`].
pub struct WebSocket<S> {
    ws: WebSocketStream<S>,
}

impl<S: Io> WebSocket<S> {
    /// The server side of an upgraded connection.
    pub async fn accept(io: S, config: WebSocketConfig) -> Self {
        WebSocket {
            ws: WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await,
        }
    }
}

impl<S: Io> Transport for WebSocket<S> {
    const NAME: &'static str = "websocket";
    const PINGS: bool = true;

    fn attach(&mut self, outbound: &OutboundReceiver) {
        self.ws.get_mut().attach(outbound);
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Pin::new(&mut self.ws).poll_ready(cx).map_err(|_| Gone)
    }

    fn start_send(&mut self, frame: Encoded) -> Result<(), Gone> {
        Pin::new(&mut self.ws)
            .start_send(message(frame))
            .map_err(|_| Gone)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(|_| Gone)
    }

    async fn next(&mut self) -> Inbound {
        match self.ws.next().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => match encoded(message) {
                Some(frame) => Inbound::Frame(frame),
                None => Inbound::End(Ending::Close(CloseCode::ProtocolError)),
            },
            // tungstenite answers pings itself; pongs only prove liveness.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Inbound::Heard,
            Some(Ok(Message::Close(_))) => Inbound::End(Ending::ClientClosed),
            Some(Err(err)) => Inbound::End(classify(err)),
            None => Inbound::End(Ending::Gone),
        }
    }

    async fn heartbeat(&mut self, within: Duration) -> Result<(), Gone> {
        let ping = tokio::time::timeout(within, self.ws.send(Message::Ping(Default::default())));
        match ping.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    async fn close(&mut self, ending: Ending) {
        let ws = &mut self.ws;
        match ending {
            Ending::Close(code) => {
                let frame = CloseFrame {
                    code: code.number().into(),
                    reason: code.reason().into(),
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    if ws.close(Some(frame)).await.is_ok() {
                        // Read (and drop) what the client still sends until its close
                        // reply: closing a socket with unread input makes the kernel
                        // reset it, and a reset can reach the client before our close
                        // frame does (it would see 1006 instead of, say, the 1012 of a
                        // drain).
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
            }
            Ending::ClientClosed => {
                // tungstenite queued the reply to the client's close frame; send it.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            }
            Ending::Gone => {}
        }
    }
}

/// Maps a read error to how the connection ends.
fn classify(err: WsError) -> Ending {
    match err {
        WsError::Capacity(_) => Ending::Close(CloseCode::MessageTooBig),
        WsError::Protocol(_) | WsError::Utf8(_) => Ending::Close(CloseCode::ProtocolError),
        _ => Ending::Gone,
    }
}
