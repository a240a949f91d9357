//! Project membership, on SQLite and (when `DATABASE_URL` is set) PostgreSQL: every
//! route of the issue tracker for a viewer, a member, a project admin, a non-member and a
//! global administrator ([`api`]); the tracker's rooms over WebSocket and HTTP and a
//! membership change taking effect at once ([`rooms`]); row-level security ([`rls`]);
//! GDPR export and erasure ([`gdpr`]); the CLI seed ([`cli`]). This file holds the world
//! they share.

mod api;
mod cli;
mod gdpr;
mod rls;
mod rooms;

use crate::support::TestServer;
use crate::support::http::{Reply, json, send};
use crate::support::tokens::{SERVICE_TOKEN, admin_token, bearer, grant, secured_on, user_token};
use serde_json::{Value, json};

/// The callers of the matrix, by user id.
pub const VIEWER: &str = "vic";
pub const MEMBER: &str = "mem";
pub const PROJECT_ADMIN: &str = "pad";
pub const OUTSIDER: &str = "out";
pub const ROOT: &str = "root";

/// A secured server where project 1 has a viewer, a member and an admin, `out` is a
/// member of project 2 only, and `root` is a global administrator.
pub struct World {
    pub server: TestServer,
    pub addr: String,
    /// An issue of project 1 with one comment.
    pub issue: i64,
    pub comment: i64,
    /// An issue of project 2.
    pub other_issue: i64,
}

impl World {
    pub async fn on(url: &str) -> World {
        let server = secured_on(url).await;
        let addr = server.addr();
        grant(&addr, 1, VIEWER, "viewer").await;
        grant(&addr, 1, MEMBER, "member").await;
        grant(&addr, 1, PROJECT_ADMIN, "admin").await;
        grant(&addr, 2, OUTSIDER, "member").await;
        let service = bearer(SERVICE_TOKEN);
        let as_service = [("authorization", service.as_str())];
        let created = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &as_service,
            &json!({"project_id": 1, "title": "one"}),
        )
        .await;
        let issue = created.json()["id"].as_i64().unwrap();
        let comment = json(
            &addr,
            "POST",
            &format!("/api/v1/issues/{issue}/comments"),
            &as_service,
            &json!({"body": "hi"}),
        )
        .await
        .json()["id"]
            .as_i64()
            .unwrap();
        let other = json(
            &addr,
            "POST",
            "/api/v1/issues",
            &as_service,
            &json!({"project_id": 2, "title": "two"}),
        )
        .await;
        World {
            server,
            addr,
            issue,
            comment,
            other_issue: other.json()["id"].as_i64().unwrap(),
        }
    }

    pub async fn call(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let token = bearer(&token_of(who));
        let headers = [("authorization", token.as_str())];
        match body {
            Some(body) => json(&self.addr, method, path, &headers, &body).await,
            None => send(&self.addr, method, path, &headers, None).await,
        }
    }

    /// Asserts the status each caller gets; `OUTSIDER`'s 404 must be exactly the reply
    /// to the same request on a resource that does not exist (`missing_path`).
    pub async fn expect(
        &self,
        method: &str,
        path: &str,
        missing_path: &str,
        body: Option<Value>,
        statuses: [u16; 5],
    ) {
        let callers = [VIEWER, MEMBER, PROJECT_ADMIN, OUTSIDER, ROOT];
        for (who, status) in callers.into_iter().zip(statuses) {
            let reply = self.call(who, method, path, body.clone()).await;
            assert_eq!(
                reply.status,
                status,
                "{who}: {method} {path}: {}",
                reply.text()
            );
            if status == 404 {
                let missing = self.call(who, method, missing_path, body.clone()).await;
                assert_eq!(
                    (missing.status, missing.json()),
                    (404, reply.json()),
                    "{who}: {method} {path} tells a hidden resource from a missing one"
                );
            }
        }
    }
}

pub fn token_of(who: &str) -> String {
    if who == ROOT {
        admin_token(who)
    } else {
        user_token(who)
    }
}

pub fn ids(reply: &Reply) -> Vec<i64> {
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}
