//! The outbox: events written with the change they describe, broadcast by the relay.

use super::{Store, StoreError, now_ms};
use crate::tracker::AUDIT_ROOM;
use serde_json::Value;
use sqlx::AnyConnection;

/// One pending event.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Row id: also the base of the idempotency key of its publishes.
    pub id: i64,
    /// When the change was committed (ms).
    pub created_at: i64,
    /// Rooms to publish to.
    pub rooms: Vec<String>,
    /// The event.
    pub event: Value,
    /// W3C `traceparent` of the change, when it was traced.
    pub trace: Option<String>,
}

/// Writes an event inside the mutation's transaction.
///
/// The relay publishes rows in id order. On PostgreSQL ids come from a sequence when the
/// row is inserted, and transactions may commit in another order than they took their
/// ids: two changes of one project could reach its room in the opposite order of their
/// commits. So, first, the transaction takes a lock per room of the event (advisory,
/// held until commit, taken in name order so that two transactions cannot deadlock on
/// them): a second change to one of these rooms inserts its row only after the first
/// committed, and within a room id order is commit order. SQLite has one writer at a
/// time and needs nothing. The room of every audit entry ([`AUDIT_ROOM`]) is not locked:
/// every change of every project writes to it, and its readers order entries by their
/// ids, so it is not worth serialising all writers for.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    rooms: &[String],
    event: &Value,
    at: i64,
    trace: Option<&str>,
) -> Result<(), StoreError> {
    if conn.backend_name() == "PostgreSQL" {
        let mut ordered: Vec<&String> = rooms.iter().filter(|r| *r != AUDIT_ROOM).collect();
        ordered.sort();
        for room in ordered {
            sqlx::query(
                "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext('roomcast.outbox:' || $1))) AS locked",
            )
                .bind(room.as_str())
                .execute(&mut *conn)
                .await?;
        }
    }
    sqlx::query("INSERT INTO outbox (created_at, rooms, event, trace) VALUES ($1, $2, $3, $4)")
        .bind(at)
        .bind(serde_json::to_string(rooms).expect("strings serialize"))
        .bind(event.to_string())
        .bind(trace)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// The oldest unpublished events, in commit order.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, created_at, rooms, event, trace FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, created_at, rooms, event, trace)| {
                Ok(OutboxRow {
                    id,
                    created_at,
                    rooms: serde_json::from_str(&rooms)
                        .map_err(|e| StoreError::Internal(format!("outbox {id}: {e}")))?,
                    event: serde_json::from_str(&event)
                        .map_err(|e| StoreError::Internal(format!("outbox {id}: {e}")))?,
                    trace,
                })
            })
            .collect()
    }

    /// Marks an event as published (after the broker acknowledged every room).
    pub async fn mark_published(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Number of unpublished events and the commit time of the oldest.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((count, oldest))
    }

    /// Number of unpublished events created at or before `at_ms` (a drain waits for the
    /// changes committed before it began, not for what other instances keep writing).
    pub async fn outbox_pending_before(&self, at_ms: i64) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND created_at <= $1",
        )
        .bind(at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Deletes published events older than `before_ms`.
    pub async fn purge_outbox(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
