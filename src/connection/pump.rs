//! The pump of one connection: the only code of the session core that touches its
//! transport (see [`crate::transport::Transport`]), generic over it so that each
//! transport gets its own, unboxed copy.
//!
//! It reads client frames and casts them to the connection actor (at most
//! `INBOUND_IN_FLIGHT` waiting, so a client that floods stops being read instead of
//! growing a mailbox), writes the outbound queue in batches (one flush for all frames
//! queued at that moment), sends heartbeats, and ends the connection when asked by the
//! close signal (which the connection actor also raises when it stops or fails), or when
//! the client goes away.
//!
//! On a plain-TCP WebSocket the pump first opens the direct path
//! ([`crate::outbound`]): while it waits here with nothing queued, rooms write their
//! deliveries to the socket themselves and the loop does not turn for them. Elsewhere
//! (TLS, Server-Sent Events, and for what queues up behind a slow socket) it turns once
//! per delivery, so a turn does little: no allocation for a write, no future built for a
//! disabled branch, and no watch on the actor's task (the actor's end arrives as a close
//! request instead).

use super::actor::{ConnectionMsg, ConnectionRef};
use super::heartbeat::Schedule;
use crate::outbound::{Item, Items, OutboundReceiver, Received};
use crate::protocol::CloseCode;
use crate::transport::{Ending, Gone, Inbound, Transport};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Client frames read but not yet handled by the actor, per connection.
const INBOUND_IN_FLIGHT: usize = 16;
/// How long a connection with `coalesce_writes` waits for more frames before writing.
const COALESCE_WINDOW: Duration = Duration::from_millis(2);

/// Runs the connection until it ends; returns how it ended.
pub async fn pump<T: Transport>(
    transport: &mut T,
    actor: &ConnectionRef,
    outbound: &mut OutboundReceiver,
    heartbeat: &Schedule,
    coalesce: bool,
) -> Ending {
    // Coalescing waits for more frames before writing; a direct write would not wait.
    if !coalesce {
        transport.attach(outbound);
    }
    let ending = run(transport, actor, outbound, heartbeat, coalesce).await;
    // What the ending writes (a close frame) comes after anything a producer wrote.
    outbound.unpark();
    ending
}

async fn run<T: Transport>(
    transport: &mut T,
    actor: &ConnectionRef,
    outbound: &mut OutboundReceiver,
    heartbeat: &Schedule,
    coalesce: bool,
) -> Ending {
    let (mut beat, heartbeat) = (heartbeat.beat(), heartbeat.period());
    let permits = Arc::new(Semaphore::new(INBOUND_IN_FLIGHT));
    // The permit the next inbound frame will carry. Held across loop turns, so that
    // writing outbound frames (the hot path) does not take and return one each time.
    let mut inbound_permit = permits.clone().try_acquire_owned().ok();
    let mut last_heard = Instant::now();
    let mut batch = Items::default();
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
                    written = poll_fn(|cx| poll_write(transport, &mut batch, &mut closing, cx)) => {
                        match (written, closing) {
                            (Err(Gone), _) => return Ending::Gone,
                            (Ok(()), Some(code)) => return Ending::Close(code),
                            (Ok(()), None) => {}
                        }
                    }
                }
                // Idle connections should own no queue buffer.
                batch = Items::default();
            }
            // select! builds every branch's future each turn, enabled or not: the async
            // block makes that free, the semaphore is touched only when it is polled.
            permit = async { permits.clone().acquire_owned().await }, if inbound_permit.is_none() => {
                inbound_permit = Some(permit.expect("never closed"));
            }
            inbound = transport.next(), if inbound_permit.is_some() => {
                last_heard = Instant::now();
                match inbound {
                    Inbound::Frame(frame) => {
                        let permit = inbound_permit.take().expect("branch guard");
                        if actor.cast(ConnectionMsg::Inbound(frame, permit)).is_err() {
                            return Ending::Close(CloseCode::InternalError);
                        }
                        inbound_permit = permits.clone().try_acquire_owned().ok();
                    }
                    Inbound::Heard => {}
                    Inbound::End(ending) => return ending,
                }
            }
            () = poll_fn(|cx| beat.poll(cx)) => {
                if T::PINGS && last_heard.elapsed() >= heartbeat * 2 {
                    return Ending::Close(CloseCode::HeartbeatTimeout);
                }
                if Box::pin(transport.heartbeat(heartbeat)).await.is_err() {
                    return Ending::Gone;
                }
            }
        }
    }
}

/// Writes every queued item, then flushes once: a client with many frames queued costs
/// one write, not one per frame. A queued [`Item::Close`] ends the batch and is reported
/// in `closing`. What is not written yet stays at the front of `batch`, so the next poll
/// goes on where this one stopped; the state lives in the caller, and a write needs no
/// future of its own (nor an allocation to keep idle tasks small).
fn poll_write<T: Transport>(
    transport: &mut T,
    batch: &mut Items,
    closing: &mut Option<CloseCode>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Gone>> {
    while let Some(item) = batch.pop_front() {
        match item {
            Item::Frame(frame) => match transport.poll_ready(cx) {
                Poll::Ready(Ok(())) => transport.start_send(frame)?,
                Poll::Ready(Err(gone)) => return Poll::Ready(Err(gone)),
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
    transport.poll_flush(cx)
}
