//! Project memberships: who belongs to which project, with which role. Every change is
//! audited and broadcast to the project's room, like a change of an issue.

use super::{
    AuditRecord, Caller, Mutation, Store, StoreError, is_unique_violation, now_ms, outbox,
    record_audit,
};
use crate::tracker::{Action, Entity, Membership, Role};
use serde_json::{Value, json};
use sqlx::AnyConnection;

pub(crate) type Row = (i64, i64, String, String, i64, String, i64);

pub(crate) fn from_row(row: Row) -> Result<Membership, StoreError> {
    let (id, project_id, user_id, role, created_at, created_by, updated_at) = row;
    Ok(Membership {
        id,
        project_id,
        user_id,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Internal(format!("membership {id} has an invalid role")))?,
        created_at,
        created_by,
        updated_at,
    })
}

async fn fetch(
    conn: &mut AnyConnection,
    project_id: i64,
    user_id: &str,
) -> Result<Option<Membership>, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, project_id, user_id, role, created_at, created_by, updated_at \
         FROM memberships WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    row.map(from_row).transpose()
}

/// What a membership change did.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    /// The membership after the change (before it, for a removal).
    pub membership: Membership,
    /// The role before the change (`None`: the membership is new).
    pub previous: Option<Role>,
}

impl Store {
    /// The role of `user_id` in `project_id`, read without an acting user: this is what
    /// access checks are made of.
    pub async fn membership_role(
        &self,
        user_id: &str,
        project_id: i64,
    ) -> Result<Option<Role>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(fetch(&mut conn, project_id, user_id)
            .await?
            .map(|membership| membership.role))
    }

    /// A page of a project's members, by id.
    pub async fn list_members(
        &self,
        caller: &Caller,
        project_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Membership>, StoreError> {
        let mut tx = self.begin_as(caller).await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, project_id, user_id, role, created_at, created_by, updated_at \
             FROM memberships WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(project_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Gives `user_id` the role `role` in `project_id`, creating the membership if needed.
    /// Setting the role a user already has changes (and records) nothing.
    pub async fn put_membership(
        &self,
        mutation: &Mutation,
        project_id: i64,
        user_id: &str,
        role: Role,
    ) -> Result<MembershipChange, StoreError> {
        match self.try_put(mutation, project_id, user_id, role).await {
            // Created by a concurrent request since we looked: it is there now.
            Err(err) if is_unique_violation(&err) => {
                self.try_put(mutation, project_id, user_id, role).await
            }
            outcome => outcome,
        }
    }

    async fn try_put(
        &self,
        mutation: &Mutation,
        project_id: i64,
        user_id: &str,
        role: Role,
    ) -> Result<MembershipChange, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let current = fetch(&mut tx, project_id, user_id).await?;
        if let Some(existing) = current.as_ref().filter(|m| m.role == role) {
            return Ok(MembershipChange {
                membership: existing.clone(),
                previous: Some(role),
            });
        }
        let now = now_ms();
        let membership = match &current {
            Some(existing) => set_role(&mut tx, existing, role, now).await?,
            None => {
                insert(
                    &mut tx,
                    project_id,
                    user_id,
                    role,
                    &mutation.actor.name,
                    now,
                )
                .await?
            }
        };
        let previous = current.map(|m| m.role);
        let action = if previous.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        record(
            &mut tx,
            mutation,
            action,
            &membership,
            previous,
            Some(role),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(MembershipChange {
            membership,
            previous,
        })
    }

    /// Removes `user_id` from `project_id`; returns what was removed.
    pub async fn delete_membership(
        &self,
        mutation: &Mutation,
        project_id: i64,
        user_id: &str,
    ) -> Result<Membership, StoreError> {
        let mut tx = self.begin_as(&mutation.caller()).await?;
        let membership = fetch(&mut tx, project_id, user_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query("DELETE FROM memberships WHERE id = $1")
            .bind(membership.id)
            .execute(&mut *tx)
            .await?;
        let now = now_ms();
        let role = Some(membership.role);
        record(
            &mut tx,
            mutation,
            Action::Delete,
            &membership,
            role,
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written.notify_one();
        Ok(membership)
    }
}

/// Changes the role of an existing membership.
async fn set_role(
    conn: &mut AnyConnection,
    existing: &Membership,
    role: Role,
    now: i64,
) -> Result<Membership, StoreError> {
    sqlx::query("UPDATE memberships SET role = $1, updated_at = $2 WHERE id = $3")
        .bind(role.as_str())
        .bind(now)
        .bind(existing.id)
        .execute(conn)
        .await?;
    Ok(Membership {
        role,
        updated_at: now,
        ..existing.clone()
    })
}

/// Creates a membership.
async fn insert(
    conn: &mut AnyConnection,
    project_id: i64,
    user_id: &str,
    role: Role,
    by: &str,
    now: i64,
) -> Result<Membership, StoreError> {
    let row: Row = sqlx::query_as(
        "INSERT INTO memberships (project_id, user_id, role, created_at, created_by, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $4) \
         RETURNING id, project_id, user_id, role, created_at, created_by, updated_at",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .bind(by)
    .fetch_one(conn)
    .await?;
    from_row(row)
}

/// The audit entry and the event of a membership change.
async fn record(
    conn: &mut AnyConnection,
    mutation: &Mutation,
    action: Action,
    membership: &Membership,
    before: Option<Role>,
    after: Option<Role>,
    at: i64,
) -> Result<(), StoreError> {
    let user = |present: bool| present.then(|| membership.user_id.clone());
    let mut changes = serde_json::Map::new();
    if before.is_none() || after.is_none() {
        changes.insert(
            "user_id".into(),
            json!({"before": user(before.is_some()), "after": user(after.is_some())}),
        );
    }
    changes.insert(
        "role".into(),
        json!({"before": before.map(Role::as_str), "after": after.map(Role::as_str)}),
    );
    let changes = Value::Object(changes);
    let entry = AuditRecord {
        entity: Entity::Membership,
        entity_id: membership.id,
        action,
        project_id: Some(membership.project_id),
        changes: &changes,
        at,
    };
    record_audit(conn, mutation, &entry).await?;
    let event = json!({
        "entity": "membership",
        "action": action.as_str(),
        "id": membership.id,
        "project_id": membership.project_id,
        "user_id": membership.user_id,
        "role": after.map(Role::as_str),
        "changes": changes,
        "actor": mutation.actor.name,
        "actor_kind": mutation.actor.kind,
        "request_id": mutation.request_id,
        "time": at,
    });
    let rooms = [format!("project:{}", membership.project_id)];
    let trace = crate::telemetry::traces::current_traceparent();
    outbox::enqueue(conn, &rooms, &event, at, trace.as_deref()).await
}
