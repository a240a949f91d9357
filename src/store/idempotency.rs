//! `Idempotency-Key` records: the first response to a POST with a key is stored in the
//! same transaction as the change, and replayed for a repeat of the same request.

use super::{Outcome, Store, StoreError, now_ms};
use sqlx::AnyConnection;

/// The key a request carried, scoped to its principal, and a hash of the request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Who sent it (keys of different principals never collide).
    pub principal: String,
    /// The key.
    pub key: String,
    /// Hash of method, path and body: the same key with another request is a conflict.
    pub request_hash: String,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// `Location` header.
    pub location: Option<String>,
    /// `ETag` header.
    pub etag: Option<String>,
}

/// request_hash, status, body, location, etag
type Row = (String, i64, String, Option<String>, Option<String>);

/// A previous use of the key, if any, as the outcome to return instead of acting.
pub(crate) async fn previous<T>(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
) -> Result<Option<Outcome<T>>, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT request_hash, status, body, location, etag FROM idempotency_keys WHERE principal = $1 AND key = $2",
    )
    .bind(&key.principal)
    .bind(&key.key)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(hash, status, body, location, etag)| {
        if hash == key.request_hash {
            Outcome::Replay(StoredResponse {
                status: status as u16,
                body,
                location,
                etag,
            })
        } else {
            Outcome::KeyReused
        }
    }))
}

/// Stores the response of the first use of the key (inside the change's transaction).
pub(crate) async fn remember(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (principal, key, request_hash, status, body, location, etag, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.principal)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(i64::from(response.status))
    .bind(&response.body)
    .bind(&response.location)
    .bind(&response.etag)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Forgets keys older than `before_ms`.
    pub async fn purge_idempotency_keys(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
