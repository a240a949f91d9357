//! Databases for tests: a fresh SQLite file per server, and, when `DATABASE_URL` names a
//! PostgreSQL server, a fresh schema in it per server.

use sqlx::Connection;

/// A fresh SQLite file in the temp directory.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("roomcast-test-{}.db", uuid::Uuid::new_v4()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A fresh schema in the PostgreSQL of `DATABASE_URL`, if it names one.
pub async fn postgres_url() -> Option<String> {
    let base = std::env::var("DATABASE_URL").ok()?;
    if !base.starts_with("postgres") {
        return None;
    }
    let schema = format!("roomcast_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("DATABASE_URL is set, so PostgreSQL must be reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Every database the suite runs the API tests on: SQLite always, PostgreSQL too when
/// `DATABASE_URL` is set.
pub async fn all() -> Vec<String> {
    let mut urls = vec![sqlite_url()];
    urls.extend(postgres_url().await);
    urls
}
