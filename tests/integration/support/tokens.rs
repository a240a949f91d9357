//! Credentials for tests of a secured server: HS256 user tokens, a service token, and
//! project memberships granted through the API.

use super::TestServer;
use super::http::json;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// The HS256 secret of [`secured_on`] servers.
pub const SECRET: &str = "test-secret-for-hs256-tokens";
/// The service token of [`secured_on`] servers (service `billing`).
pub const SERVICE_TOKEN: &str = "svc-token-0123456789abcdef";

/// An `exp` ten minutes ahead.
pub fn exp() -> u64 {
    jsonwebtoken::get_current_timestamp() + 600
}

/// An HS256 token with these claims.
pub fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token of a user without room claims or roles.
pub fn user_token(subject: &str) -> String {
    hs256(json!({"sub": subject, "exp": exp()}))
}

/// The token of a global administrator (`roles: ["admin"]`).
pub fn admin_token(subject: &str) -> String {
    hs256(json!({"sub": subject, "exp": exp(), "roles": ["admin"]}))
}

/// A server with HS256 users and the `billing` service, on `database_url`.
pub async fn secured_on(database_url: &str) -> TestServer {
    TestServer::on_database(database_url, |c| {
        c.auth.jwt_hs256_secret = SECRET.into();
        c.auth.service_tokens = format!("billing:{SERVICE_TOKEN}");
        c.rate_limits.user_read_burst = 1_000_000;
        c.rate_limits.user_write_burst = 1_000_000;
        c.rate_limits.user_reads_per_second = 1e6;
        c.rate_limits.user_writes_per_second = 1e6;
    })
    .await
}

/// Gives `user` `role` in `project`, as the service.
pub async fn grant(addr: &str, project: i64, user: &str, role: &str) {
    let service = bearer(SERVICE_TOKEN);
    let reply = json(
        addr,
        "PUT",
        &format!("/api/v1/projects/{project}/members/{user}"),
        &[("authorization", &service)],
        &json!({ "role": role }),
    )
    .await;
    assert!(
        [200, 201].contains(&reply.status),
        "grant {user} {role} in {project}: {}",
        reply.text()
    );
}
