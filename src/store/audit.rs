//! Reading the audit log, and the retention job that is the only way rows leave it.

use super::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;

/// Search criteria; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `issue` or `comment`.
    pub entity: Option<String>,
    /// The row id.
    pub entity_id: Option<i64>,
    /// Who.
    pub actor: Option<String>,
    /// `create`, `update` or `delete`.
    pub action: Option<String>,
    /// At or after (ms).
    pub from_ms: Option<i64>,
    /// Before (ms).
    pub to_ms: Option<i64>,
    /// Entries with a larger id only (the page cursor).
    pub after_id: i64,
    /// Page size.
    pub limit: i64,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Id (increasing).
    pub id: i64,
    /// When (ms since the Unix epoch; RFC 3339 in JSON).
    #[serde(serialize_with = "crate::tracker::rfc3339")]
    pub created_at: i64,
    /// JWT subject, service name, or `anonymous`.
    pub actor: String,
    /// `user`, `service` or `anonymous`.
    pub actor_kind: String,
    /// `issue` or `comment`.
    pub entity: String,
    /// The row's id.
    pub entity_id: i64,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `{field: {before, after}}`.
    pub changes: Value,
    /// The request that made the change.
    pub request_id: String,
}

type Row = (
    i64,
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
);

impl Store {
    /// A page of matching entries, oldest first.
    pub async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, created_at, actor, actor_kind, entity, entity_id, action, changes, request_id FROM audit_log \
             WHERE ($1 IS NULL OR entity = $1) AND ($2 IS NULL OR entity_id = $2) AND ($3 IS NULL OR actor = $3) \
               AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
               AND id > $7 \
             ORDER BY id LIMIT $8",
        )
        .bind(&query.entity)
        .bind(query.entity_id)
        .bind(&query.actor)
        .bind(&query.action)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.after_id)
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    created_at,
                    actor,
                    actor_kind,
                    entity,
                    entity_id,
                    action,
                    changes,
                    request_id,
                )| AuditEntry {
                    id,
                    created_at,
                    actor,
                    actor_kind,
                    entity,
                    entity_id,
                    action,
                    changes: serde_json::from_str(&changes).unwrap_or(Value::Null),
                    request_id,
                },
            )
            .collect())
    }

    /// Deletes entries older than `before_ms` — the one deletion the database allows,
    /// and only inside this transaction (see the `audit_guard` table). Returns how many.
    pub async fn purge_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE audit_guard SET allow_before = $1 WHERE id = 1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM audit_log WHERE created_at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE audit_guard SET allow_before = 0 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
