//! The WebSocket upgrade on the shared HTTP listener: validate the request, answer 101
//! with the negotiated subprotocol, and hand the upgraded socket to the connections.

use super::App;
use super::origin::{self, Origin};
use crate::auth::bearer;
use crate::connection::Refusal;
use crate::protocol::Encoding;
use crate::response::{Body, json_error};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The subprotocol prefix that carries a token from browsers, which cannot set headers
/// on a WebSocket: `Sec-WebSocket-Protocol: roomcast.v1.json, roomcast.token.<token>`.
/// It is never echoed back.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "roomcast.token.";

/// Answers an upgrade request on `/ws` and, once hyper hands the socket over, serves it.
/// A page's `Origin` must be this server's or a listed one. With authentication
/// configured, the token comes from `Authorization: Bearer …`, from the
/// `roomcast.token.<token>` subprotocol, or from `?access_token=…`.
pub fn upgrade(
    mut request: Request<hyper::body::Incoming>,
    app: &App,
    peer: std::net::IpAddr,
) -> Response<Body> {
    if Origin::of(request.headers(), &app.ws_origins) == Origin::Refused {
        metrics::counter!("roomcast_origin_refusals_total", "endpoint" => "ws").increment(1);
        return origin::refused("open a WebSocket here");
    }
    let principal = match app.auth.authenticate(token(&request).as_deref()) {
        Ok(principal) => principal,
        Err(err) => {
            metrics::counter!("roomcast_auth_failures_total", "endpoint" => "ws").increment(1);
            let mut response =
                json_error(StatusCode::UNAUTHORIZED, "unauthorized", &err.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is draining; connect to another one",
        );
    }
    let connections = app.connections.clone();
    let headers = request.headers();
    if request.method() != hyper::Method::GET {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET to open a WebSocket",
        );
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return json_error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
            "only WebSocket version 13 is supported",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok());
    let (encoding, echo) = Encoding::negotiate(offered);

    let admission = match connections.admit(&principal) {
        Ok(admission) => admission,
        Err(refusal) => {
            let (status, code, message) = match refusal {
                Refusal::InstanceFull => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_connections",
                    "this instance holds all the connections it may; connect to another one",
                ),
                Refusal::UserLimit => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    "you hold all the connections one user may have on this instance",
                ),
            };
            metrics::counter!("roomcast_connections_refused_total", "reason" => match refusal {
                Refusal::InstanceFull => "instance_full",
                Refusal::UserLimit => "user_limit",
            })
            .increment(1);
            return json_error(status, code, message);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                connections
                    .serve(TokioIo::new(upgraded), encoding, principal, admission, peer)
                    .await
            }
            Err(err) => tracing::debug!(error = %err, "WebSocket upgrade did not complete"),
        }
    });

    let mut response = Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if echo {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(encoding.subprotocol()),
        );
    }
    response
}

/// The credentials of an upgrade request: the `Authorization` header, else the token
/// subprotocol, else the `access_token` query parameter.
fn token(request: &Request<hyper::body::Incoming>) -> Option<String> {
    let headers = request.headers();
    let header_token = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned)
    };
    let subprotocol_token = || {
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())?
            .split(',')
            .find_map(|offer| offer.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
    };
    let query_token = || {
        request.uri().query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("access_token="))
                .and_then(crate::api::percent_decode)
        })
    };
    header_token()
        .or_else(subprotocol_token)
        .or_else(query_token)
}

/// Whether a comma-separated header contains `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}
