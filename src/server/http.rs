//! HTTP routing on the shared listener.

use super::App;
use super::origin::{self, Origin};
use super::{sse, websocket};
use crate::telemetry::traces;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub use crate::response::{Body, BoxError, empty, full, json_error, json_response};

/// Dispatches one request. Every response carries `X-Request-Id` (the caller's, when
/// it sent a well-formed one).
pub async fn route(
    request: Request<hyper::body::Incoming>,
    app: Arc<App>,
    peer: IpAddr,
) -> Result<Response<Body>, Infallible> {
    let request_id = request_id(request.headers());
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Every log line of the request carries its id and trace id.
    let span = tracing::info_span!(
        "http.request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    traces::set_parent(&span, traceparent.as_deref());
    let trace_id = if traces::enabled() {
        span.in_scope(traces::current_traceparent)
    } else {
        traceparent
    };
    if let Some(trace_id) = trace_id.as_deref().and_then(traces::trace_id) {
        span.record("trace_id", trace_id);
    }
    let client = client_address(peer, request.headers(), &app.trusted_proxies);
    serve(request, app, client, request_id)
        .instrument(span)
        .await
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// last address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
/// appends the address it received the request from, so addresses left of the last
/// untrusted one could have been written by the client itself).
fn client_address(
    peer: IpAddr,
    headers: &hyper::HeaderMap,
    trusted: &crate::config::TrustedProxies,
) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(address) => {
                client = address;
                if !trusted.contains(address) {
                    break;
                }
            }
            // Garbage in the chain: trust nothing further left of it.
            Err(_) => break,
        }
    }
    client
}

/// Serves one request; `peer` is the client's address (see [`client_address`]).
async fn serve(
    request: Request<hyper::body::Incoming>,
    app: Arc<App>,
    peer: IpAddr,
    request_id: String,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (route, mut response) = match (&method, path.as_str()) {
        (_, "/ws") => ("/ws", websocket::upgrade(request, &app, peer)),
        (_, path) if path == sse::SSE_PATH || path.starts_with("/sse/") => {
            sse::serve(request, &app, peer).await
        }
        // HEAD too, for load balancers: hyper sends the GET's headers (Content-Length
        // included) and leaves the body out.
        (&Method::GET | &Method::HEAD, "/healthz") => (
            "/healthz",
            json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "node": app.node_id,
                    "uptime_secs": app.started.elapsed().as_secs(),
                }),
            ),
        ),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let detailed = bearer_principal(&request, &app).is_some_and(|p| p.is_admin());
            ("/readyz", readiness(&app, detailed).await)
        }
        (&Method::POST, "/admin/drain") => ("/admin/drain", admin_drain(&request, &app, peer)),
        (&Method::GET, "/metrics") if app.metrics_on_main_listener => ("/metrics", metrics()),
        (_, "/healthz" | "/readyz") => ("/health", method_not_allowed("GET, HEAD")),
        (_, "/admin/drain") => ("/admin/drain", method_not_allowed("POST")),
        (_, path)
            if app.console.is_some() && (path == "/console" || path.starts_with("/console/")) =>
        {
            let console = app.console.as_ref().expect("checked above");
            console
                .serve(request, &app.auth, &app.api.limiter, peer)
                .await
        }
        (_, path) if path.starts_with("/api/v1/") || path == "/api/v1" => {
            api_with_cors(request, &app, peer, &request_id).await
        }
        (_, path) => (
            "/other",
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {path}"),
            ),
        ),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("roomcast_http_requests_total", "route" => route, "method" => crate::telemetry::metrics::method_label(&method), "status" => status)
        .increment(1);
    metrics::histogram!("roomcast_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The HTTP API behind the CORS policy: a listed origin gets its preflight answered and
/// CORS headers on every response; an origin that is neither this server nor listed is
/// refused (403) before anything runs, so a page elsewhere cannot make a browser send a
/// mutation on its user's behalf.
async fn api_with_cors(
    request: Request<hyper::body::Incoming>,
    app: &App,
    peer: IpAddr,
    request_id: &str,
) -> (&'static str, Response<Body>) {
    match Origin::of(request.headers(), &app.cors.allowed_origins) {
        Origin::Refused => {
            metrics::counter!("roomcast_origin_refusals_total", "endpoint" => "api").increment(1);
            ("/api/cors", origin::refused("call this API"))
        }
        Origin::Allowed(allowed) if origin::is_preflight(request.method(), request.headers()) => {
            ("/api/cors", origin::preflight(&allowed, &app.cors))
        }
        Origin::Allowed(allowed) => {
            let (route, mut response) = app.api.handle(request, peer, request_id).await;
            origin::decorate(&mut response, &allowed);
            (route, response)
        }
        Origin::Absent | Origin::SameHost => app.api.handle(request, peer, request_id).await,
    }
}

/// The caller's `X-Request-Id` if well-formed (1 to 128 of `A-Za-z0-9._:-`), else a new
/// UUID.
fn request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// `POST /admin/drain`: starts a drain (as SIGTERM does). Needs a service token when
/// authentication is configured, and a loopback client when it is not.
fn admin_drain(
    request: &Request<hyper::body::Incoming>,
    app: &App,
    peer: IpAddr,
) -> Response<Body> {
    let allowed = match bearer_principal(request, app) {
        Some(crate::auth::Principal::Service { .. }) => true,
        Some(crate::auth::Principal::Anonymous) => peer.is_loopback(),
        _ => false,
    };
    if !allowed {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "draining needs a service token (or, without authentication, a loopback client)",
        );
    }
    app.drain_requested.cancel();
    json_response(StatusCode::ACCEPTED, &json!({ "draining": true }))
}

/// 405 for a route of the server's own (not the API's) called with another method than
/// those in `allow`; RFC 9110 requires the `Allow` header.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {}", allow.replace(", ", " or ")),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `/metrics`: the Prometheus text format.
pub fn metrics() -> Response<Body> {
    let mut response = Response::new(full(crate::telemetry::metrics::render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The principal of a request's `Authorization: Bearer` header, if it checks out (an
/// open server's anonymous caller too).
fn bearer_principal(
    request: &Request<hyper::body::Incoming>,
    app: &App,
) -> Option<crate::auth::Principal> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    app.auth.authenticate(token).ok()
}

/// `/readyz`: ready to take new connections. The checks behind the answer (which may
/// name hosts) are shown to administrators only.
async fn readiness(app: &App, detailed: bool) -> Response<Body> {
    let broker = app.broker.status();
    let store = app.api.store.ping().await;
    let draining = app.draining.load(std::sync::atomic::Ordering::SeqCst);
    let ready = broker.ready && store.is_ok() && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !detailed {
        return json_response(status, &json!({ "ready": ready, "draining": draining }));
    }
    json_response(
        status,
        &json!({
            "ready": ready,
            "draining": draining,
            "checks": {
                "broker": { "ready": broker.ready, "kind": app.broker.kind(), "detail": broker.detail },
                "store": {
                    "ready": store.is_ok(),
                    "kind": match app.api.store.backend() { crate::store::Backend::Sqlite => "sqlite", crate::store::Backend::Postgres => "postgres" },
                    "detail": match &store { Ok(()) => "ok".to_owned(), Err(err) => err.to_string() },
                },
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedProxies;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn forwarded(chain: &str) -> hyper::HeaderMap {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-forwarded-for", chain.parse().unwrap());
        headers
    }

    #[test]
    fn x_forwarded_for_counts_only_behind_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = proxies(&["10.0.0.0/8"]);
        // Not from a trusted proxy: the header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &forwarded("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // From one: the last untrusted address, not what the client wrote further left.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &forwarded("6.6.6.6, 198.51.100.7, 10.0.0.5"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Garbage ends the walk; no header leaves the proxy as the client.
        assert_eq!(
            client_address(ip("10.0.0.2"), &forwarded("nonsense, 10.0.0.5"), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &hyper::HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &forwarded("1.2.3.4"), &proxies(&[])),
            ip("10.0.0.2")
        );
    }
}
