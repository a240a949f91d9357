//! The issue tracker's domain: issues, comments, their allowed values, and the change
//! records (audit entries and broadcast events) every mutation produces.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $(#[doc = $text] $variant),+ }

        impl $name {
            /// Every allowed value, as stored and sent.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The stored and sent form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a stored or sent value.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

closed_set!(
    /// Where an issue is in its life.
    Status { Open => "open", InProgress => "in_progress", Resolved => "resolved", Closed => "closed" }
);
closed_set!(
    /// How urgent an issue is.
    Priority { Low => "low", Medium => "medium", High => "high", Urgent => "urgent" }
);
closed_set!(
    /// What kind of work an issue is.
    IssueType { Bug => "bug", Feature => "feature", Task => "task" }
);

closed_set!(
    /// A user's role in a project: viewers read, members also write issues and
    /// comments, admins also manage the project's members.
    Role { Viewer => "viewer", Member => "member", Admin => "admin" }
);

impl Role {
    /// Whether this role includes everything `other` may do.
    pub fn includes(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 1,
            Role::Member => 2,
            Role::Admin => 3,
        }
    }
}

/// A user's membership in a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    /// Id.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// The user (the JWT `sub`).
    pub user_id: String,
    /// The role.
    pub role: Role,
    /// When it was created (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When the role last changed (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
}

/// Longest user id, in characters.
pub const USER_ID_MAX: usize = 200;

/// Longest title, in characters.
pub const TITLE_MAX: usize = 200;
/// Longest description or comment body, in characters.
pub const TEXT_MAX: usize = 10_000;
/// Longest assignee name, in characters.
pub const ASSIGNEE_MAX: usize = 100;

/// Serializes a time in ms since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_time(*ms))
}

/// A time in ms since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub fn format_time(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// An issue as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// Id.
    pub id: i64,
    /// The project it belongs to.
    pub project_id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Kind.
    #[serde(rename = "type")]
    pub issue_type: IssueType,
    /// Assignee, if any.
    pub assignee: Option<String>,
    /// Who created it.
    pub reporter: String,
    /// Row version, incremented by every change (the ETag).
    pub version: i64,
    /// Creation time (ms since the Unix epoch; RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    /// Last change (ms since the Unix epoch; RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
}

/// A comment as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// Id.
    pub id: i64,
    /// The issue it belongs to.
    pub issue_id: i64,
    /// Who wrote it.
    pub author: String,
    /// Text.
    pub body: String,
    /// Row version (the ETag).
    pub version: i64,
    /// Creation time (ms; RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    /// Last change (ms; RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
}

/// Fields of a new issue (validated by the API layer; the database checks them again).
#[derive(Debug, Clone)]
pub struct NewIssue {
    /// Project.
    pub project_id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Kind.
    pub issue_type: IssueType,
    /// Assignee.
    pub assignee: Option<String>,
}

/// Changes to an issue; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct IssuePatch {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New status.
    pub status: Option<Status>,
    /// New priority.
    pub priority: Option<Priority>,
    /// New kind.
    pub issue_type: Option<IssueType>,
    /// New assignee (`Some(None)` unassigns).
    pub assignee: Option<Option<String>>,
}

impl IssuePatch {
    /// The issue with the patch applied (version and times untouched).
    pub fn apply(&self, issue: &Issue) -> Issue {
        let mut next = issue.clone();
        if let Some(title) = &self.title {
            next.title = title.clone();
        }
        if let Some(description) = &self.description {
            next.description = description.clone();
        }
        if let Some(status) = self.status {
            next.status = status;
        }
        if let Some(priority) = self.priority {
            next.priority = priority;
        }
        if let Some(issue_type) = self.issue_type {
            next.issue_type = issue_type;
        }
        if let Some(assignee) = &self.assignee {
            next.assignee = assignee.clone();
        }
        next
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// JWT subject, service name, or `anonymous`.
    pub name: String,
    /// `user`, `service` or `anonymous`.
    pub kind: &'static str,
}

/// What kind of row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// An issue.
    Issue,
    /// A comment.
    Comment,
    /// A project membership.
    Membership,
    /// A user (GDPR erasure).
    User,
}

impl Entity {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Issue => "issue",
            Entity::Comment => "comment",
            Entity::Membership => "membership",
            Entity::User => "user",
        }
    }
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Created.
    Create,
    /// Changed.
    Update,
    /// Deleted.
    Delete,
    /// A user's personal data erased (pseudonymised).
    Erase,
}

impl Action {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Erase => "erase",
        }
    }
}

/// The fields of a row as JSON, for change records.
pub fn fields<T: Serialize>(row: &T) -> Map<String, Value> {
    match serde_json::to_value(row) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `{field: {before, after}}` for every field that differs (`before`/`after` are null
/// for creates and deletes). Bookkeeping fields (version, times) are left out.
pub fn changes(before: Option<&Map<String, Value>>, after: Option<&Map<String, Value>>) -> Value {
    const BOOKKEEPING: [&str; 4] = ["id", "version", "created_at", "updated_at"];
    let empty = Map::new();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut out = Map::new();
    for key in b.keys().chain(a.keys()) {
        if BOOKKEEPING.contains(&key.as_str()) || out.contains_key(key) {
            continue;
        }
        // An absent field and a null one are the same: no change.
        let old = b.get(key).cloned().unwrap_or(Value::Null);
        let new = a.get(key).cloned().unwrap_or(Value::Null);
        if old != new {
            out.insert(key.clone(), json!({ "before": old, "after": new }));
        }
    }
    Value::Object(out)
}

/// The room every new audit entry is published to (with the change, through the
/// outbox); an entry of a project also goes to [`audit_room`] of it. Who may read them:
/// `crate::access`.
pub const AUDIT_ROOM: &str = "audit";

/// The audit room of one project.
pub fn audit_room(project: i64) -> String {
    format!("{AUDIT_ROOM}:{project}")
}

/// The event broadcast for a change, to the rooms of its project and issue.
#[allow(clippy::too_many_arguments)]
pub fn event(
    entity: Entity,
    action: Action,
    id: i64,
    project_id: i64,
    issue_id: i64,
    version: i64,
    changes: &Value,
    actor: &Actor,
    request_id: &str,
    time_ms: i64,
) -> (Vec<String>, Value) {
    let rooms = vec![format!("project:{project_id}"), format!("issue:{issue_id}")];
    let event = json!({
        "entity": entity.as_str(),
        "action": action.as_str(),
        "id": id,
        "project_id": project_id,
        "issue_id": issue_id,
        "version": version,
        "changes": changes,
        "actor": actor.name,
        "actor_kind": actor.kind,
        "request_id": request_id,
        "time": time_ms,
    });
    (rooms, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_round_trip() {
        for text in Status::ALL {
            assert_eq!(Status::parse(text).unwrap().as_str(), *text);
        }
        assert_eq!(Priority::parse("urgent"), Some(Priority::Urgent));
        assert_eq!(IssueType::parse("epic"), None);
        assert_eq!(
            serde_json::to_value(Status::InProgress).unwrap(),
            json!("in_progress")
        );
    }

    #[test]
    fn changes_list_only_differing_fields() {
        let before = json!({"title": "a", "status": "open", "version": 1});
        let after = json!({"title": "a", "status": "closed", "version": 2});
        let diff = changes(before.as_object(), after.as_object());
        assert_eq!(
            diff,
            json!({"status": {"before": "open", "after": "closed"}})
        );
        let created = changes(None, after.as_object());
        assert_eq!(created["title"], json!({"before": null, "after": "a"}));
        let with_null = json!({"title": "a", "assignee": null});
        let created = changes(None, with_null.as_object());
        assert!(
            created.get("assignee").is_none(),
            "null is no change from nothing"
        );
    }
}
