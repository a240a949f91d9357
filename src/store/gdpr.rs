//! GDPR: everything stored about a user, and its erasure.
//!
//! An erasure replaces the user's id by a stable pseudonym (`erased:` and 16 hex digits
//! of SHA-256 over a random per-database key and the id) wherever it names a person —
//! issue reporter and assignee, comment author, membership creator, audit actor, and the
//! fields that name people ([`PERSON_FIELDS`]) in audit changes and outbox events —
//! removes the user's memberships and the responses stored for their idempotency keys,
//! and records the erasure itself in the audit log. Only fields that name a person are
//! rewritten: a user called `open` keeps every issue's status `open`. Audit entries are rewritten only inside the erasure's transaction, which
//! raises `audit_guard.pseudonymise` for the database trigger that otherwise refuses any
//! change; no entry is removed and no other column changes. Free text (titles,
//! descriptions, comment bodies) is kept: it belongs to the project, and is removed, if
//! needed, through the ordinary delete routes.

use super::audit::{self, AuditEntry};
use super::{AuditRecord, Mutation, Store, StoreError, comment_rows, issues, memberships};
use super::{now_ms, record_audit};
use crate::tracker::{Action, Comment, Entity, Issue, Membership};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

/// Everything stored about one user.
#[derive(Debug, Clone, Serialize)]
pub struct UserExport {
    /// The user id.
    pub user_id: String,
    /// Issues they reported or are assigned to.
    pub issues: Vec<Issue>,
    /// Comments they wrote.
    pub comments: Vec<Comment>,
    /// Their project memberships.
    pub memberships: Vec<Membership>,
    /// Audit entries of changes they made.
    pub audit_by: Vec<AuditEntry>,
    /// Audit entries of others' changes that name them (an assignment, a membership).
    pub audit_about: Vec<AuditEntry>,
}

/// What an erasure changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The pseudonym that replaced the user id.
    pub pseudonym: String,
    /// Issues whose reporter or assignee was replaced.
    pub issues: u64,
    /// Comments whose author was replaced.
    pub comments: u64,
    /// Memberships removed (their projects, for the access cache).
    pub memberships: Vec<i64>,
    /// Audit entries pseudonymised.
    pub audit_entries: u64,
    /// Outbox events pseudonymised.
    pub events: u64,
}

const AUDIT_COLUMNS: &str = "SELECT id, created_at, actor, actor_kind, entity, entity_id, action, changes, request_id, project_id FROM audit_log";

/// `LIKE` pattern matching a text that holds `user` as a JSON string.
fn json_string_pattern(user: &str) -> String {
    let quoted = Value::String(user.to_owned()).to_string();
    let escaped = quoted
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The fields of changes and events whose values name a person.
const PERSON_FIELDS: &[&str] = &["reporter", "assignee", "author", "user_id", "created_by"];

/// Replaces `from` by `to` where it names a person in a change record or an event: the
/// value of a [`PERSON_FIELDS`] field (or its `before`/`after`), at any depth, and an
/// event's `actor` when its `actor_kind` is `user`. Returns whether anything changed.
fn replace_person(value: &mut Value, from: &str, to: &str) -> bool {
    let Value::Object(map) = value else {
        return false;
    };
    let user_actor = map.get("actor_kind").and_then(Value::as_str) == Some("user");
    let mut changed = false;
    for (key, item) in map.iter_mut() {
        let names_person = PERSON_FIELDS.contains(&key.as_str()) || (key == "actor" && user_actor);
        changed |= if names_person {
            replace_value(item, from, to)
        } else {
            replace_person(item, from, to)
        };
    }
    changed
}

/// `from` → `to` in a field's value: the value itself, or its `before` and `after`.
fn replace_value(value: &mut Value, from: &str, to: &str) -> bool {
    match value {
        Value::String(text) if text == from => {
            *text = to.to_owned();
            true
        }
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, item| replace_value(item, from, to) | any),
        _ => false,
    }
}

impl Store {
    /// Everything stored about `user_id` (read without an acting user: for global
    /// administrators only).
    pub async fn export_user(&self, user_id: &str) -> Result<UserExport, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let issues: Vec<issues::Row> = sqlx::query_as(
            "SELECT id, project_id, title, description, status, priority, issue_type, assignee, reporter, version, created_at, updated_at \
             FROM issues WHERE reporter = $1 OR assignee = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        let comments: Vec<comment_rows::Row> = sqlx::query_as(
            "SELECT id, issue_id, author, body, version, created_at, updated_at FROM comments WHERE author = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        let memberships: Vec<memberships::Row> = sqlx::query_as(
            "SELECT id, project_id, user_id, role, created_at, created_by, updated_at FROM memberships WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        let (audit_by, audit_about) = audit_of(&mut conn, user_id).await?;
        Ok(UserExport {
            user_id: user_id.to_owned(),
            issues: issues
                .into_iter()
                .map(issues::from_row)
                .collect::<Result<_, _>>()?,
            comments: comments.into_iter().map(comment_rows::from_row).collect(),
            memberships: memberships
                .into_iter()
                .map(memberships::from_row)
                .collect::<Result<_, _>>()?,
            audit_by,
            audit_about,
        })
    }

    /// Erases `user_id`'s personal data (see the module documentation), in one
    /// transaction with its own audit entry.
    pub async fn erase_user(
        &self,
        mutation: &Mutation,
        user_id: &str,
    ) -> Result<Erasure, StoreError> {
        let mut tx = self.begin_write().await?;
        let pseudonym = pseudonym(&mut tx, user_id).await?;
        let issues = rewrite_people(&mut tx, user_id, &pseudonym).await?;
        let comments = sqlx::query("UPDATE comments SET author = $1 WHERE author = $2")
            .bind(&pseudonym)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE memberships SET created_by = $1 WHERE created_by = $2")
            .bind(&pseudonym)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let projects: Vec<(i64,)> =
            sqlx::query_as("DELETE FROM memberships WHERE user_id = $1 RETURNING project_id")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1")
            .bind(format!("user:{user_id}"))
            .execute(&mut *tx)
            .await?;
        let audit_entries = pseudonymise_audit(&mut tx, user_id, &pseudonym).await?;
        let events = pseudonymise_outbox(&mut tx, user_id, &pseudonym).await?;
        let changes = json!({"pseudonym": {"before": null, "after": pseudonym}});
        let entry = AuditRecord {
            entity: Entity::User,
            entity_id: 0,
            action: Action::Erase,
            project_id: None,
            changes: &changes,
            at: now_ms(),
        };
        record_audit(&mut tx, mutation, &entry).await?;
        tx.commit().await?;
        Ok(Erasure {
            pseudonym,
            issues,
            comments,
            memberships: projects.into_iter().map(|(project,)| project).collect(),
            audit_entries,
            events,
        })
    }
}

/// Audit entries by the user, and entries by others that name them.
async fn audit_of(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<(Vec<AuditEntry>, Vec<AuditEntry>), StoreError> {
    let by: Vec<audit::Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{AUDIT_COLUMNS} WHERE actor = $1 AND actor_kind = 'user' ORDER BY id"
    )))
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let about: Vec<audit::Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{AUDIT_COLUMNS} WHERE changes LIKE $1 ESCAPE '\\' AND NOT (actor = $2 AND actor_kind = 'user') ORDER BY id"
    )))
    .bind(json_string_pattern(user_id))
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mention = |entry: &AuditEntry| {
        let mut changes = entry.changes.clone();
        replace_person(&mut changes, user_id, "")
    };
    let about = about
        .into_iter()
        .map(audit::entry)
        .filter(mention)
        .collect();
    Ok((by.into_iter().map(audit::entry).collect(), about))
}

/// The user's pseudonym: stable for one database, not computable without its key.
async fn pseudonym(conn: &mut AnyConnection, user_id: &str) -> Result<String, StoreError> {
    let (key,): (String,) = sqlx::query_as("SELECT key FROM pseudonym_key WHERE id = 1")
        .fetch_one(conn)
        .await?;
    let digest = Sha256::digest(format!("{key}:{user_id}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("erased:{hex}"))
}

/// Issues: reporter and assignee. Returns how many issues changed.
async fn rewrite_people(
    conn: &mut AnyConnection,
    user_id: &str,
    pseudonym: &str,
) -> Result<u64, StoreError> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM issues WHERE reporter = $1 OR assignee = $1")
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?;
    for column in ["reporter", "assignee"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE issues SET {column} = $1 WHERE {column} = $2"
        )))
        .bind(pseudonym)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(count as u64)
}

/// Audit entries by or naming the user, under the guard that allows exactly this.
async fn pseudonymise_audit(
    conn: &mut AnyConnection,
    user_id: &str,
    pseudonym: &str,
) -> Result<u64, StoreError> {
    sqlx::query("UPDATE audit_guard SET pseudonymise = TRUE WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let by =
        sqlx::query("UPDATE audit_log SET actor = $1 WHERE actor = $2 AND actor_kind = 'user'")
            .bind(pseudonym)
            .bind(user_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, changes FROM audit_log WHERE changes LIKE $1 ESCAPE '\\'")
            .bind(json_string_pattern(user_id))
            .fetch_all(&mut *conn)
            .await?;
    let mut about = 0;
    for (id, changes) in rows {
        let Ok(mut value) = serde_json::from_str::<Value>(&changes) else {
            continue;
        };
        if replace_person(&mut value, user_id, pseudonym) {
            sqlx::query("UPDATE audit_log SET changes = $1 WHERE id = $2")
                .bind(value.to_string())
                .bind(id)
                .execute(&mut *conn)
                .await?;
            about += 1;
        }
    }
    sqlx::query("UPDATE audit_guard SET pseudonymise = FALSE WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(by + about)
}

/// Outbox events naming the user (their actor, an assignee, a membership).
async fn pseudonymise_outbox(
    conn: &mut AnyConnection,
    user_id: &str,
    pseudonym: &str,
) -> Result<u64, StoreError> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, event FROM outbox WHERE event LIKE $1 ESCAPE '\\'")
            .bind(json_string_pattern(user_id))
            .fetch_all(&mut *conn)
            .await?;
    let mut changed = 0;
    for (id, event) in rows {
        let Ok(mut value) = serde_json::from_str::<Value>(&event) else {
            continue;
        };
        if replace_person(&mut value, user_id, pseudonym) {
            sqlx::query("UPDATE outbox SET event = $1 WHERE id = $2")
                .bind(value.to_string())
                .bind(id)
                .execute(&mut *conn)
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fields_that_name_people_are_rewritten() {
        let mut change = json!({
            "assignee": {"before": "open", "after": "al"},
            "status": {"before": "open", "after": "closed"},
            "body": {"before": null, "after": "open"},
        });
        assert!(replace_person(&mut change, "open", "erased:x"));
        assert_eq!(
            change,
            json!({
                "assignee": {"before": "erased:x", "after": "al"},
                "status": {"before": "open", "after": "closed"},
                "body": {"before": null, "after": "open"},
            })
        );
        let mut event = json!({"actor": "al", "actor_kind": "user", "user_id": "al",
            "changes": {"author": {"before": null, "after": "al"}}});
        assert!(replace_person(&mut event, "al", "erased:x"));
        assert_eq!(
            event,
            json!({"actor": "erased:x", "actor_kind": "user", "user_id": "erased:x",
                "changes": {"author": {"before": null, "after": "erased:x"}}})
        );
        let mut service = json!({"actor": "al", "actor_kind": "service"});
        assert!(
            !replace_person(&mut service, "al", "erased:x"),
            "a service named al"
        );
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(json_string_pattern("a_b%"), "%\"a\\_b\\%\"%");
        assert_eq!(json_string_pattern("q\"x"), "%\"q\\\\\"x\"%");
    }
}
