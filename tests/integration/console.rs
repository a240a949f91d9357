//! The web console's routes on a server with authentication: sign-in, its cookie, what
//! is served to whom (with which headers), and `console.enabled = false`.

use crate::support::TestServer;
use crate::support::http::{get, send};
use crate::support::tokens::{SERVICE_TOKEN, admin_token, secured_on, user_token};
use serde_json::json;

async fn sign_in(addr: &str, token: &str) -> crate::support::http::Reply {
    let body = json!({ "token": token }).to_string();
    send(
        addr,
        "POST",
        "/console/session",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
    .await
}

/// The hashed file names the app page loads.
fn assets(html: &str) -> Vec<String> {
    html.split("\"/console/assets/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_opens_for_administrators_only() {
    let server = secured_on("sqlite::memory:").await;
    let addr = server.addr();

    let anonymous = get(&addr, "/console/", &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/console/sign-in"));
    let page = get(&addr, "/console/sign-in", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self';")
    );
    // The sign-in page's own files are public; none of them is the app.
    for asset in assets(&page.text()) {
        assert!(!asset.starts_with("app."));
        assert_eq!(
            get(&addr, &format!("/console/assets/{asset}"), &[])
                .await
                .status,
            200
        );
    }

    assert_eq!(sign_in(&addr, "garbage").await.status, 401);
    let user = sign_in(&addr, &user_token("ann")).await;
    assert_eq!(user.status, 403);
    assert_eq!(user.json()["error"]["code"], "forbidden");
    assert!(user.header("set-cookie").is_none());

    for token in [admin_token("olga"), SERVICE_TOKEN.to_owned()] {
        let signed = sign_in(&addr, &token).await;
        assert_eq!(signed.status, 204);
        let cookie = signed.header("set-cookie").unwrap().to_owned();
        assert!(cookie.starts_with(&format!(
            "roomcast_console={token}; Path=/console; Max-Age="
        )));
        assert!(cookie.ends_with("; HttpOnly; SameSite=Strict"), "{cookie}");
        let jar = cookie.split(';').next().unwrap().to_owned();
        let index = get(&addr, "/console/", &[("cookie", &jar)]).await;
        assert_eq!(index.status, 200);
        assert_eq!(index.header("cache-control"), Some("no-cache"));
        let files = assets(&index.text());
        let app = files
            .iter()
            .find(|f| f.starts_with("app."))
            .expect("the app script");
        let path = format!("/console/assets/{app}");
        assert_eq!(get(&addr, &path, &[]).await.status, 401);
        let script = get(&addr, &path, &[("cookie", &jar)]).await;
        assert_eq!(script.status, 200);
        assert_eq!(
            script.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            script.header("cache-control"),
            Some("private, max-age=31536000, immutable")
        );
    }
    // Behind TLS the cookie is Secure.
    let body = json!({ "token": SERVICE_TOKEN }).to_string();
    let https = send(
        &addr,
        "POST",
        "/console/session",
        &[("x-forwarded-proto", "https")],
        Some(body.as_bytes()),
    )
    .await;
    assert!(https.header("set-cookie").unwrap().ends_with("; Secure"));
    let out = send(&addr, "DELETE", "/console/session", &[], None).await;
    assert_eq!(out.status, 204);
    assert!(
        out.header("set-cookie")
            .unwrap()
            .starts_with("roomcast_console=; Path=/console; Max-Age=0;")
    );

    let user_cookie = format!("roomcast_console={}", user_token("ann"));
    assert_eq!(
        get(&addr, "/console/", &[("cookie", &user_cookie)])
            .await
            .status,
        303
    );
    assert_eq!(
        get(&addr, "/console/assets/app.0000000000000000.js", &[])
            .await
            .status,
        404
    );
    assert_eq!(get(&addr, "/console/elsewhere", &[]).await.status, 404);
    let wrong = send(&addr, "PUT", "/console/", &[], None).await;
    assert_eq!(
        (wrong.status, wrong.header("allow")),
        (405, Some("GET, HEAD"))
    );
    server.stop().await;

    let off = TestServer::with(|c| c.console.enabled = false).await;
    for path in ["/console/", "/console/sign-in", "/console/session"] {
        let reply = get(&off.addr(), path, &[]).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["error"]["code"], "not_found");
    }
    off.stop().await;
}

/// Guessing tokens at the sign-in is throttled per client address, on the budget the API,
/// `/ws` and `/sse` spend too: once it is spent, every attempt from that address — the
/// right token included — is refused with 429 and `Retry-After` until it refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_per_address_on_every_entry_point() {
    let server = TestServer::on_database("sqlite::memory:", |c| {
        c.auth.jwt_hs256_secret = crate::support::tokens::SECRET.into();
        c.auth.service_tokens = format!("billing:{SERVICE_TOKEN}");
        c.rate_limits.user_write_burst = 3;
        c.rate_limits.user_writes_per_second = 0.5;
    })
    .await;
    let addr = server.addr();
    let admin = admin_token("root");

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(sign_in(&addr, "guess").await.status);
    }
    assert_eq!(statuses, [401, 401, 401], "the budget allows 3 failures");
    let throttled = sign_in(&addr, "guess").await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    assert_eq!(throttled.json()["error"]["code"], "rate_limited");
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // The right token is not even checked now, on any entry point.
    assert_eq!(sign_in(&addr, &admin).await.status, 429);
    let bearer = format!("Bearer {admin}");
    let api = get(&addr, "/api/v1/issues", &[("authorization", &bearer)]).await;
    assert_eq!(api.status, 429);
    let sse = get(&addr, "/sse?rooms=a", &[("authorization", &bearer)]).await;
    assert_eq!(sse.status, 429);

    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(sign_in(&addr, &admin).await.status, 204, "allowed again");
    let metrics = get(&addr, "/metrics", &[]).await.text();
    let throttled_at = |endpoint: &str| {
        let prefix = format!("roomcast_auth_failures_throttled_total{{endpoint=\"{endpoint}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The recorder is shared by the servers of this test process: other tests may add.
    for (endpoint, least) in [("console", 2.0), ("api", 1.0), ("sse", 1.0)] {
        assert!(throttled_at(endpoint) >= least, "{endpoint}: {metrics}");
    }
}
