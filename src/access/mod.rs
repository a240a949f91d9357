//! Who may do what with the issue tracker and its rooms: the one place that decides.
//!
//! - Global administrators ([`Principal::is_admin`]: a token with the `admin` role, a
//!   backend service, anyone on an open server) may do everything.
//! - Other users act in a project through their membership: viewers read, members also
//!   write issues and comments, project admins also manage the project's members.
//! - The tracker's rooms follow membership: `project:{id}` and `issue:{id}` (the issue's
//!   project) may be subscribed to and read by members of every role, and published to by
//!   members and project admins. Any other room whose first segment is `project` or
//!   `issue` is refused to everyone but global administrators. Other rooms follow the
//!   token's room claims ([`Principal::may_subscribe`], [`Principal::may_publish`]).
//! - The audit rooms carry every new audit entry, written by the server only (no client
//!   may publish to them, administrators included): [`AUDIT_ROOM`] is read by global
//!   administrators, `audit:{project}` also by that project's admins (the readers of its
//!   entries through `GET /api/v1/audit`); any other name whose first segment is `audit`
//!   by global administrators only.
//!
//! Room checks run on every subscribe, publish and history request, so they read
//! memberships through a cache ([`cache`]): entries live [`cache::TTL`] and are dropped
//! at once on this instance when a membership changes here. API checks read the store.

pub mod cache;

use crate::auth::Principal;
use crate::store::{Store, StoreError};
use crate::tracker::{AUDIT_ROOM, Role};
use cache::AccessCache;

/// What a room request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomAction {
    /// Subscribe to the room, or read its history.
    Read,
    /// Publish to the room.
    Publish,
}

/// The decision on a room request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Go ahead.
    Allowed,
    /// Refused, with the reason to tell the client.
    Denied(String),
}

/// An audit room, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuditRoom {
    /// `audit`: every entry.
    All,
    /// `audit:{id}`: the entries of one project.
    Project(i64),
    /// `audit:…` without a single positive id after the prefix.
    Malformed,
}

fn audit_room_of(room: &str) -> Option<AuditRoom> {
    if room == AUDIT_ROOM {
        return Some(AuditRoom::All);
    }
    let (kind, rest) = room.split_once(':')?;
    if kind != AUDIT_ROOM {
        return None;
    }
    Some(match positive_id(rest) {
        Some(id) => AuditRoom::Project(id),
        None => AuditRoom::Malformed,
    })
}

/// `text` as a positive id written plainly (no sign, no other segment).
fn positive_id(text: &str) -> Option<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0 && !text.starts_with('+'))
}

/// A room of the issue tracker, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackerRoom {
    /// `project:{id}`.
    Project(i64),
    /// `issue:{id}`.
    Issue(i64),
    /// `project:…` or `issue:…` without a single positive id after the prefix.
    Malformed,
}

fn tracker_room(room: &str) -> Option<TrackerRoom> {
    let (kind, rest) = room.split_once(':').unwrap_or((room, ""));
    if kind != "project" && kind != "issue" {
        return None;
    }
    Some(match (kind, positive_id(rest)) {
        ("project", Some(id)) => TrackerRoom::Project(id),
        ("issue", Some(id)) => TrackerRoom::Issue(id),
        _ => TrackerRoom::Malformed,
    })
}

/// Access decisions over the store's memberships.
pub struct AccessControl {
    store: Store,
    cache: AccessCache,
}

impl AccessControl {
    /// Decides over `store`'s memberships.
    pub fn new(store: Store) -> AccessControl {
        AccessControl {
            store,
            cache: AccessCache::default(),
        }
    }

    /// The principal's role in `project`, read from the store: `Admin` for a global
    /// administrator, `None` for a non-member.
    pub async fn project_role(
        &self,
        principal: &Principal,
        project: i64,
    ) -> Result<Option<Role>, StoreError> {
        match principal {
            _ if principal.is_admin() => Ok(Some(Role::Admin)),
            Principal::User { subject, .. } => self.store.membership_role(subject, project).await,
            _ => Ok(None),
        }
    }

    /// Whether `principal` may read (subscribe to, read the history of) or publish to
    /// `room`. Used by the WebSocket connection and by the HTTP room routes alike.
    pub async fn room_access(
        &self,
        principal: &Principal,
        room: &str,
        action: RoomAction,
    ) -> Result<Access, StoreError> {
        if let Some(audit) = audit_room_of(room) {
            return self.audit_access(principal, audit, room, action).await;
        }
        if principal.is_admin() {
            return Ok(Access::Allowed);
        }
        match (tracker_room(room), principal) {
            (None, _) => Ok(claims_access(principal, room, action)),
            (Some(tracker), Principal::User { subject, .. }) => {
                self.tracker_access(subject, tracker, room, action).await
            }
            (Some(_), _) => Ok(Access::Denied(format!("{room} needs a user"))),
        }
    }

    /// An audit room: read by those who may read its entries through the API, published
    /// to by nobody (the outbox relay publishes without asking).
    async fn audit_access(
        &self,
        principal: &Principal,
        audit: AuditRoom,
        room: &str,
        action: RoomAction,
    ) -> Result<Access, StoreError> {
        if action == RoomAction::Publish {
            return Ok(Access::Denied(format!(
                "{room} is written by the server only"
            )));
        }
        if principal.is_admin() {
            return Ok(Access::Allowed);
        }
        let role = match (audit, principal) {
            (AuditRoom::Project(project), Principal::User { subject, .. }) => {
                self.cached_role(subject, project).await?
            }
            _ => None,
        };
        Ok(if role == Some(Role::Admin) {
            Access::Allowed
        } else {
            Access::Denied(format!(
                "reading {room} needs the admin role in its project, or a global administrator"
            ))
        })
    }

    /// A room of the tracker: the user's role in the room's project decides.
    async fn tracker_access(
        &self,
        user: &str,
        tracker: TrackerRoom,
        room: &str,
        action: RoomAction,
    ) -> Result<Access, StoreError> {
        let project = match tracker {
            TrackerRoom::Project(id) => Some(id),
            TrackerRoom::Issue(id) => self.issue_project(id).await?,
            TrackerRoom::Malformed => None,
        };
        let role = match project {
            Some(project) => self.cached_role(user, project).await?,
            None => None,
        };
        let needed = match action {
            RoomAction::Read => Role::Viewer,
            RoomAction::Publish => Role::Member,
        };
        Ok(match role {
            Some(role) if role.includes(needed) => Access::Allowed,
            Some(_) => Access::Denied(format!("{} {room} needs the member role", verb(action))),
            // Said the same way whether or not the project or issue exists.
            None => Access::Denied(format!(
                "only members of its project may {} {room}",
                bare_verb(action)
            )),
        })
    }

    /// A membership of `user` in `project` was created or its role raised.
    pub fn membership_changed(&self, user: &str, project: i64) {
        self.cache.forget(user, project);
    }

    /// A membership of `user` in `project` was removed or its role lowered: what they
    /// were allowed a moment ago may now be refused.
    /// This drops this instance's cache entry only; `Api::membership_removed` also tells
    /// every instance (which re-checks the user's subscriptions) through the control
    /// room.
    pub fn membership_removed(&self, user: &str, project: i64) {
        self.cache.forget(user, project);
    }

    async fn cached_role(&self, user: &str, project: i64) -> Result<Option<Role>, StoreError> {
        if let Some(role) = self.cache.role(user, project) {
            return Ok(role);
        }
        let role = self.store.membership_role(user, project).await?;
        self.cache.remember_role(user, project, role);
        Ok(role)
    }

    async fn issue_project(&self, issue: i64) -> Result<Option<i64>, StoreError> {
        if let Some(project) = self.cache.project_of(issue) {
            return Ok(project);
        }
        let project = match self.store.issue_project(issue).await {
            Ok(project) => Some(project),
            Err(StoreError::NotFound) => None,
            Err(err) => return Err(err),
        };
        self.cache.remember_project(issue, project);
        Ok(project)
    }
}

/// Any other room: the token's room claims decide.
fn claims_access(principal: &Principal, room: &str, action: RoomAction) -> Access {
    let granted = match action {
        RoomAction::Read => principal.may_subscribe(room),
        RoomAction::Publish => principal.may_publish(room),
    };
    if granted {
        Access::Allowed
    } else {
        Access::Denied(format!("your token does not allow {} {room}", verb(action)))
    }
}

fn verb(action: RoomAction) -> &'static str {
    match action {
        RoomAction::Read => "reading",
        RoomAction::Publish => "publishing to",
    }
}

fn bare_verb(action: RoomAction) -> &'static str {
    match action {
        RoomAction::Read => "read",
        RoomAction::Publish => "publish to",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_rooms_are_recognised_by_their_first_segment() {
        assert_eq!(tracker_room("project:12"), Some(TrackerRoom::Project(12)));
        assert_eq!(tracker_room("issue:7"), Some(TrackerRoom::Issue(7)));
        for malformed in [
            "project",
            "project:",
            "project:0",
            "project:-1",
            "project:+1",
            "project:1:x",
            "issue:abc",
            "issue:*",
        ] {
            assert_eq!(
                tracker_room(malformed),
                Some(TrackerRoom::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(tracker_room("projects:1"), None);
        assert_eq!(tracker_room("lobby"), None);
        assert_eq!(tracker_room("team:project:1"), None);
    }

    #[test]
    fn audit_rooms_are_recognised_by_their_first_segment() {
        assert_eq!(audit_room_of("audit"), Some(AuditRoom::All));
        assert_eq!(audit_room_of("audit:12"), Some(AuditRoom::Project(12)));
        assert_eq!(
            audit_room_of(&crate::tracker::audit_room(3)),
            Some(AuditRoom::Project(3))
        );
        for malformed in ["audit:", "audit:0", "audit:+1", "audit:1:x", "audit:*"] {
            assert_eq!(
                audit_room_of(malformed),
                Some(AuditRoom::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(audit_room_of("audits"), None);
        assert_eq!(audit_room_of("auditor:1"), None);
        assert_eq!(audit_room_of("team:audit"), None);
    }
}
