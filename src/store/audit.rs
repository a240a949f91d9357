//! Reading the audit log, and the retention job that is the only way rows leave it.

use super::{Caller, Store, StoreError};
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
    /// The project.
    pub project_id: Option<i64>,
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
    /// The project the entry belongs to (`null`: none, or no longer known).
    pub project_id: Option<i64>,
}

pub(crate) type Row = (
    i64,
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<i64>,
);

/// Entries matching the filters that the caller may read: every entry for an
/// administrator, else those of the projects the caller administers.
const SEARCH: &str = "SELECT id, created_at, actor, actor_kind, entity, entity_id, action, changes, request_id, project_id \
     FROM audit_log \
     WHERE ($1 IS NULL OR entity = $1) AND ($2 IS NULL OR entity_id = $2) AND ($3 IS NULL OR actor = $3) \
       AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
       AND ($7 IS NULL OR project_id = $7) AND id > $8 \
       AND ($9 = 1 OR project_id IN (SELECT m.project_id FROM memberships m WHERE m.user_id = $10 AND m.role = 'admin')) \
     ORDER BY id LIMIT $11";

impl Store {
    /// A page of matching entries the caller may read (see [`SEARCH`]), oldest first.
    pub async fn search_audit(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        let rows: Vec<Row> = sqlx::query_as(SEARCH)
            .bind(&query.entity)
            .bind(query.entity_id)
            .bind(&query.actor)
            .bind(&query.action)
            .bind(query.from_ms)
            .bind(query.to_ms)
            .bind(query.project_id)
            .bind(query.after_id)
            .bind(i64::from(caller.admin))
            .bind(&caller.user)
            .bind(query.limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(entry).collect())
    }

    /// Deletes entries older than `before_ms` — the one deletion the database allows,
    /// and only inside this transaction (see the `audit_guard` table). Returns how many.
    pub async fn purge_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
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

/// An entry from its row.
pub(crate) fn entry(row: Row) -> AuditEntry {
    let (
        id,
        created_at,
        actor,
        actor_kind,
        entity,
        entity_id,
        action,
        changes,
        request_id,
        project_id,
    ) = row;
    AuditEntry {
        id,
        created_at,
        actor,
        actor_kind,
        entity,
        entity_id,
        action,
        changes: serde_json::from_str(&changes).unwrap_or(Value::Null),
        request_id,
        project_id,
    }
}
