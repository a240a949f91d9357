//! HTTP routing on the shared listener, and small response helpers.

use super::App;
use super::websocket;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

/// Any error a response body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type of every route.
pub type Body = BoxBody<Bytes, BoxError>;

/// Dispatches one request.
pub async fn route(
    request: Request<hyper::body::Incoming>,
    app: Arc<App>,
) -> Result<Response<Body>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (_, "/ws") => websocket::upgrade(request, app.connections.clone()),
        (&Method::GET, "/healthz") => json_response(
            StatusCode::OK,
            &json!({
                "status": "ok",
                "node": app.node_id,
                "uptime_secs": app.started.elapsed().as_secs(),
            }),
        ),
        (&Method::GET, "/readyz") => readiness(&app),
        (_, "/healthz" | "/readyz") => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        (_, path) => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {path}"),
        ),
    };
    Ok(response)
}

/// `/readyz`: ready to take new connections, with the reason when not.
fn readiness(app: &App) -> Response<Body> {
    let broker = app.broker.status();
    let ready = broker.ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({
            "ready": ready,
            "checks": {
                "broker": { "ready": broker.ready, "kind": app.broker.kind(), "detail": broker.detail },
            },
        }),
    )
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response values serialize");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON error body every route uses: `{"error": {"code": …, "message": …}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}
