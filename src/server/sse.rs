//! Server-Sent Events on the shared HTTP listener: `GET /sse` opens a session whose
//! server frames stream as events (see [`crate::transport::sse`]); `POST /sse/{session}`
//! hands client frames to it. Both are authenticated and origin-checked as the WebSocket
//! upgrade is (see [`super::connect::authorize`]), and a session takes posts from its
//! owner only.

use super::App;
use super::connect::{admit, authorize, draining};
use super::origin::{self, Origin};
use crate::connection::PostRefusal;
use crate::protocol::{CompressFormat, DeltaFormat};
use crate::protocol::{Encoded, Encoding, Text};
use crate::response::{Body, BoxError, json_error};
use crate::transport::sse::{EventStream, Positions, StreamForms};
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

/// The path of the event stream; sessions post to `{SSE_PATH}/{session}`.
pub const SSE_PATH: &str = "/sse";
/// Frames one `POST` may carry.
const MAX_FRAMES_PER_POST: usize = 16;

/// Serves a request under `/sse`; returns the route label and the response.
pub async fn serve(
    request: Request<hyper::body::Incoming>,
    app: &App,
    peer: std::net::IpAddr,
) -> (&'static str, Response<Body>) {
    let path = request.uri().path().to_owned();
    let origin = match Origin::of(request.headers(), &app.ws_origins) {
        Origin::Allowed(origin) => Some(origin),
        _ => None,
    };
    if origin::is_preflight(request.method(), request.headers()) {
        let response = match &origin {
            Some(origin) => origin::preflight(origin, &app.cors),
            None => origin::refused("use Server-Sent Events here"),
        };
        return ("/sse", response);
    }
    let (route, mut response) = match (request.method(), path.strip_prefix(SSE_PATH)) {
        (&Method::GET, Some("" | "/")) => ("/sse", open(request, app, peer)),
        (&Method::POST, Some(rest)) if rest.len() > 1 && !rest[1..].contains('/') => {
            let session = rest[1..].to_owned();
            ("/sse/{session}", post(request, app, peer, &session).await)
        }
        (_, Some("" | "/")) => ("/sse", method_not_allowed("GET")),
        _ => ("/sse/{session}", method_not_allowed("POST")),
    };
    if let Some(origin) = origin {
        origin::decorate(&mut response, &origin);
    }
    (route, response)
}

fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allowed} here"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// `GET /sse?rooms=a,b`: opens a session subscribed to `rooms`, resuming every room named
/// in the `Last-Event-ID` header (or the `last_event_id` query parameter, for clients
/// that cannot set headers) from its position there; `delta` and `compress` name the
/// forms those subscriptions ask for. The steps run in order (access,
/// drain, rooms and resume positions, admission, the stream) in one place, slightly over
/// ~60 lines.
fn open(
    request: Request<hyper::body::Incoming>,
    app: &App,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let principal = match authorize(&request, app, peer, "sse", "use Server-Sent Events here") {
        Ok(principal) => principal,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = draining(app) {
        return refusal;
    }
    let query = |name: &str| {
        request.uri().query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(crate::api::percent_decode)
        })
    };
    let rooms: Vec<String> = query("rooms")
        .map(|rooms| {
            rooms
                .split(',')
                .map(str::trim)
                .filter(|room| !room.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query("last_event_id"));
    let resume = match last_event_id.as_deref().map(Positions::parse) {
        None => Positions::default(),
        Some(Ok(positions)) => positions,
        Some(Err(err)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                &err.to_string(),
            );
        }
    };
    let forms = match stream_forms(query("delta"), query("compress")) {
        Ok(forms) => forms,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, "bad_query", &message),
    };
    let admission = match admit(app, &principal) {
        Ok(admission) => admission,
        Err(refusal) => return *refusal,
    };
    let (transport, body) = EventStream::open(&rooms, resume, forms);
    let connections = app.connections.clone();
    tokio::spawn(connections.serve(transport, Encoding::Json, principal, admission, peer));
    let mut response = Response::new(body.map_err(|never| -> BoxError { match never {} }).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The forms named by the `delta` and `compress` query parameters: every subscription
/// the stream makes itself (of `rooms`, and on a resume) asks for them.
fn stream_forms(delta: Option<String>, compress: Option<String>) -> Result<StreamForms, String> {
    let delta = match delta.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            DeltaFormat::from_name(name).ok_or_else(|| format!("unknown delta format {name:?}"))?,
        ),
    };
    let compress = match compress.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            CompressFormat::from_name(name)
                .ok_or_else(|| format!("unknown compression {name:?}"))?,
        ),
    };
    Ok(StreamForms { delta, compress })
}

/// `POST /sse/{session}`: one client frame (JSON), or several, one per line. Access, the
/// body bound and the hand-over to the session in order, slightly over ~60 lines.
async fn post(
    request: Request<hyper::body::Incoming>,
    app: &App,
    peer: std::net::IpAddr,
    session: &str,
) -> Response<Body> {
    let principal = match authorize(&request, app, peer, "sse", "use Server-Sent Events here") {
        Ok(principal) => principal,
        Err(refusal) => return *refusal,
    };
    let limit = app.connections.max_frame_bytes() * MAX_FRAMES_PER_POST;
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("a post carries at most {limit} bytes"),
            );
        }
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the body could not be read",
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "bad_body", "frames are UTF-8 JSON");
    };
    let max = app.connections.max_frame_bytes();
    let mut frames = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.len() > max || frames.len() == MAX_FRAMES_PER_POST {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "frame_too_large",
                &format!(
                    "a post carries at most {MAX_FRAMES_PER_POST} frames of at most {max} bytes"
                ),
            );
        }
        frames.push(Encoded::Text(Text::from(line)));
    }
    match app
        .connections
        .post(session, &principal.key(), frames)
        .await
    {
        Ok(()) => {
            let mut response = Response::new(crate::response::empty());
            *response.status_mut() = StatusCode::ACCEPTED;
            response
        }
        Err(PostRefusal::UnknownSession) => json_error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no such session of yours on this instance; open a new event stream",
        ),
        Err(PostRefusal::Ended) => json_error(
            StatusCode::GONE,
            "session_ended",
            "the session ended; open a new event stream",
        ),
    }
}
