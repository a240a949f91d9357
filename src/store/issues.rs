//! Issues: create, read, list, update, delete.

use super::idempotency::{self, StoredResponse};
use super::{
    AuditRecord, Caller, Change, Mutation, Outcome, Store, StoreError, is_unique_violation, now_ms,
    record_audit, record_change,
};
use crate::tracker::{
    Action, Comment, Entity, Issue, IssuePatch, IssueType, NewIssue, Priority, Status, changes,
    fields,
};
use sqlx::AnyConnection;

/// Filters and page of an issue listing.
#[derive(Debug, Clone, Default)]
pub struct IssueFilter {
    /// Only this project.
    pub project_id: Option<i64>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Only this assignee.
    pub assignee: Option<String>,
    /// Only issues with a larger id (the page cursor).
    pub after_id: i64,
    /// Page size.
    pub limit: i64,
}

/// Issues a listing may show: every project's, or those of the projects a user belongs
/// to.
const LIST: &str = "SELECT id, project_id, title, description, status, priority, issue_type, assignee, reporter, version, created_at, updated_at \
     FROM issues \
     WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR status = $2) \
       AND ($3 IS NULL OR priority = $3) AND ($4 IS NULL OR assignee = $4) AND id > $5 \
       AND ($6 = 1 OR project_id IN (SELECT m.project_id FROM memberships m WHERE m.user_id = $7)) \
     ORDER BY id LIMIT $8";

const SELECT_ONE: &str = "SELECT id, project_id, title, description, status, priority, issue_type, assignee, \
     reporter, version, created_at, updated_at FROM issues WHERE id = $1";

pub(crate) type Row = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
);

pub(crate) fn from_row(row: Row) -> Result<Issue, StoreError> {
    let (
        id,
        project_id,
        title,
        description,
        status,
        priority,
        issue_type,
        assignee,
        reporter,
        version,
        created_at,
        updated_at,
    ) = row;
    let corrupt = |what: &str| StoreError::Internal(format!("issue {id} has an invalid {what}"));
    Ok(Issue {
        id,
        project_id,
        title,
        description,
        status: Status::parse(&status).ok_or_else(|| corrupt("status"))?,
        priority: Priority::parse(&priority).ok_or_else(|| corrupt("priority"))?,
        issue_type: IssueType::parse(&issue_type).ok_or_else(|| corrupt("type"))?,
        assignee,
        reporter,
        version,
        created_at,
        updated_at,
    })
}

pub(crate) async fn fetch(conn: &mut AnyConnection, id: i64) -> Result<Issue, StoreError> {
    let row: Row = sqlx::query_as(SELECT_ONE).bind(id).fetch_one(conn).await?;
    from_row(row)
}

impl Store {
    /// Creates an issue; `respond` builds the response kept for the idempotency key.
    pub async fn create_issue(
        &self,
        mutation: &Mutation,
        new: NewIssue,
        respond: impl FnOnce(&Issue) -> StoredResponse,
    ) -> Result<Outcome<Issue>, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        if let Some(key) = &mutation.idempotency
            && let Some(previous) = idempotency::previous(&mut tx, key).await?
        {
            return Ok(previous);
        }
        let now = now_ms();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO issues (project_id, title, description, status, priority, issue_type, assignee, reporter, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9) RETURNING id",
        )
        .bind(new.project_id)
        .bind(&new.title)
        .bind(&new.description)
        .bind(new.status.as_str())
        .bind(new.priority.as_str())
        .bind(new.issue_type.as_str())
        .bind(&new.assignee)
        .bind(&mutation.actor.name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let issue = Issue {
            id,
            project_id: new.project_id,
            title: new.title,
            description: new.description,
            status: new.status,
            priority: new.priority,
            issue_type: new.issue_type,
            assignee: new.assignee,
            reporter: mutation.actor.name.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let change = Change {
            entity: Entity::Issue,
            action: Action::Create,
            id,
            project_id: issue.project_id,
            issue_id: id,
            version: 1,
            changes: changes(None, Some(&fields(&issue))),
            at: now,
        };
        let response = mutation.idempotency.as_ref().map(|_| respond(&issue));
        match record_change(&mut tx, mutation, &change, response.as_ref()).await {
            Ok(()) => {}
            Err(err) if is_unique_violation(&err) => return self.replay_after_race(mutation).await,
            Err(err) => return Err(err),
        }
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(Outcome::Done(issue))
    }

    /// Another request with the same key committed first: answer as it did.
    pub(crate) async fn replay_after_race<T>(
        &self,
        mutation: &Mutation,
    ) -> Result<Outcome<T>, StoreError> {
        let key = mutation
            .idempotency
            .as_ref()
            .expect("only reached with a key");
        let mut conn = self.pool.acquire().await?;
        idempotency::previous(&mut conn, key)
            .await?
            .ok_or_else(|| StoreError::Internal("idempotency record vanished".into()))
    }

    /// One issue, as `caller` may see it.
    pub async fn get_issue(&self, caller: &Caller, id: i64) -> Result<Issue, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        let issue = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(issue)
    }

    /// The project of an issue (for access checks: read without an acting user).
    pub async fn issue_project(&self, id: i64) -> Result<i64, StoreError> {
        let (project,): (i64,) = sqlx::query_as("SELECT project_id FROM issues WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(project)
    }

    /// A page of issues, by id: of every project for an administrator, else of the
    /// projects the caller belongs to.
    pub async fn list_issues(
        &self,
        caller: &Caller,
        filter: &IssueFilter,
    ) -> Result<Vec<Issue>, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        let rows: Vec<Row> = sqlx::query_as(LIST)
            .bind(filter.project_id)
            .bind(filter.status.map(Status::as_str))
            .bind(filter.priority.map(Priority::as_str))
            .bind(&filter.assignee)
            .bind(filter.after_id)
            .bind(i64::from(caller.admin))
            .bind(&caller.user)
            .bind(filter.limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Applies a patch, if `if_match` (when given) is the current version.
    pub async fn update_issue(
        &self,
        mutation: &Mutation,
        id: i64,
        if_match: Option<i64>,
        patch: &IssuePatch,
    ) -> Result<Issue, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let current = fetch(&mut tx, id).await?;
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let mut next = patch.apply(&current);
        let diff = changes(Some(&fields(&current)), Some(&fields(&next)));
        if diff.as_object().is_some_and(|m| m.is_empty()) {
            return Ok(current);
        }
        let now = now_ms();
        next.version = current.version + 1;
        next.updated_at = now;
        let updated = sqlx::query(
            "UPDATE issues SET title = $1, description = $2, status = $3, priority = $4, issue_type = $5, assignee = $6, \
             version = $7, updated_at = $8 WHERE id = $9 AND version = $10",
        )
        .bind(&next.title)
        .bind(&next.description)
        .bind(next.status.as_str())
        .bind(next.priority.as_str())
        .bind(next.issue_type.as_str())
        .bind(&next.assignee)
        .bind(next.version)
        .bind(now)
        .bind(id)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Changed by someone else since we read it.
            drop(tx);
            let current = self.get_issue(&mutation.caller(), id).await?;
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let change = Change {
            entity: Entity::Issue,
            action: Action::Update,
            id,
            project_id: next.project_id,
            issue_id: id,
            version: next.version,
            changes: diff,
            at: now,
        };
        record_change(&mut tx, mutation, &change, None).await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(next)
    }

    /// Deletes an issue and its comments, if `if_match` (when given) is current.
    pub async fn delete_issue(
        &self,
        mutation: &Mutation,
        id: i64,
        if_match: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let current = fetch(&mut tx, id).await?;
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let now = now_ms();
        let comments = super::comment_rows::of_issue(&mut tx, id).await?;
        for comment in &comments {
            record_audit(
                &mut tx,
                mutation,
                &AuditRecord {
                    entity: Entity::Comment,
                    entity_id: comment.id,
                    action: Action::Delete,
                    project_id: Some(current.project_id),
                    changes: &changes(Some(&fields::<Comment>(comment)), None),
                    at: now,
                },
            )
            .await?;
        }
        sqlx::query("DELETE FROM comments WHERE issue_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM issues WHERE id = $1 AND version = $2")
            .bind(id)
            .bind(current.version)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            drop(tx);
            let current = self.get_issue(&mutation.caller(), id).await?;
            return Err(StoreError::VersionMismatch {
                current: current.version,
            });
        }
        let change = Change {
            entity: Entity::Issue,
            action: Action::Delete,
            id,
            project_id: current.project_id,
            issue_id: id,
            version: current.version,
            changes: changes(Some(&fields(&current)), None),
            at: now,
        };
        record_change(&mut tx, mutation, &change, None).await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(())
    }
}
