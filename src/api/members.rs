//! `/api/v1/projects/{id}/members` and `/api/v1/projects/{id}/members/{user}`: a
//! project's members, readable by its members, managed by its admins (and global
//! administrators).

use super::access::require;
use super::input::{Checks, FieldErrors, Params, int_param, json_body, page_limit, percent_decode};
use super::{Api, ApiError, Context, Reply, page};
use crate::tracker::{Role, USER_ID_MAX};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

/// Body of `PUT /api/v1/projects/{id}/members/{user}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutMember {
    role: String,
}

/// The query parameters of `GET /api/v1/projects/{id}/members`.
pub const LIST_PARAMS: &[&str] = &["cursor", "limit"];

/// A user id from a path segment: percent-decoded, 1 to [`USER_ID_MAX`] characters,
/// no control characters.
pub fn user_id(segment: &str) -> Result<String, ApiError> {
    let user = percent_decode(segment).unwrap_or_default();
    check_user_id(&user)?;
    Ok(user)
}

/// A user id (a token's `sub`) as the API takes it: 1 to `USER_ID_MAX` characters,
/// no control characters.
pub fn check_user_id(user: &str) -> Result<(), ApiError> {
    let count = user.chars().count();
    if (1..=USER_ID_MAX).contains(&count) && !user.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(FieldErrors::one(
            "user",
            &format!("must be 1 to {USER_ID_MAX} characters without control characters"),
        ))
    }
}

pub async fn list(api: &Api, params: &Params, context: &Context, project: i64) -> Reply {
    let limit = page_limit(params, api.config.page_default, api.config.page_max)?;
    let after = int_param(params, "cursor")?.unwrap_or(0);
    require(api, context, project, Role::Viewer, "project").await?;
    let members = api
        .store
        .list_members(&context.caller(), project, after, limit)
        .await?;
    Ok(page(&members, limit, |member| member.id))
}

pub async fn put(
    api: &Api,
    request: Request<Incoming>,
    context: &Context,
    project: i64,
    user: &str,
) -> Reply {
    let user = user_id(user)?;
    let (body, _): (PutMember, _) = json_body(request, api.config.max_body_bytes).await?;
    let mut checks = Checks::default();
    let role = checks.one_of("role", &body.role, Role::parse, Role::ALL);
    checks.finish()?;
    let role = role.expect("checked");
    require(api, context, project, Role::Admin, "project").await?;
    let change = api
        .store
        .put_membership(&context.mutation(None), project, &user, role)
        .await?;
    match change.previous {
        Some(previous) if !role.includes(previous) => api.membership_removed(&user, project).await,
        _ => api.access.membership_changed(&user, project),
    }
    let status = match change.previous {
        None => StatusCode::CREATED,
        Some(_) => StatusCode::OK,
    };
    Ok(crate::response::json_response(status, &change.membership))
}

pub async fn delete(api: &Api, context: &Context, project: i64, user: &str) -> Reply {
    let user = user_id(user)?;
    require(api, context, project, Role::Admin, "project").await?;
    api.store
        .delete_membership(&context.mutation(None), project, &user)
        .await
        .map_err(|e| super::issues::not_found_as(e, "membership"))?;
    api.membership_removed(&user, project).await;
    let mut response = hyper::Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::user_id;

    #[test]
    fn user_ids_from_paths() {
        assert_eq!(user_id("alice").unwrap(), "alice");
        assert_eq!(user_id("a%40b.example").unwrap(), "a@b.example");
        assert!(user_id("").is_err());
        assert!(user_id("a%0Ab").is_err());
        assert!(user_id(&"x".repeat(201)).is_err());
    }
}
