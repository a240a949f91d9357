//! `/api/v1/issues/{id}/comments` and `/api/v1/issues/{id}/comments/{comment_id}`.

use super::access::require_for_issue;
use super::input::{Checks, Params, idempotency_key, if_match, int_param, json_body, page_limit};
use super::issues::not_found_as;
use super::{
    Api, Context, Reply, idempotency, key_reused, not_modified, page, replay, resource,
    stored_created,
};
use crate::store::Outcome;
use crate::tracker::{Role, TEXT_MAX};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

/// Body of a comment create or update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    body: String,
}

fn location(issue_id: i64, id: i64) -> String {
    format!("/api/v1/issues/{issue_id}/comments/{id}")
}

fn checked(body: CommentBody) -> Result<String, super::ApiError> {
    let mut checks = Checks::default();
    checks.text("body", &body.body, 1, TEXT_MAX);
    checks.finish()?;
    Ok(body.body)
}

pub async fn create(
    api: &Api,
    request: Request<Incoming>,
    context: &Context,
    issue_id: i64,
) -> Reply {
    let (method, path, headers) = (
        request.method().clone(),
        request.uri().path().to_owned(),
        request.headers().clone(),
    );
    idempotency_key(&headers)?;
    let (body, raw): (CommentBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let text = checked(body)?;
    require_for_issue(api, context, issue_id, Role::Member, "issue").await?;
    let key = idempotency(&headers, &context.principal, &method, &path, &raw)?;
    let outcome = api
        .store
        .create_comment(&context.mutation(key), issue_id, text, |comment| {
            stored_created(comment, comment.version, location(issue_id, comment.id))
        })
        .await
        .map_err(|e| not_found_as(e, "issue"))?;
    match outcome {
        Outcome::Done(comment) => Ok(resource(
            StatusCode::CREATED,
            &comment,
            comment.version,
            Some(location(issue_id, comment.id)),
        )),
        Outcome::Replay(stored) => Ok(replay(stored)),
        Outcome::KeyReused => Err(key_reused()),
    }
}

pub async fn get(
    api: &Api,
    request: Request<Incoming>,
    context: &Context,
    issue_id: i64,
    id: i64,
) -> Reply {
    require_for_issue(api, context, issue_id, Role::Viewer, "comment").await?;
    let comment = api
        .store
        .get_comment(&context.caller(), issue_id, id)
        .await
        .map_err(|e| not_found_as(e, "comment"))?;
    if let Some(response) = not_modified(request.headers(), comment.version) {
        return Ok(response);
    }
    Ok(resource(StatusCode::OK, &comment, comment.version, None))
}

/// The query parameters of `GET /api/v1/issues/{id}/comments`.
pub const LIST_PARAMS: &[&str] = &["cursor", "limit"];

pub async fn list(api: &Api, params: &Params, context: &Context, issue_id: i64) -> Reply {
    let limit = page_limit(params, api.config.page_default, api.config.page_max)?;
    let after = int_param(params, "cursor")?.unwrap_or(0);
    require_for_issue(api, context, issue_id, Role::Viewer, "issue").await?;
    let comments = api
        .store
        .list_comments(&context.caller(), issue_id, after, limit)
        .await
        .map_err(|e| not_found_as(e, "issue"))?;
    Ok(page(&comments, limit, |comment| comment.id))
}

pub async fn update(
    api: &Api,
    request: Request<Incoming>,
    context: &Context,
    issue_id: i64,
    id: i64,
) -> Reply {
    let expected = if_match(request.headers())?;
    let (body, _): (CommentBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let text = checked(body)?;
    require_for_issue(api, context, issue_id, Role::Member, "comment").await?;
    let comment = api
        .store
        .update_comment(&context.mutation(None), issue_id, id, expected, text)
        .await
        .map_err(|e| not_found_as(e, "comment"))?;
    Ok(resource(StatusCode::OK, &comment, comment.version, None))
}

pub async fn delete(
    api: &Api,
    request: Request<Incoming>,
    context: &Context,
    issue_id: i64,
    id: i64,
) -> Reply {
    let expected = if_match(request.headers())?;
    require_for_issue(api, context, issue_id, Role::Member, "comment").await?;
    api.store
        .delete_comment(&context.mutation(None), issue_id, id, expected)
        .await
        .map_err(|e| not_found_as(e, "comment"))?;
    let mut response = hyper::Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
