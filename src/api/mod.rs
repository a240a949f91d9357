//! The HTTP sidecar under `/api/v1/`: issues and comments of the issue tracker (stored,
//! audited, broadcast through the outbox), the audit log, publishing to rooms and
//! reading their history. Every request is authenticated and rate limited first; what
//! the caller may then do follows project membership (see `access.rs`).

mod access;
mod admin;
mod audit;
mod comments;
mod error;
mod input;
mod issues;
mod maintenance;
mod members;
mod presence;
mod rate_limit;
mod rooms;
mod users;

pub use error::{ApiError, FieldError};
pub use input::percent_decode;
pub use maintenance::spawn_maintenance;
pub use rate_limit::{Class, Decision, RateLimiter, Refused};

use crate::access::AccessControl;
use crate::auth::{Authenticator, Principal, bearer};
use crate::broker::Broker;
use crate::config::{ApiConfig, Config};
use crate::connection::ConnectionContext;
use crate::protocol::RoomNameRules;
use crate::response::Body;
use crate::store::{Caller, IdempotencyKey, Mutation, Store, StoredResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;

/// Everything the API handlers share.
pub struct Api {
    /// The tracker's database.
    pub store: Store,
    /// Credentials.
    pub auth: Arc<Authenticator>,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Publishing (with its timeout and metrics) and the broker.
    pub context: Arc<ConnectionContext>,
    /// Limits and page sizes.
    pub config: ApiConfig,
    /// Room-name rules.
    pub rooms: RoomNameRules,
    /// Who may do what (shared with the WebSocket connections).
    pub access: Arc<AccessControl>,
    /// This instance's membership in the cluster.
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// What a handler knows about its request besides the request itself.
pub struct Context {
    /// The caller.
    pub principal: Principal,
    /// `X-Request-Id`.
    pub request_id: String,
}

impl Context {
    /// The mutation record for the store, with the idempotency key if the request had one.
    fn mutation(&self, idempotency: Option<IdempotencyKey>) -> Mutation {
        Mutation {
            actor: self.principal.actor(),
            request_id: self.request_id.clone(),
            idempotency,
            admin: self.principal.is_admin(),
        }
    }

    /// The acting user of the store's transactions.
    fn caller(&self) -> Caller {
        Caller {
            user: self.principal.actor().name,
            admin: self.principal.is_admin(),
        }
    }
}

/// The result of a handler.
pub type Reply = Result<Response<Body>, ApiError>;

impl Api {
    /// Builds the API over an opened store (inside a tokio runtime).
    pub fn new(
        config: &Config,
        store: Store,
        auth: Arc<Authenticator>,
        context: Arc<ConnectionContext>,
        cluster: Arc<crate::cluster::Cluster>,
    ) -> Arc<Self> {
        let api = Arc::new(Api {
            store,
            auth,
            limiter: RateLimiter::new(&config.rate_limits),
            config: config.api.clone(),
            rooms: config.room_name_rules(),
            access: context.access.clone(),
            context,
            cluster,
        });
        // Forget idle rate-limit buckets now and then (they would be full anyway).
        let weak = Arc::downgrade(&api);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(api) = weak.upgrade() else { return };
                api.limiter.forget_idle();
            }
        });
        api
    }

    /// A membership of `user` in `project` was removed or lowered: this instance forgets
    /// its cached role at once, and every instance (this one too) re-checks the user's
    /// subscriptions through the control room. If the broker cannot take the command, the
    /// other instances still see the change within the access cache's TTL, and the
    /// user's existing subscriptions there stay until they reconnect.
    pub async fn membership_removed(&self, user: &str, project: i64) {
        self.access.membership_removed(user, project);
        let command = crate::control::Command::MembershipRemoved {
            user: user.to_owned(),
            project,
        };
        if let Err(err) = crate::control::send(&self.context.publisher, &command).await {
            tracing::warn!(user, project, error = %err, "cannot tell the other instances about a membership change");
        }
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.context.broker
    }

    /// Serves one request under `/api/v1/`. Returns the route template (for metrics)
    /// and the response.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        request_id: &str,
    ) -> (&'static str, Response<Body>) {
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path
            .strip_prefix("/api/v1")
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let route = route_template(&segments);
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        let principal = match self.limiter.authenticate(&self.auth, peer, token) {
            Ok(principal) => principal,
            Err(refused) => return (route, refused.into_response("api")),
        };
        let class = match *request.method() {
            Method::GET | Method::HEAD => Class::Read,
            _ => Class::Write,
        };
        let limit_key = match &principal {
            Principal::Anonymous => format!("ip:{peer}"),
            other => other.key(),
        };
        let decision = self.limiter.check(&principal, &limit_key, class);
        let context = Context {
            principal,
            request_id: request_id.to_owned(),
        };
        let mut response = if decision.allowed {
            match self.dispatch(request, &segments, &context).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            }
        } else {
            metrics::counter!("roomcast_http_rate_limited_total").increment(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down",
            )
            .into_response()
        };
        for (name, value) in decision.headers() {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name, value);
            }
        }
        (route, response)
    }

    /// The route table: one line per method and path, so it is longer than ~60 lines on
    /// purpose (split, it would be harder to see which routes exist).
    async fn dispatch(
        &self,
        request: Request<Incoming>,
        segments: &[&str],
        context: &Context,
    ) -> Reply {
        let method = request.method().clone();
        let Some(names) = query_names(segments, &method) else {
            return Err(unrouted(segments));
        };
        // Checked for every route, so that no parameter is silently ignored anywhere.
        let params = input::query(request.uri(), names)?;
        match (segments, &method) {
            (["issues"], &Method::GET) => issues::list(self, &params, context).await,
            (["issues"], &Method::POST) => issues::create(self, request, context).await,
            (["issues", id], &Method::GET) => {
                issues::get(self, request, context, parse_id(id)?).await
            }
            (["issues", id], &Method::PATCH) => {
                issues::update(self, request, context, parse_id(id)?).await
            }
            (["issues", id], &Method::DELETE) => {
                issues::delete(self, request, context, parse_id(id)?).await
            }
            (["issues", id, "comments"], &Method::GET) => {
                comments::list(self, &params, context, parse_id(id)?).await
            }
            (["issues", id, "comments"], &Method::POST) => {
                comments::create(self, request, context, parse_id(id)?).await
            }
            (["issues", id, "comments", cid], &Method::GET) => {
                comments::get(self, request, context, parse_id(id)?, parse_id(cid)?).await
            }
            (["issues", id, "comments", cid], &Method::PATCH) => {
                comments::update(self, request, context, parse_id(id)?, parse_id(cid)?).await
            }
            (["issues", id, "comments", cid], &Method::DELETE) => {
                comments::delete(self, request, context, parse_id(id)?, parse_id(cid)?).await
            }
            (["audit"], &Method::GET) => audit::search(self, &params, context).await,
            (["audit", "export"], &Method::GET) => audit::export(self, &params, context).await,
            (["projects", id, "members"], &Method::GET) => {
                members::list(self, &params, context, parse_id(id)?).await
            }
            (["projects", id, "members", user], &Method::PUT) => {
                members::put(self, request, context, parse_id(id)?, user).await
            }
            (["projects", id, "members", user], &Method::DELETE) => {
                members::delete(self, context, parse_id(id)?, user).await
            }
            (["admin", "users", user, "export"], &Method::GET) => {
                users::export(self, context, user).await
            }
            (["admin", "users", user, "erase"], &Method::POST) => {
                users::erase(self, context, user).await
            }
            (["publish"], &Method::POST) => rooms::publish(self, request, context).await,
            (["admin", "disconnect"], &Method::POST) => {
                admin::disconnect(self, request, context).await
            }
            (["admin", "unsubscribe"], &Method::POST) => {
                admin::unsubscribe(self, request, context).await
            }
            (["admin", "cluster"], &Method::GET) => admin::cluster(self, context).await,
            (["admin", "drain"], &Method::POST) => admin::drain(self, request, context).await,
            (["rooms", room, "history"], &Method::GET) => {
                rooms::history(self, &params, context, room).await
            }
            (["rooms", room, "presence"], &Method::GET) => {
                presence::entries(self, context, room).await
            }
            (["rooms", room, "presence", "stats"], &Method::GET) => {
                presence::stats(self, context, room).await
            }
            _ => Err(unrouted(segments)),
        }
    }
}

/// 405 with `Allow` for a known path, else 404.
fn unrouted(segments: &[&str]) -> ApiError {
    match allowed_methods(segments) {
        Some(allow) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allow}"),
        )
        .with_header("allow", allow),
        None => ApiError::not_found("route"),
    }
}

/// The query parameters a route takes with `method`; `None` when the path does not
/// exist or has no such method.
fn query_names(segments: &[&str], method: &Method) -> Option<&'static [&'static str]> {
    match (segments, method) {
        (["issues"], &Method::GET) => Some(issues::LIST_PARAMS),
        (["issues", _, "comments"], &Method::GET) => Some(comments::LIST_PARAMS),
        (["audit"], &Method::GET) => Some(audit::SEARCH_PARAMS),
        (["audit", "export"], &Method::GET) => Some(audit::EXPORT_PARAMS),
        (["rooms", _, "history"], &Method::GET) => Some(rooms::HISTORY_PARAMS),
        (["projects", _, "members"], &Method::GET) => Some(members::LIST_PARAMS),
        _ => allowed_methods(segments)
            .filter(|allow| allow.split(", ").any(|m| m == method.as_str()))
            .map(|_| &[][..]),
    }
}

/// The route's template, for metrics labels (ids and rooms replaced).
fn route_template(segments: &[&str]) -> &'static str {
    match segments {
        ["issues"] => "/api/v1/issues",
        ["issues", _] => "/api/v1/issues/{id}",
        ["issues", _, "comments"] => "/api/v1/issues/{id}/comments",
        ["issues", _, "comments", _] => "/api/v1/issues/{id}/comments/{comment_id}",
        ["audit"] => "/api/v1/audit",
        ["audit", "export"] => "/api/v1/audit/export",
        ["publish"] => "/api/v1/publish",
        ["admin", "disconnect"] => "/api/v1/admin/disconnect",
        ["admin", "unsubscribe"] => "/api/v1/admin/unsubscribe",
        ["admin", "cluster"] => "/api/v1/admin/cluster",
        ["admin", "drain"] => "/api/v1/admin/drain",
        ["rooms", _, "history"] => "/api/v1/rooms/{room}/history",
        ["rooms", _, "presence"] => "/api/v1/rooms/{room}/presence",
        ["rooms", _, "presence", "stats"] => "/api/v1/rooms/{room}/presence/stats",
        ["projects", _, "members"] => "/api/v1/projects/{id}/members",
        ["projects", _, "members", _] => "/api/v1/projects/{id}/members/{user}",
        ["admin", "users", _, "export"] => "/api/v1/admin/users/{user}/export",
        ["admin", "users", _, "erase"] => "/api/v1/admin/users/{user}/erase",
        _ => "/api/v1/other",
    }
}

fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["issues"] | ["issues", _, "comments"] => Some("GET, POST"),
        ["issues", _] | ["issues", _, "comments", _] => Some("GET, PATCH, DELETE"),
        ["audit"] | ["audit", "export"] | ["rooms", _, "history"] | ["admin", "cluster"] => {
            Some("GET")
        }
        ["rooms", _, "presence"] | ["rooms", _, "presence", "stats"] => Some("GET"),
        ["publish"]
        | ["admin", "disconnect"]
        | ["admin", "unsubscribe"]
        | ["admin", "drain"]
        | ["admin", "users", _, "erase"] => Some("POST"),
        ["projects", _, "members"] | ["admin", "users", _, "export"] => Some("GET"),
        ["projects", _, "members", _] => Some("PUT, DELETE"),
        _ => None,
    }
}

fn parse_id(segment: &str) -> Result<i64, ApiError> {
    segment
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found("resource"))
}

/// The idempotency record key of a POST, if it carried `Idempotency-Key`.
fn idempotency(
    headers: &hyper::HeaderMap,
    principal: &Principal,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    Ok(input::idempotency_key(headers)?.map(|key| {
        let mut hash = Sha256::new();
        hash.update(method.as_str().as_bytes());
        hash.update(b" ");
        hash.update(path.as_bytes());
        hash.update(b"\n");
        hash.update(body);
        IdempotencyKey {
            principal: principal.key(),
            key,
            request_hash: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }))
}

/// A stored response, sent again.
fn replay(stored: StoredResponse) -> Response<Body> {
    let mut response = Response::new(crate::response::full(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "idempotent-replayed",
        hyper::header::HeaderValue::from_static("true"),
    );
    if let Some(location) = stored.location.and_then(|l| l.parse().ok()) {
        headers.insert("location", location);
    }
    if let Some(etag) = stored.etag.and_then(|e| e.parse().ok()) {
        headers.insert("etag", etag);
    }
    response
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

/// A JSON response with an ETag (and a Location for 201).
fn resource<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
    version: i64,
    location: Option<String>,
) -> Response<Body> {
    let mut response = crate::response::json_response(status, value);
    let headers = response.headers_mut();
    if let Ok(etag) = format!("\"{version}\"").parse() {
        headers.insert("etag", etag);
    }
    if let Some(location) = location.and_then(|l| l.parse().ok()) {
        headers.insert("location", location);
    }
    response
}

/// The stored form of a 201 response, for idempotent replays.
fn stored_created<T: serde::Serialize>(
    value: &T,
    version: i64,
    location: String,
) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: serde_json::to_string(value).expect("resources serialize"),
        location: Some(location),
        etag: Some(format!("\"{version}\"")),
    }
}

/// 304 when `If-None-Match` names the current version.
fn not_modified(headers: &hyper::HeaderMap, version: i64) -> Option<Response<Body>> {
    let tag = format!("\"{version}\"");
    let matches = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        });
    matches.then(|| {
        let mut response = Response::new(crate::response::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        if let Ok(etag) = tag.parse() {
            response.headers_mut().insert("etag", etag);
        }
        response
    })
}

/// `{"items": [...], "next_cursor": "…"|null}` for a page of rows with ids.
fn page<T: serde::Serialize>(items: &[T], limit: i64, id_of: impl Fn(&T) -> i64) -> Response<Body> {
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|item| id_of(item).to_string()))
        .flatten();
    crate::response::json_response(
        StatusCode::OK,
        &serde_json::json!({ "items": items, "next_cursor": next }),
    )
}
