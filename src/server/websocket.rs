//! The WebSocket upgrade on the shared HTTP listener: validate the request, answer 101
//! with the negotiated subprotocol, and hand the upgraded socket to the connections.

use super::{App, connect};
use crate::outbound::WireStream;
use crate::protocol::Encoding;
use crate::response::{Body, json_error};
use crate::transport::websocket::{self, WebSocket};
use futures_util::FutureExt;
use futures_util::future::Either;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Answers an upgrade request on `/ws` and, once hyper hands the socket over, serves it.
/// A page's `Origin` must be this server's or a listed one. With authentication
/// configured, the token comes from `Authorization: Bearer …`, from the
/// `roomcast.token.<token>` subprotocol, or from `?access_token=…` (see [`connect::authorize`]).
pub fn upgrade(
    mut request: Request<hyper::body::Incoming>,
    app: &App,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let principal = match connect::authorize(&request, app, peer, "ws", "open a WebSocket here") {
        Ok(principal) => principal,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = connect::draining(app) {
        return refusal;
    }
    let accept = match handshake_key(&request) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(refusal) => return *refusal,
    };
    let offered = (request.headers().get(header::SEC_WEBSOCKET_PROTOCOL))
        .and_then(|value| value.to_str().ok());
    let (encoding, echo) = Encoding::negotiate(offered);
    let admission = match connect::admit(app, &principal) {
        Ok(admission) => admission,
        Err(refusal) => return *refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let connections = app.connections.clone();
    let config = websocket::config(connections.max_frame_bytes());
    // Steps chained rather than one async block: the task lives as long as the
    // connection, and an async block would keep what it captured (the principal, the
    // admission) beside the copies the connection's future holds, in every idle
    // connection. Each step here hands its captures on and keeps none.
    //
    // The accept is boxed too: the first step's future is part of the task's size (a
    // `then` holds one step or the next) for the connection's whole life.
    let task = on_upgrade
        .then(move |upgraded| async move {
            match upgraded.map(|upgraded| upgraded.downcast::<TokioIo<TcpStream>>()) {
                // Plain TCP: the socket itself, so that rooms can write to it directly.
                Ok(Ok(parts)) => {
                    let stream = WireStream::new(parts.io.into_inner(), parts.read_buf);
                    let accept = Box::pin(WebSocket::accept(stream, config));
                    Some(Upgraded::Plain(accept.await))
                }
                Ok(Err(upgraded)) => {
                    let accept = Box::pin(WebSocket::accept(TokioIo::new(upgraded), config));
                    Some(Upgraded::Tls(accept.await))
                }
                Err(err) => {
                    tracing::debug!(error = %err, "WebSocket upgrade did not complete");
                    None
                }
            }
        })
        .then(move |transport| match transport {
            Some(Upgraded::Plain(transport)) => Either::Left(Either::Left(
                connections.serve(transport, encoding, principal, admission, peer),
            )),
            Some(Upgraded::Tls(transport)) => Either::Left(Either::Right(
                connections.serve(transport, encoding, principal, admission, peer),
            )),
            None => Either::Right(std::future::ready(())),
        });
    tokio::spawn(task);
    switching_protocols(&accept, echo.then_some(encoding))
}

/// An upgraded connection: over the plain TCP socket, or over hyper's stream (TLS).
enum Upgraded {
    Plain(WebSocket<WireStream>),
    Tls(WebSocket<TokioIo<hyper::upgrade::Upgraded>>),
}

/// The request's `Sec-WebSocket-Key` if it is a WebSocket version 13 upgrade, else the
/// answer that says what is wrong with it.
fn handshake_key(
    request: &Request<hyper::body::Incoming>,
) -> Result<&HeaderValue, Box<Response<Body>>> {
    let headers = request.headers();
    if request.method() != hyper::Method::GET {
        return Err(Box::new(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET to open a WebSocket",
        )));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Box::new(json_error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        )));
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
        return Err(Box::new(response));
    }
    headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "missing Sec-WebSocket-Key",
        ))
    })
}

/// The `101 Switching Protocols` answer, naming the subprotocol when the client offered
/// one we speak.
fn switching_protocols(accept: &str, subprotocol: Option<Encoding>) -> Response<Body> {
    let mut response = Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).expect("base64 is a valid header value"),
    );
    if let Some(encoding) = subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(encoding.subprotocol()),
        );
    }
    response
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
