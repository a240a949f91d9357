//! Browser origins: which pages may call the HTTP API (CORS) and open WebSockets.
//!
//! A request without an `Origin` header does not come from a page's script and is not
//! affected. A page on the server's own origin (the `Origin`'s host equals the `Host`
//! header) is always allowed; others must be listed in the configuration.

use crate::config::{CorsConfig, OriginList};
use crate::response::{Body, json_error};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// Where a request comes from, as far as browsers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header: not a cross-origin browser request.
    Absent,
    /// A page of this server.
    SameHost,
    /// A listed origin (the header value).
    Allowed(String),
    /// An origin that is neither this server nor listed.
    Refused,
}

impl Origin {
    /// Classifies the request's `Origin` against `allowed`.
    pub fn of(headers: &HeaderMap, allowed: &OriginList) -> Origin {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Origin::Absent;
        };
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if host.is_some_and(|host| same_host(origin, host)) {
            Origin::SameHost
        } else if allowed.allows(origin) {
            Origin::Allowed(origin.to_owned())
        } else {
            Origin::Refused
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as a `Host`
/// header.
fn same_host(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// The answer to a refused origin.
pub fn refused(what: &str) -> Response<Body> {
    json_error(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        &format!("this origin may not {what}; list it in the server's configuration"),
    )
}

/// Request headers a page may send to the API.
const ALLOWED_HEADERS: &str = "authorization, content-type, if-match, if-none-match, idempotency-key, traceparent, tracestate, x-request-id";
/// Response headers a page may read.
const EXPOSED_HEADERS: &str = "etag, location, retry-after, x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset";
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

/// Whether `method` with these headers is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed origin.
pub fn preflight(origin: &str, cors: &CorsConfig) -> Response<Body> {
    let mut response = Response::new(crate::response::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age_secs),
    );
    response
}

/// Adds the CORS headers of an actual (non-preflight) response to an allowed origin.
pub fn decorate(response: &mut Response<Body>, origin: &str) {
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    // The answer depends on the Origin: caches must keep one per origin.
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn origins_are_classified() {
        let listed = OriginList::parse(&["http://app.test:3000".into()]).unwrap();
        assert_eq!(Origin::of(&headers(&[]), &listed), Origin::Absent);
        assert_eq!(
            Origin::of(
                &headers(&[
                    ("origin", "http://127.0.0.1:8080"),
                    ("host", "127.0.0.1:8080")
                ]),
                &listed
            ),
            Origin::SameHost
        );
        assert_eq!(
            Origin::of(
                &headers(&[
                    ("origin", "http://app.test:3000"),
                    ("host", "127.0.0.1:8080")
                ]),
                &listed
            ),
            Origin::Allowed("http://app.test:3000".into())
        );
        assert_eq!(
            Origin::of(
                &headers(&[("origin", "http://evil.test"), ("host", "127.0.0.1:8080")]),
                &listed
            ),
            Origin::Refused
        );
        assert_eq!(
            Origin::of(
                &headers(&[
                    ("origin", "http://127.0.0.1:8081"),
                    ("host", "127.0.0.1:8080")
                ]),
                &listed
            ),
            Origin::Refused,
            "another port is another origin"
        );
    }
}
