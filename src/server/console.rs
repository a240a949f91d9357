//! The web console at `/console/`: its static files, embedded in the binary, and its
//! sign-in.
//!
//! The files come from `clients/console/dist/` (built from `clients/console/src/` and
//! committed, so building the server needs no JavaScript toolchain). Each is served
//! under a name that carries a hash of its content (`app.3f9a0c5d17e2b846.js`), cached
//! for a year as immutable; the two pages (`/console/` and `/console/sign-in`) are
//! revalidated on every load and name the current files.
//!
//! Sign-in: the sign-in page posts a token to `POST /console/session`, which accepts it
//! only from a global administrator (a JWT with the `admin` role, a service token) and
//! answers with an `HttpOnly`, `SameSite=Strict` cookie scoped to `/console`. The app
//! page and its script are served only with a cookie that still authenticates an
//! administrator; the sign-in page, its script, the stylesheet and the theme script
//! carry nothing of the console. The page keeps the token itself in `sessionStorage`
//! for the API and WebSocket calls, which take it as a bearer token like every client's
//! (the cookie is never read by the API). On a server without authentication every
//! caller is an administrator and the console opens without signing in.

use super::origin::Origin;
use crate::api::RateLimiter;
use crate::auth::{Authenticator, Principal};
use crate::response::{Body, empty, full, json_error};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;

/// The cookie that holds the console session (the token it was opened with).
pub const COOKIE: &str = "roomcast_console";
/// Lifetime of the cookie of a token without expiry (a service token), in seconds.
const SESSION_SECS: u64 = 12 * 3600;
/// Largest sign-in body.
const MAX_BODY: usize = 16 * 1024;

/// Who may fetch a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Anyone: the sign-in page needs it.
    Public,
    /// A signed-in administrator.
    Admin,
}

/// The files of `clients/console/dist/`: name, content, type, who may fetch it.
const FILES: [(&str, &[u8], &str, Gate); 5] = [
    (
        "app.js",
        include_bytes!("../../clients/console/dist/app.js"),
        "text/javascript; charset=utf-8",
        Gate::Admin,
    ),
    (
        "sign-in.js",
        include_bytes!("../../clients/console/dist/sign-in.js"),
        "text/javascript; charset=utf-8",
        Gate::Public,
    ),
    (
        "theme.js",
        include_bytes!("../../clients/console/dist/theme.js"),
        "text/javascript; charset=utf-8",
        Gate::Public,
    ),
    (
        "console.css",
        include_bytes!("../../clients/console/dist/console.css"),
        "text/css; charset=utf-8",
        Gate::Public,
    ),
    (
        "icon.svg",
        include_bytes!("../../clients/console/dist/icon.svg"),
        "image/svg+xml",
        Gate::Public,
    ),
];
const INDEX_HTML: &str = include_str!("../../clients/console/dist/index.html");
const SIGN_IN_HTML: &str = include_str!("../../clients/console/dist/sign-in.html");

/// One file, by its hashed name.
struct Asset {
    bytes: Bytes,
    content_type: &'static str,
    gate: Gate,
}

/// The console's files, ready to serve.
pub struct Console {
    assets: HashMap<String, Asset>,
    index: Bytes,
    sign_in: Bytes,
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Console {
    /// Hashes the embedded files and points the pages at the hashed names.
    pub fn new() -> Console {
        let mut assets = HashMap::new();
        let mut index = INDEX_HTML.to_owned();
        let mut sign_in = SIGN_IN_HTML.to_owned();
        for (name, bytes, content_type, gate) in FILES {
            let hashed = hashed_name(name, bytes);
            // The pages name each file as `"assets/{name}"` (so they also work from the
            // build folder); here the quoted name becomes the hashed one.
            let plain = format!("\"assets/{name}\"");
            let served = format!("\"/console/assets/{hashed}\"");
            index = index.replace(&plain, &served);
            sign_in = sign_in.replace(&plain, &served);
            assets.insert(
                hashed,
                Asset {
                    bytes: Bytes::from_static(bytes),
                    content_type,
                    gate,
                },
            );
        }
        Console {
            assets,
            index: Bytes::from(index),
            sign_in: Bytes::from(sign_in),
        }
    }

    /// Serves a request under `/console`; returns the metrics route label and the
    /// response.
    pub async fn serve(
        &self,
        request: Request<hyper::body::Incoming>,
        auth: &Authenticator,
        limiter: &RateLimiter,
        client: IpAddr,
    ) -> (&'static str, Response<Body>) {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/console" if read => (
                "/console",
                redirect(StatusCode::PERMANENT_REDIRECT, "/console/"),
            ),
            "/console/" if read => {
                let response = if signed_in(request.headers(), auth) {
                    page(request.headers(), self.index.clone())
                } else {
                    redirect(StatusCode::SEE_OTHER, "/console/sign-in")
                };
                ("/console", response)
            }
            "/console/sign-in" if read => {
                ("/console", page(request.headers(), self.sign_in.clone()))
            }
            "/console/session" if method == Method::POST => (
                "/console/session",
                sign_in(request, auth, limiter, client).await,
            ),
            "/console/session" if method == Method::DELETE => {
                ("/console/session", sign_out(request.headers()))
            }
            "/console/session" => ("/console/session", not_allowed("POST, DELETE")),
            "/console" | "/console/" | "/console/sign-in" => ("/console", not_allowed("GET, HEAD")),
            _ => match path.strip_prefix("/console/assets/") {
                Some(name) if read => {
                    ("/console/assets", self.asset(name, request.headers(), auth))
                }
                Some(_) => ("/console/assets", not_allowed("GET, HEAD")),
                None => (
                    "/console",
                    json_error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        &format!("no route for {path}"),
                    ),
                ),
            },
        }
    }

    /// A file by its hashed name.
    fn asset(&self, name: &str, headers: &HeaderMap, auth: &Authenticator) -> Response<Body> {
        let Some(asset) = self.assets.get(name) else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such console file (an older version's name?)",
            );
        };
        if asset.gate == Gate::Admin && !signed_in(headers, auth) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in to the console first (/console/sign-in)",
            );
        }
        let mut response = Response::new(full(asset.bytes.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        // The name changes with the content: cache for good. A signed-in user's file
        // is theirs only (no shared cache keeps it).
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(match asset.gate {
                Gate::Public => "public, max-age=31536000, immutable",
                Gate::Admin => "private, max-age=31536000, immutable",
            }),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// `{stem}.{first 16 hex digits of SHA-256}.{extension}`.
fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, extension)) => format!("{stem}.{hash}.{extension}"),
        None => format!("{name}.{hash}"),
    }
}

/// The console cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Whether the request's cookie authenticates a global administrator (always, on a
/// server without authentication).
fn signed_in(headers: &HeaderMap, auth: &Authenticator) -> bool {
    auth.authenticate(session_cookie(headers))
        .is_ok_and(|principal| principal.is_admin())
}

/// One of the two pages, with the console's security headers.
fn page(headers: &HeaderMap, html: Bytes) -> Response<Body> {
    let mut response = Response::new(full(html));
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("Cookie"));
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(host(headers))) {
        out.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The request's `Host`, when it is a plain `host[:port]` (letters, digits, `.-:[]`).
fn host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
}

/// Scripts, styles and images of this server only, no inline script or style, no
/// frames; connections to this server's HTTP API and WebSocket endpoint.
fn content_security_policy(host: Option<&str>) -> String {
    let sockets = host
        .map(|host| format!(" ws://{host} wss://{host}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

fn redirect(status: StatusCode, location: &'static str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn not_allowed(methods: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {methods}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods));
    response
}

/// Body of `POST /console/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /console/session`: a token of a global administrator opens a console session.
async fn sign_in(
    request: Request<hyper::body::Incoming>,
    auth: &Authenticator,
    limiter: &RateLimiter,
    client: IpAddr,
) -> Response<Body> {
    if let Some(refused) = foreign_origin(request.headers()) {
        return refused;
    }
    let secure = is_https(request.headers());
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("send at most {MAX_BODY} bytes"),
            );
        }
    };
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(&body) else {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "send {\"token\": \"…\"}",
        );
    };
    let token = token.trim();
    let principal = match limiter.authenticate(auth, client, Some(token)) {
        Ok(principal) => principal,
        Err(refused) => return refused.into_response("console"),
    };
    if !principal.is_admin() {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the console needs a global administrator: a token with the admin role, or a service token",
        );
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // On a server without authentication there is nothing to remember.
    if auth.is_open() {
        return response;
    }
    if !token.bytes().all(is_cookie_octet) {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "this token holds characters a cookie cannot carry",
        );
    }
    let cookie = cookie(
        token,
        session_secs(&principal, crate::stream::unix_ms() / 1000),
        secure,
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `DELETE /console/session`: forgets the cookie.
fn sign_out(headers: &HeaderMap) -> Response<Body> {
    if let Some(refused) = foreign_origin(headers) {
        return refused;
    }
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let expired = cookie("", 0, is_https(headers));
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// 403 for a request a page of another origin sent (the session routes answer this
/// server's own pages only).
fn foreign_origin(headers: &HeaderMap) -> Option<Response<Body>> {
    let allowed = crate::config::OriginList::default();
    match Origin::of(headers, &allowed) {
        Origin::Absent | Origin::SameHost => None,
        _ => Some(json_error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "the console signs in from this server's own pages only",
        )),
    }
}

/// Whether the page was loaded over HTTPS (its `Origin`, or the proxy's
/// `X-Forwarded-Proto`): the cookie is then marked `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    value("origin").is_some_and(|origin| origin.starts_with("https://"))
        || value("x-forwarded-proto").is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// How long a session of `principal` lasts from `now` (seconds): to the token's expiry,
/// or [`SESSION_SECS`] for a token without one.
fn session_secs(principal: &Principal, now: u64) -> u64 {
    match principal {
        Principal::User { expires_at, .. } => expires_at.saturating_sub(now).min(SESSION_SECS),
        Principal::Service { .. } | Principal::Anonymous => SESSION_SECS,
    }
}

/// The `Set-Cookie` value of a session (an empty value with age 0 removes it).
fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// RFC 6265 `cookie-octet`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_every_file_by_its_hash_and_only_known_files() {
        let console = Console::new();
        for (name, bytes, _, _) in FILES {
            let hashed = hashed_name(name, bytes);
            assert!(console.assets.contains_key(&hashed));
            let stem = name.rsplit_once('.').unwrap().0;
            assert!(hashed.starts_with(&format!("{stem}.")) && hashed.len() == name.len() + 17);
        }
        let index = std::str::from_utf8(&console.index).unwrap();
        let sign_in = std::str::from_utf8(&console.sign_in).unwrap();
        // Every file the pages load is one the server has, under its hashed name.
        for html in [index, sign_in] {
            assert!(!html.contains("\"assets/"), "an unresolved file: {html}");
            for reference in html.split("\"/console/assets/").skip(1) {
                let name = reference.split('"').next().unwrap();
                assert!(console.assets.contains_key(name), "{name}");
            }
            assert!(
                !html.contains("<script>") && !html.contains("style="),
                "inline code"
            );
        }
        assert!(index.contains(&hashed_name("app.js", FILES[0].1)));
        assert!(
            !sign_in.contains("/console/assets/app."),
            "the sign-in page loads no app code"
        );
    }

    #[test]
    fn the_hash_follows_the_content() {
        assert_ne!(hashed_name("app.js", b"a"), hashed_name("app.js", b"b"));
        assert_eq!(hashed_name("app.js", b"a"), hashed_name("app.js", b"a"));
        assert_eq!(hashed_name("app.js", b"").len(), "app..js".len() + 16);
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; roomcast_console=tok.en; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some("tok.en"));
        headers.insert(header::COOKIE, "roomcast_console=".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
        headers.insert(header::COOKIE, "xroomcast_console=1".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn a_session_ends_with_its_token_and_lasts_twelve_hours_at_most() {
        let user = |expires_at| Principal::User {
            subject: "ann".into(),
            rooms: Default::default(),
            admin: true,
            expires_at,
        };
        assert_eq!(session_secs(&user(1_000 + 600), 1_000), 600);
        assert_eq!(session_secs(&user(500), 1_000), 0);
        assert_eq!(session_secs(&user(u64::MAX), 0), SESSION_SECS);
        assert_eq!(
            session_secs(&Principal::Service { name: "ops".into() }, 1_000),
            SESSION_SECS
        );
        assert_eq!(
            cookie("t", 60, true),
            "roomcast_console=t; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }

    #[test]
    fn the_policy_allows_this_host_only() {
        let policy = content_security_policy(Some("rc.example.com:8443"));
        assert!(
            policy
                .contains("connect-src 'self' ws://rc.example.com:8443 wss://rc.example.com:8443;")
        );
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "evil.com; script-src *".parse().unwrap());
        assert_eq!(host(&headers), None);
        assert!(!"a;b".bytes().all(is_cookie_octet));
        assert!("eyJhbGciOi.JIUzI1-NiJ9_x".bytes().all(is_cookie_octet));
    }
}
