//! `roomcast members`: seeding a project's first admin.

use crate::support::db;
use crate::support::http::{get, json};
use crate::support::process::run_to_exit;
use crate::support::tokens::{bearer, secured_on, user_token};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_seeds_a_projects_first_admin() {
    let url = db::sqlite_url();
    let env = [("ROOMCAST_DATABASE_URL", url.as_str())];
    let (code, stderr) = run_to_exit(
        &[
            "members",
            "grant",
            "--project",
            "5",
            "--user",
            "alice",
            "--role",
            "admin",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _) = run_to_exit(
        &[
            "members",
            "grant",
            "--project",
            "5",
            "--user",
            "bob",
            "--role",
            "owner",
        ],
        &env,
    )
    .await;
    assert_ne!(code, Some(0), "an unknown role is refused");
    let server = secured_on(&url).await;
    let addr = server.addr();
    let alice = bearer(&user_token("alice"));
    let put = json(
        &addr,
        "PUT",
        "/api/v1/projects/5/members/bob",
        &[("authorization", &alice)],
        &json!({"role": "member"}),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let members = get(
        &addr,
        "/api/v1/projects/5/members",
        &[("authorization", &alice)],
    )
    .await
    .json();
    let seeded = &members["items"][0];
    assert_eq!(
        (seeded["user_id"].clone(), seeded["created_by"].clone()),
        (json!("alice"), json!("cli"))
    );
    let audit = get(
        &addr,
        "/api/v1/audit?entity=membership",
        &[("authorization", &alice)],
    )
    .await
    .json();
    assert_eq!(audit["items"][0]["actor"], "cli", "the seed is audited");
    server.stop().await;
    let (code, _) = run_to_exit(
        &["members", "revoke", "--project", "5", "--user", "alice"],
        &env,
    )
    .await;
    assert_eq!(code, Some(0));
    let (code, _) = run_to_exit(
        &["members", "revoke", "--project", "5", "--user", "alice"],
        &env,
    )
    .await;
    assert_ne!(code, Some(0), "nothing left to revoke");
}
