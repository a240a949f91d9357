//! `/api/v1/issues` and `/api/v1/issues/{id}`.

use super::access::{require, require_for_issue};
use super::input::{
    Checks, Params, idempotency_key, if_match, int_param, json_body, nullable, page_limit,
};
use super::{
    Api, ApiError, Context, Reply, idempotency, key_reused, not_modified, page, replay, resource,
    stored_created,
};
use crate::store::{IssueFilter, Outcome};
use crate::tracker::{
    ASSIGNEE_MAX, IssuePatch, IssueType, NewIssue, Priority, Role, Status, TEXT_MAX, TITLE_MAX,
};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

/// Body of `POST /api/v1/issues`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIssue {
    project_id: i64,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_status")]
    status: String,
    #[serde(default = "default_priority")]
    priority: String,
    #[serde(rename = "type", default = "default_type")]
    issue_type: String,
    #[serde(default)]
    assignee: Option<String>,
}

fn default_status() -> String {
    "open".into()
}
fn default_priority() -> String {
    "medium".into()
}
fn default_type() -> String {
    "task".into()
}

/// Body of `PATCH /api/v1/issues/{id}`: any subset of the fields; `assignee: null`
/// unassigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateIssue {
    #[serde(default, deserialize_with = "nullable")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    status: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    priority: Option<Option<String>>,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    issue_type: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    assignee: Option<Option<String>>,
}

/// A PATCH field that may be absent but not null.
fn not_null(checks: &mut Checks, field: &str, value: Option<Option<String>>) -> Option<String> {
    checks.check(!matches!(value, Some(None)), field, "must not be null");
    value.flatten()
}

/// [`UpdateIssue`] with nulls refused.
struct UpdatePatch {
    title: Option<String>,
    description: Option<String>,
    status: Option<String>,
    priority: Option<String>,
    issue_type: Option<String>,
    assignee: Option<Option<String>>,
}

fn location(id: i64) -> String {
    format!("/api/v1/issues/{id}")
}

pub async fn create(api: &Api, request: Request<Incoming>, context: &Context) -> Reply {
    let (method, path, headers) = (
        request.method().clone(),
        request.uri().path().to_owned(),
        request.headers().clone(),
    );
    idempotency_key(&headers)?;
    let (body, raw): (CreateIssue, _) = json_body(request, api.config.max_body_bytes).await?;
    let mut checks = Checks::default();
    checks.check(
        body.project_id > 0,
        "project_id",
        "must be a positive integer",
    );
    checks.text("title", &body.title, 1, TITLE_MAX);
    checks.text("description", &body.description, 0, TEXT_MAX);
    let status = checks.one_of("status", &body.status, Status::parse, Status::ALL);
    let priority = checks.one_of("priority", &body.priority, Priority::parse, Priority::ALL);
    let issue_type = checks.one_of("type", &body.issue_type, IssueType::parse, IssueType::ALL);
    if let Some(assignee) = &body.assignee {
        checks.text("assignee", assignee, 1, ASSIGNEE_MAX);
    }
    checks.finish()?;
    require(api, context, body.project_id, Role::Member, "project").await?;
    let new = NewIssue {
        project_id: body.project_id,
        title: body.title,
        description: body.description,
        status: status.expect("checked"),
        priority: priority.expect("checked"),
        issue_type: issue_type.expect("checked"),
        assignee: body.assignee,
    };
    let key = idempotency(&headers, &context.principal, &method, &path, &raw)?;
    let mutation = context.mutation(key);
    match api
        .store
        .create_issue(&mutation, new, |issue| {
            stored_created(issue, issue.version, location(issue.id))
        })
        .await?
    {
        Outcome::Done(issue) => Ok(resource(
            StatusCode::CREATED,
            &issue,
            issue.version,
            Some(location(issue.id)),
        )),
        Outcome::Replay(stored) => Ok(replay(stored)),
        Outcome::KeyReused => Err(key_reused()),
    }
}

pub async fn get(api: &Api, request: Request<Incoming>, context: &Context, id: i64) -> Reply {
    require_for_issue(api, context, id, Role::Viewer, "issue").await?;
    let issue = api
        .store
        .get_issue(&context.caller(), id)
        .await
        .map_err(|e| not_found_as(e, "issue"))?;
    if let Some(response) = not_modified(request.headers(), issue.version) {
        return Ok(response);
    }
    Ok(resource(StatusCode::OK, &issue, issue.version, None))
}

/// The query parameters of `GET /api/v1/issues`.
pub const LIST_PARAMS: &[&str] = &[
    "project_id",
    "status",
    "priority",
    "assignee",
    "cursor",
    "limit",
];

/// Lists issues of the projects the caller belongs to (every project's for a global
/// administrator); a `project_id` the caller does not belong to gives an empty page, like
/// a project without issues.
pub async fn list(api: &Api, params: &Params, context: &Context) -> Reply {
    let mut checks = Checks::default();
    let status = params
        .get("status")
        .and_then(|s| checks.one_of("status", s, Status::parse, Status::ALL));
    let priority = params
        .get("priority")
        .and_then(|p| checks.one_of("priority", p, Priority::parse, Priority::ALL));
    checks.finish()?;
    let limit = page_limit(params, api.config.page_default, api.config.page_max)?;
    let filter = IssueFilter {
        project_id: int_param(params, "project_id")?,
        status,
        priority,
        assignee: params.get("assignee").cloned(),
        after_id: int_param(params, "cursor")?.unwrap_or(0),
        limit,
    };
    let issues = api.store.list_issues(&context.caller(), &filter).await?;
    Ok(page(&issues, limit, |issue| issue.id))
}

pub async fn update(api: &Api, request: Request<Incoming>, context: &Context, id: i64) -> Reply {
    let expected = if_match(request.headers())?;
    let (raw, _): (UpdateIssue, _) = json_body(request, api.config.max_body_bytes).await?;
    let mut checks = Checks::default();
    let body = UpdatePatch {
        title: not_null(&mut checks, "title", raw.title),
        description: not_null(&mut checks, "description", raw.description),
        status: not_null(&mut checks, "status", raw.status),
        priority: not_null(&mut checks, "priority", raw.priority),
        issue_type: not_null(&mut checks, "type", raw.issue_type),
        assignee: raw.assignee,
    };
    if let Some(title) = &body.title {
        checks.text("title", title, 1, TITLE_MAX);
    }
    if let Some(description) = &body.description {
        checks.text("description", description, 0, TEXT_MAX);
    }
    let patch = IssuePatch {
        status: body
            .status
            .as_deref()
            .and_then(|s| checks.one_of("status", s, Status::parse, Status::ALL)),
        priority: body
            .priority
            .as_deref()
            .and_then(|p| checks.one_of("priority", p, Priority::parse, Priority::ALL)),
        issue_type: body
            .issue_type
            .as_deref()
            .and_then(|t| checks.one_of("type", t, IssueType::parse, IssueType::ALL)),
        title: body.title,
        description: body.description,
        assignee: body.assignee,
    };
    if let Some(Some(assignee)) = &patch.assignee {
        checks.text("assignee", assignee, 1, ASSIGNEE_MAX);
    }
    checks.finish()?;
    require_for_issue(api, context, id, Role::Member, "issue").await?;
    let issue = api
        .store
        .update_issue(&context.mutation(None), id, expected, &patch)
        .await
        .map_err(|e| not_found_as(e, "issue"))?;
    Ok(resource(StatusCode::OK, &issue, issue.version, None))
}

pub async fn delete(api: &Api, request: Request<Incoming>, context: &Context, id: i64) -> Reply {
    let expected = if_match(request.headers())?;
    require_for_issue(api, context, id, Role::Member, "issue").await?;
    api.store
        .delete_issue(&context.mutation(None), id, expected)
        .await
        .map_err(|e| not_found_as(e, "issue"))?;
    let mut response = hyper::Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// A store error, with "not found" naming what was not found.
pub(super) fn not_found_as(err: crate::store::StoreError, what: &str) -> ApiError {
    match err {
        crate::store::StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}
