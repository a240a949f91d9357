//! The issue tracker behind the HTTP sidecar: its domain model. Storage is in
//! [`crate::store`], the HTTP API in [`crate::api`].

mod model;

pub use model::{
    ASSIGNEE_MAX, AUDIT_ROOM, Action, Actor, Comment, Entity, Issue, IssuePatch, IssueType,
    Membership, NewIssue, Priority, Role, Status, TEXT_MAX, TITLE_MAX, USER_ID_MAX, audit_room,
    changes, event, fields, format_time, rfc3339,
};
