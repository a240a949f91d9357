//! The outbox relay: publishes the events that mutations wrote to the outbox, in commit
//! order, and marks each one only after the broker acknowledged it in every room.
//!
//! A crash between commit and publish loses nothing (the row is still pending at the
//! next start), and a crash between publish and mark repeats nothing: every publish uses
//! the idempotency key `outbox:{row id}:{room}`, kept by the broker as long as the room's
//! epoch lives (not only the clients' dedupe window), so a second publish gets the
//! original ack instead of a second delivery, however late it comes. Several instances
//! on one database may relay the same rows; the keys make that harmless.

use crate::broker::{KeyRetention, PublishRequest};
use crate::protocol::RoomName;
use crate::publish::Publisher;
use crate::store::{OutboxRow, Store, now_ms};
use crate::telemetry::traces;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Rows fetched per round.
const BATCH: i64 = 100;
/// Poll interval when nothing signals new rows (rows of other instances, restarts).
const POLL: Duration = Duration::from_secs(1);

/// Starts the relay; it stops when `stop` is cancelled.
pub fn spawn_relay(
    store: Store,
    publisher: Publisher,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let watched = store.clone();
    let watch_stop = stop.clone();
    // The backlog gauges are refreshed on their own clock, so they keep moving while the
    // relay is stuck retrying one event.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => record_backlog(&watched).await,
                _ = watch_stop.cancelled() => return,
            }
        }
    });
    tokio::spawn(async move {
        let written = store.outbox_written();
        let mut backoff = Backoff::default();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let rows = match store.pending_outbox(BATCH).await {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay cannot read the outbox");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = written.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            for row in rows {
                if !relay_row(&store, &publisher, &row, &stop).await {
                    return;
                }
            }
        }
    })
}

/// Publishes one row to each of its rooms and marks it; false if stopped first.
async fn relay_row(
    store: &Store,
    publisher: &Publisher,
    row: &OutboxRow,
    stop: &CancellationToken,
) -> bool {
    let span = tracing::info_span!("outbox.relay", outbox = row.id);
    traces::set_parent(&span, row.trace.as_deref());
    publish_row(publisher, row, stop).instrument(span).await && mark(store, row, stop).await
}

/// Publishes a row to each of its rooms, retrying until acknowledged; false if stopped.
async fn publish_row(publisher: &Publisher, row: &OutboxRow, stop: &CancellationToken) -> bool {
    for room in &row.rooms {
        let name = RoomName::new_unchecked(room.as_str());
        let request = PublishRequest {
            data: row.event.clone(),
            idempotency_key: Some(format!("outbox:{}:{room}", row.id)),
            trace: traces::current_traceparent(),
            // Remembered as long as the room's epoch: a relay back from a crash between
            // this publish and `mark`, however late, gets the original ack.
            key_retention: KeyRetention::Epoch,
        };
        let mut backoff = Backoff::default();
        loop {
            match publisher.publish(&name, request.clone()).await {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(outbox = row.id, %room, error = %err, "outbox publish failed; retrying");
                    if !backoff.wait(stop).await {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Marks a published row; false if stopped first.
async fn mark(store: &Store, row: &OutboxRow, stop: &CancellationToken) -> bool {
    let mut backoff = Backoff::default();
    while let Err(err) = store.mark_published(row.id).await {
        tracing::warn!(outbox = row.id, error = %err, "cannot mark an outbox row published; retrying");
        if !backoff.wait(stop).await {
            return false;
        }
    }
    metrics::counter!("roomcast_outbox_published_total").increment(1);
    let lag = (now_ms() - row.created_at).max(0) as f64 / 1000.0;
    metrics::histogram!("roomcast_outbox_relay_lag_seconds").record(lag);
    true
}

async fn record_backlog(store: &Store) {
    if let Ok((count, oldest)) = store.outbox_backlog().await {
        metrics::gauge!("roomcast_outbox_backlog").set(count as f64);
        let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        metrics::gauge!("roomcast_outbox_oldest_pending_seconds").set(age);
    }
}

/// Exponential backoff from 100 ms to 2 s.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// Sleeps for the next delay; false if `stop` was cancelled meanwhile.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay =
            Duration::from_millis(100 * 2u64.pow(self.attempts.min(4))).min(Duration::from_secs(2));
        self.attempts += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }
}
