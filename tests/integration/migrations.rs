//! A database made by an older version upgrades in place, on SQLite and (when
//! `DATABASE_URL` is set) PostgreSQL: migration 0003 gives the audit entries written
//! before it the project they belong to, from the rows or, for deleted rows, from the
//! recorded changes.

use crate::support::db;
use roomcast::store::Store;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

/// Applies migrations 1 and 2 only, as the version before memberships did.
async fn older_database(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap();
    let (init, trace) = if url.starts_with("sqlite:") {
        (
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_outbox_trace.sql"),
        )
    } else {
        (
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_outbox_trace.sql"),
        )
    };
    let migration = |version, description: &str, sql: &'static str| {
        Migration::new(
            version,
            description.to_owned().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(1, "init", init),
        migration(2, "outbox trace", trace),
    ])
    .run(&pool)
    .await
    .unwrap();
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_audit_entries_get_their_project_on_upgrade() {
    for url in db::all().await {
        let pool = older_database(&url).await;
        sqlx::query(
            "INSERT INTO issues (project_id, title, status, priority, issue_type, reporter, version, created_at, updated_at) \
             VALUES (3, 'kept', 'open', 'low', 'bug', 'ann', 1, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO comments (issue_id, author, body, version, created_at, updated_at) VALUES (1, 'ann', 'b', 1, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        // Issue 1 (project 3) still exists; issue 9 (project 5) and its comment 7 were
        // deleted, so only the recorded changes know their project.
        let entries = [
            (
                "issue",
                1,
                "create",
                r#"{"project_id":{"before":null,"after":3}}"#,
            ),
            (
                "issue",
                9,
                "create",
                r#"{"project_id":{"before":null,"after":5}}"#,
            ),
            (
                "comment",
                7,
                "create",
                r#"{"issue_id":{"before":null,"after":9}}"#,
            ),
            (
                "issue",
                9,
                "update",
                r#"{"title":{"before":"a","after":"b"}}"#,
            ),
            (
                "comment",
                1,
                "update",
                r#"{"body":{"before":"a","after":"b"}}"#,
            ),
            (
                "comment",
                7,
                "update",
                r#"{"body":{"before":"a","after":"b"}}"#,
            ),
            (
                "issue",
                9,
                "delete",
                r#"{"project_id":{"before":5,"after":null}}"#,
            ),
            ("comment", 8, "update", r#"{}"#),
        ];
        for (entity, id, action, changes) in entries {
            sqlx::query(
                "INSERT INTO audit_log (created_at, actor, actor_kind, entity, entity_id, action, changes, request_id) \
                 VALUES (0, 'ann', 'user', $1, $2, $3, $4, 'r')",
            )
            .bind(entity)
            .bind(id as i64)
            .bind(action)
            .bind(changes)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = Store::connect(&url).await.expect("migration 0003 applies");
        let projects: Vec<(Option<i64>,)> =
            sqlx::query_as("SELECT project_id FROM audit_log ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let projects: Vec<Option<i64>> = projects.into_iter().map(|(p,)| p).collect();
        assert_eq!(
            projects,
            [
                Some(3),
                Some(5),
                Some(5),
                Some(5),
                Some(3),
                Some(5),
                Some(5),
                None
            ],
            "{url}"
        );
        let unchanged: Vec<(String,)> = sqlx::query_as("SELECT actor FROM audit_log")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(unchanged.iter().all(|(actor,)| actor == "ann"));
        let update = sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(store.pool())
            .await;
        assert!(update.is_err(), "still append-only after the upgrade");
    }
}
