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
