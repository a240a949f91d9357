//! The socket task of one connection: the only code that touches the WebSocket.
//!
//! It reads client frames and casts them to the connection actor (at most
//! `INBOUND_IN_FLIGHT` waiting, so a client that floods stops being read instead of
//! growing a mailbox), writes the outbound queue in batches (one flush for all frames
//! queued at that moment), pings the client, and closes the socket when asked by the
//! close signal (which the connection actor also raises when it stops or fails), or when
//! the client goes away.
//!
//! This loop turns once per delivery, so a turn does little: no allocation for a write,
//! no future built for a disabled branch, and no watch on the actor's task (the actor's
//! end arrives as a close request instead).

use super::actor::{ConnectionMsg, ConnectionRef};
use crate::outbound::{Item, OutboundReceiver, Received};
use crate::protocol::CloseCode;
use crate::transport::websocket;
use futures_util::{Sink, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Client frames read but not yet handled by the actor, per connection.
const INBOUND_IN_FLIGHT: usize = 16;
/// How long a connection with `coalesce_writes` waits for more frames before writing.
const COALESCE_WINDOW: Duration = Duration::from_millis(2);
/// Longest wait for a close frame to be written to a client that may not be reading,
/// and for its close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client sent a close frame (answered by tungstenite).
    ClientClosed,
    /// The socket failed or reached EOF; nothing more can be sent.
    Gone,
}

/// Runs the connection until it ends; returns how it ended.
pub async fn pump<S>(
    ws: &mut WebSocketStream<S>,
    actor: &ConnectionRef,
    outbound: &mut OutboundReceiver,
    heartbeat: Duration,
    coalesce: bool,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let permits = Arc::new(Semaphore::new(INBOUND_IN_FLIGHT));
    // The permit the next inbound frame will carry. Held across loop turns, so that
    // writing outbound frames (the hot path) does not take and return one each time.
    let mut inbound_permit = permits.clone().try_acquire_owned().ok();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            received = outbound.recv(&mut batch) => {
                if let Received::Close(code) = received {
                    return Ending::Close(code);
                }
                if coalesce {
                    // Feature flag `coalesce_writes`: let more frames join this write.
                    Box::pin(tokio::time::sleep(COALESCE_WINDOW)).await;
                    outbound.take_more(&mut batch);
                }
                let mut closing = None;
                tokio::select! {
                    biased;
                    code = outbound.close_requested() => return Ending::Close(code),
                    written = poll_fn(|cx| poll_write(ws, &mut batch, &mut closing, cx)) => {
                        match (written, closing) {
                            (Err(_), _) => return Ending::Gone,
                            (Ok(()), Some(code)) => return Ending::Close(code),
                            (Ok(()), None) => {}
                        }
                    }
                }
                // Idle connections should own no queue buffer.
                batch = VecDeque::new();
            }
            // select! builds every branch's future each turn, enabled or not: the async
            // block makes that free, the semaphore is touched only when it is polled.
            permit = async { permits.clone().acquire_owned().await }, if inbound_permit.is_none() => {
                inbound_permit = Some(permit.expect("never closed"));
            }
            inbound = ws.next(), if inbound_permit.is_some() => {
                last_heard = Instant::now();
                match inbound {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        let Some(frame) = websocket::encoded(message) else {
                            return Ending::Close(CloseCode::ProtocolError);
                        };
                        let permit = inbound_permit.take().expect("branch guard");
                        if actor.cast(ConnectionMsg::Inbound(frame, permit)).is_err() {
                            return Ending::Close(CloseCode::InternalError);
                        }
                        inbound_permit = permits.clone().try_acquire_owned().ok();
                    }
                    // tungstenite answers pings itself; pongs only prove liveness.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => return Ending::ClientClosed,
                    Some(Err(err)) => return classify(err),
                    None => return Ending::Gone,
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() >= heartbeat * 2 {
                    return Ending::Close(CloseCode::HeartbeatTimeout);
                }
                let ping = tokio::time::timeout(heartbeat, ws.send(Message::Ping(Default::default())));
                if !matches!(Box::pin(ping).await, Ok(Ok(()))) {
                    return Ending::Gone;
                }
            }
        }
    }
}

/// Writes every queued item, then flushes once: a client with many frames queued costs
/// one socket write, not one per frame. A queued [`Item::Close`] ends the batch and is
/// reported in `closing`. What is not written yet stays at the front of `batch`, so the
/// next poll goes on where this one stopped; the state lives in the caller, and a write
/// needs no future of its own (nor an allocation to keep idle tasks small).
fn poll_write<S>(
    ws: &mut WebSocketStream<S>,
    batch: &mut VecDeque<Item>,
    closing: &mut Option<CloseCode>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = Pin::new(ws);
    while let Some(item) = batch.pop_front() {
        match item {
            Item::Frame(frame) => match ws.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => ws.as_mut().start_send(websocket::message(frame))?,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    batch.push_front(Item::Frame(frame));
                    return Poll::Pending;
                }
            },
            Item::Batch(frames) => {
                for frame in frames.into_iter().rev() {
                    batch.push_front(Item::Frame(frame));
                }
            }
            Item::Close(code) => {
                *closing = Some(code);
                batch.clear();
            }
        }
    }
    ws.poll_flush(cx)
}

/// Maps a read error to how the connection ends.
fn classify(err: WsError) -> Ending {
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Ending::Close(CloseCode::MessageTooBig)
        }
        WsError::Capacity(_) => Ending::Close(CloseCode::MessageTooBig),
        WsError::Protocol(_) | WsError::Utf8(_) => Ending::Close(CloseCode::ProtocolError),
        _ => Ending::Gone,
    }
}

/// Finishes the WebSocket according to `ending`, never waiting long on a client that
/// does not read.
pub async fn finish<S>(ws: &mut WebSocketStream<S>, ending: Ending)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match ending {
        Ending::Close(code) => {
            let frame = CloseFrame {
                code: code.number().into(),
                reason: code.reason().into(),
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                if ws.close(Some(frame)).await.is_ok() {
                    // Read (and drop) what the client still sends until its close reply:
                    // closing a socket with unread input makes the kernel reset it, and
                    // a reset can reach the client before our close frame does (it would
                    // see 1006 instead of, say, the 1012 of a drain).
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
