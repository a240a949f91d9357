//! The API's side of project membership: the caller's role in a project, checked before
//! a handler reads or writes anything of it (the decision itself is
//! [`crate::access::AccessControl`]'s).
//!
//! A caller who is not a member of the project learns nothing about it: the answer is
//! the 404 a missing resource of the same route gets, with the same body. A member whose
//! role is too low for the request gets 403.

use super::{Api, ApiError, Context};
use crate::store::StoreError;
use crate::tracker::Role;
use hyper::StatusCode;

/// Fails unless the caller holds at least `needed` in `project`; a non-member gets
/// "`missing` not found".
pub async fn require(
    api: &Api,
    context: &Context,
    project: i64,
    needed: Role,
    missing: &str,
) -> Result<(), ApiError> {
    match api.access.project_role(&context.principal, project).await? {
        None => Err(ApiError::not_found(missing)),
        Some(role) if role.includes(needed) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {} role in the project", needed.as_str()),
        )),
    }
}

/// Like [`require`], for a resource of an issue: a missing issue is "`missing` not
/// found" too. (Global administrators are not checked: the store answers them.)
pub async fn require_for_issue(
    api: &Api,
    context: &Context,
    issue: i64,
    needed: Role,
    missing: &str,
) -> Result<(), ApiError> {
    if context.principal.is_admin() {
        return Ok(());
    }
    let project = match api.store.issue_project(issue).await {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Err(ApiError::not_found(missing)),
        Err(err) => return Err(err.into()),
    };
    require(api, context, project, needed, missing).await
}

/// Fails unless the caller is a global administrator.
pub fn require_admin(context: &Context) -> Result<(), ApiError> {
    if context.principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs a global administrator (a token with the admin role, or a service token)",
        ))
    }
}
