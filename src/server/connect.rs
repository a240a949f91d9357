//! What every transport's connect request goes through before a session starts: the
//! page's origin, the credentials, the drain state and the admission limits. The
//! WebSocket upgrade (`/ws`) and the Server-Sent Events stream (`/sse`, and its posts)
//! answer refusals alike.

use super::App;
use super::origin::{self, Origin};
use crate::auth::{Principal, bearer};
use crate::connection::{Admission, Refusal};
use crate::response::{Body, json_error};
use hyper::header;
use hyper::{Request, Response, StatusCode};
use std::net::IpAddr;

/// The prefix of the `Sec-WebSocket-Protocol` entry that carries a token from browsers,
/// which cannot set headers on a WebSocket:
/// `Sec-WebSocket-Protocol: roomcast.v1.json, roomcast.token.<token>`. It is never
/// echoed back.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "roomcast.token.";

/// The checks every transport's connect request passes first (and a `POST` of a
/// Server-Sent Events session too): the page's `Origin` must be this server's or a
/// listed one, and the credentials must authenticate. `endpoint` labels the refusal
/// metrics; `what` completes "this origin may not …".
pub fn authorize(
    request: &Request<hyper::body::Incoming>,
    app: &App,
    client: IpAddr,
    endpoint: &'static str,
    what: &str,
) -> Result<Principal, Box<Response<Body>>> {
    if Origin::of(request.headers(), &app.ws_origins) == Origin::Refused {
        metrics::counter!("roomcast_origin_refusals_total", "endpoint" => endpoint).increment(1);
        return Err(Box::new(origin::refused(what)));
    }
    (app.api.limiter)
        .authenticate(&app.auth, client, token(request).as_deref())
        .map_err(|refused| Box::new(refused.into_response(endpoint)))
}

/// The refusal of a new connection while this instance drains.
pub fn draining(app: &App) -> Option<Response<Body>> {
    app.draining
        .load(std::sync::atomic::Ordering::SeqCst)
        .then(|| {
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "this instance is draining; connect to another one",
            )
        })
}

/// Takes a place for a new connection of `principal`, or answers why there is none.
pub fn admit(app: &App, principal: &Principal) -> Result<Admission, Box<Response<Body>>> {
    app.connections.admit(principal).map_err(|refusal| {
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
        Box::new(json_error(status, code, message))
    })
}

/// The credentials of a connect request: the `Authorization` header, else the token
/// subprotocol (WebSocket), else the `access_token` query parameter.
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
