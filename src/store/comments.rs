//! Comments under an issue: create, read, list, update, delete.

use super::comment_rows::{Row, from_row};
use super::idempotency::{self, StoredResponse};
use super::{
    Caller, Change, Mutation, Outcome, Store, StoreError, is_unique_violation, issues, now_ms,
    record_change,
};
use crate::tracker::{Action, Comment, Entity, changes, fields};
use serde_json::Value;
use sqlx::AnyConnection;

const SELECT_ONE: &str = "SELECT id, issue_id, author, body, version, created_at, updated_at \
     FROM comments WHERE id = $1 AND issue_id = $2";

async fn fetch(conn: &mut AnyConnection, issue_id: i64, id: i64) -> Result<Comment, StoreError> {
    let row: Row = sqlx::query_as(SELECT_ONE)
        .bind(id)
        .bind(issue_id)
        .fetch_one(conn)
        .await?;
    Ok(from_row(row))
}

fn diff(before: Option<&Comment>, after: Option<&Comment>) -> Value {
    changes(before.map(fields).as_ref(), after.map(fields).as_ref())
}

impl Store {
    /// Adds a comment to an issue; `respond` builds the response kept for the
    /// idempotency key.
    pub async fn create_comment(
        &self,
        mutation: &Mutation,
        issue_id: i64,
        body: String,
        respond: impl FnOnce(&Comment) -> StoredResponse,
    ) -> Result<Outcome<Comment>, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        if let Some(key) = &mutation.idempotency
            && let Some(previous) = idempotency::previous(&mut tx, key).await?
        {
            return Ok(previous);
        }
        let issue = issues::fetch(&mut tx, issue_id).await?;
        let now = now_ms();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO comments (issue_id, author, body, version, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $4) RETURNING id",
        )
        .bind(issue_id)
        .bind(&mutation.actor.name)
        .bind(&body)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let comment = Comment {
            id,
            issue_id,
            author: mutation.actor.name.clone(),
            body,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let change = Change {
            entity: Entity::Comment,
            action: Action::Create,
            id,
            project_id: issue.project_id,
            issue_id,
            version: 1,
            changes: diff(None, Some(&comment)),
            at: now,
        };
        let response = mutation.idempotency.as_ref().map(|_| respond(&comment));
        match record_change(&mut tx, mutation, &change, response.as_ref()).await {
            Ok(()) => {}
            Err(err) if is_unique_violation(&err) => return self.replay_after_race(mutation).await,
            Err(err) => return Err(err),
        }
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(Outcome::Done(comment))
    }

    /// One comment of an issue, as `caller` may see it.
    pub async fn get_comment(
        &self,
        caller: &Caller,
        issue_id: i64,
        id: i64,
    ) -> Result<Comment, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        let comment = fetch(&mut tx, issue_id, id).await?;
        tx.commit().await?;
        Ok(comment)
    }

    /// A page of an issue's comments (the issue must exist).
    pub async fn list_comments(
        &self,
        caller: &Caller,
        issue_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Comment>, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        issues::fetch(&mut tx, issue_id).await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, issue_id, author, body, version, created_at, updated_at FROM comments \
             WHERE issue_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(issue_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Replaces a comment's body, if `if_match` (when given) is current.
    pub async fn update_comment(
        &self,
        mutation: &Mutation,
        issue_id: i64,
        id: i64,
        if_match: Option<i64>,
        body: String,
    ) -> Result<Comment, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let issue = issues::fetch(&mut tx, issue_id).await?;
        let current = fetch(&mut tx, issue_id, id).await?;
        check_version(if_match, current.version)?;
        if current.body == body {
            return Ok(current);
        }
        let now = now_ms();
        let next = Comment {
            body,
            version: current.version + 1,
            updated_at: now,
            ..current.clone()
        };
        let updated = sqlx::query("UPDATE comments SET body = $1, version = $2, updated_at = $3 WHERE id = $4 AND version = $5")
            .bind(&next.body)
            .bind(next.version)
            .bind(now)
            .bind(id)
            .bind(current.version)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            drop(tx);
            let current = self.get_comment(&mutation.caller(), issue_id, id).await?;
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let change = Change {
            entity: Entity::Comment,
            action: Action::Update,
            id,
            project_id: issue.project_id,
            issue_id,
            version: next.version,
            changes: diff(Some(&current), Some(&next)),
            at: now,
        };
        record_change(&mut tx, mutation, &change, None).await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(next)
    }

    /// Deletes a comment, if `if_match` (when given) is current.
    pub async fn delete_comment(
        &self,
        mutation: &Mutation,
        issue_id: i64,
        id: i64,
        if_match: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let issue = issues::fetch(&mut tx, issue_id).await?;
        let current = fetch(&mut tx, issue_id, id).await?;
        check_version(if_match, current.version)?;
        let deleted = sqlx::query("DELETE FROM comments WHERE id = $1 AND version = $2")
            .bind(id)
            .bind(current.version)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            drop(tx);
            let current = self.get_comment(&mutation.caller(), issue_id, id).await?;
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let now = now_ms();
        let change = Change {
            entity: Entity::Comment,
            action: Action::Delete,
            id,
            project_id: issue.project_id,
            issue_id,
            version: current.version,
            changes: diff(Some(&current), None),
            at: now,
        };
        record_change(&mut tx, mutation, &change, None).await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(())
    }
}

/// `If-Match` against the current version.
pub(crate) fn check_version(if_match: Option<i64>, current: i64) -> Result<(), StoreError> {
    match if_match {
        Some(expected) if expected != current => Err(StoreError::VersionMismatch { current }),
        _ => Ok(()),
    }
}
