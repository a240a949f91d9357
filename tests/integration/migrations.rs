//! Migration safety, on SQLite and (when `DATABASE_URL` is set) PostgreSQL:
//!
//! - every migration file is compiled in, both backends have the same migrations, and a
//!   migration already on record (`migrations/CHECKSUMS`) is never edited — a database
//!   that applied it would refuse to start;
//! - a database that lived through the earlier releases (each migration applied in turn,
//!   each followed by the data its release wrote, `tests/fixtures/migrations/NNNN.sql`)
//!   upgrades in place to the current schema, the server then serves and changes the old
//!   data, relays the events that release left pending, and the upgraded schema is the
//!   same as a fresh database's;
//! - migration 0003 gives the audit entries written before it the project they belong to.

use crate::support::TestServer;
use crate::support::db;
use crate::support::http::{get, json};
use roomcast::store::{Backend, Store, migrator};
use serde_json::json;
use sqlx::migrate::{Migration, Migrator};
use sqlx::{AnyPool, AssertSqlSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn backend_of(url: &str) -> Backend {
    if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

fn folder(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn migrations(backend: Backend) -> Vec<Migration> {
    migrator(backend).iter().cloned().collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A database with migrations `1..=version` applied, and after each the data its release
/// wrote (`tests/fixtures/migrations/NNNN.sql`), as a database that lived through those
/// releases.
async fn database_at(url: &str, version: usize) -> AnyPool {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap();
    let all = migrations(backend_of(url));
    let now = (roomcast::store::now_ms() - 24 * 3600 * 1000).to_string();
    for applied in 1..=version {
        Migrator::with_migrations(all[..applied].to_vec())
            .run(&pool)
            .await
            .unwrap_or_else(|e| panic!("migration {applied} applies on {url}: {e}"));
        let fixture = repo_path(&format!("tests/fixtures/migrations/{applied:04}.sql"));
        let data = std::fs::read_to_string(&fixture).unwrap_or_else(|_| {
            panic!(
                "{} is missing: every migration comes with the data its release writes (see migrations/README.md)",
                fixture.display()
            )
        });
        sqlx::raw_sql(AssertSqlSafe(data.replace("{now}", &now)))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{} loads on {url}: {e}", fixture.display()));
    }
    pool
}

#[test]
fn every_migration_file_is_compiled_in_and_both_backends_have_the_same_migrations() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut files: Vec<String> =
            std::fs::read_dir(repo_path(&format!("migrations/{}", folder(backend))))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".sql"))
                .collect();
        files.sort();
        let compiled: Vec<i64> = migrations(backend).iter().map(|m| m.version).collect();
        let numbered: Vec<i64> = files
            .iter()
            .map(|name| {
                name[..4]
                    .parse()
                    .expect("files are named NNNN_description.sql")
            })
            .collect();
        assert_eq!(
            numbered,
            compiled,
            "the files of migrations/{} and the migrations compiled in (store::migrator) differ",
            folder(backend)
        );
        assert_eq!(
            compiled,
            (1..=compiled.len() as i64).collect::<Vec<_>>(),
            "numbered 1, 2, 3, … without gaps"
        );
    }
    let describe = |backend| -> Vec<(i64, String)> {
        migrations(backend)
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    };
    assert_eq!(describe(Backend::Sqlite), describe(Backend::Postgres));
}

#[test]
fn migrations_on_record_are_never_edited() {
    let recorded = std::fs::read_to_string(repo_path("migrations/CHECKSUMS")).unwrap();
    let mut problems = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for migration in migrations(backend) {
            let line = format!(
                "{:04} {} {}",
                migration.version,
                folder(backend),
                hex(&migration.checksum)
            );
            let key = format!("{:04} {} ", migration.version, folder(backend));
            match recorded.lines().find(|l| l.starts_with(&key)) {
                Some(on_record) if on_record == line => {}
                Some(on_record) => problems.push(format!(
                    "migration {:04} ({}) differs from the one on record: databases that applied it \
                     refuse to start. Add a new migration instead.\n  on record: {on_record}\n  now:       {line}",
                    migration.version,
                    folder(backend)
                )),
                None => problems.push(format!(
                    "migration {:04} ({}) is not on record: add this line to migrations/CHECKSUMS\n  {line}",
                    migration.version,
                    folder(backend)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The schema as the code sees it, with the PostgreSQL schema's own name taken out so two
/// schemas can be compared.
async fn schema(pool: &AnyPool, backend: Backend) -> Vec<String> {
    let queries: &[&str] = match backend {
        Backend::Sqlite => &[
            "SELECT type || ' ' || name || ' ON ' || tbl_name || ': ' || COALESCE(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY type, name",
        ],
        Backend::Postgres => &[
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' nullable=' || is_nullable \
             || ' default=' || COALESCE(column_default, '') FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' ORDER BY table_name, column_name",
            "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ': ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY 1",
            "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations' ORDER BY 1",
            "SELECT 'trigger ' || event_object_table || '.' || trigger_name || ' ' || action_timing || ' ' \
             || event_manipulation || ': ' || action_statement FROM information_schema.triggers \
             WHERE trigger_schema = current_schema() ORDER BY 1",
            "SELECT 'policy ' || tablename || '.' || policyname || ' ' || cmd || ' using ' || COALESCE(qual, '') \
             || ' check ' || COALESCE(with_check, '') FROM pg_policies WHERE schemaname = current_schema() ORDER BY 1",
            "SELECT 'row security ' || relname || ' ' || relrowsecurity::text FROM pg_class \
             WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' ORDER BY 1",
        ],
    };
    let (name,): (String,) = match backend {
        Backend::Sqlite => ("main".to_owned(),),
        Backend::Postgres => sqlx::query_as("SELECT current_schema()::text")
            .fetch_one(pool)
            .await
            .unwrap(),
    };
    let mut lines = Vec::new();
    for query in queries {
        let rows: Vec<(String,)> = sqlx::query_as(*query).fetch_all(pool).await.unwrap();
        lines.extend(
            rows.into_iter()
                .map(|(line,)| line.replace(&format!("{name}."), "SCHEMA.")),
        );
    }
    lines
}

/// What the server must still serve after the upgrade, read from the older database.
struct OldData {
    issues: Vec<(i64, String, i64)>,
    comments: Vec<(i64, i64, String)>,
    audit_entries: i64,
    pending_events: Vec<(i64, String, String)>,
}

async fn read_old_data(pool: &AnyPool) -> OldData {
    let issues = sqlx::query_as("SELECT id, title, version FROM issues ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let comments = sqlx::query_as("SELECT id, issue_id, body FROM comments ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let (audit_entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log")
        .fetch_one(pool)
        .await
        .unwrap();
    let pending_events = sqlx::query_as(
        "SELECT id, rooms, event FROM outbox WHERE published_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    OldData {
        issues,
        comments,
        audit_entries,
        pending_events,
    }
}

/// The server on the upgraded database serves the old data and changes it.
async fn check_served(server: &TestServer, old: &OldData, url: &str) {
    let addr = server.addr();
    assert!(!old.issues.is_empty(), "the fixtures hold issues");
    for (id, title, version) in &old.issues {
        let issue = get(&addr, &format!("/api/v1/issues/{id}"), &[]).await;
        assert_eq!(issue.status, 200, "issue {id} on {url}: {}", issue.text());
        assert_eq!(issue.json()["title"], title.as_str());
        assert_eq!(
            issue.header("etag"),
            Some(format!("\"{version}\"").as_str())
        );
    }
    for (id, issue_id, body) in &old.comments {
        let page = get(&addr, &format!("/api/v1/issues/{issue_id}/comments"), &[])
            .await
            .json();
        let found = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == *id && c["body"] == body.as_str());
        assert!(found, "comment {id} served on {url}: {page}");
    }
    let audit = get(&addr, "/api/v1/audit?limit=200", &[]).await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    assert_eq!(
        audit.json()["items"].as_array().unwrap().len() as i64,
        old.audit_entries,
        "every old audit entry is searchable on {url}"
    );

    // Changing old rows: a new version, a new comment, new audit entries whose ids do not
    // collide with the old ones.
    let (id, _, version) = &old.issues[0];
    let changed = json(
        &addr,
        "PATCH",
        &format!("/api/v1/issues/{id}"),
        &[("if-match", &format!("\"{version}\""))],
        &json!({"priority": "urgent"}),
    )
    .await;
    assert_eq!(changed.status, 200, "{url}: {}", changed.text());
    assert_eq!(changed.json()["version"], version + 1);
    let comment = json(
        &addr,
        "POST",
        &format!("/api/v1/issues/{id}/comments"),
        &[],
        &json!({"body": "Still happens after the upgrade."}),
    )
    .await;
    assert_eq!(comment.status, 201, "{url}: {}", comment.text());
    let created = json(
        &addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 3, "title": "Filed after the upgrade"}),
    )
    .await;
    assert_eq!(created.status, 201, "{url}: {}", created.text());
    let audit = get(&addr, "/api/v1/audit?limit=200", &[]).await.json();
    assert_eq!(
        audit["items"].as_array().unwrap().len() as i64,
        old.audit_entries + 3
    );
}

/// The events the older release left pending are relayed to their rooms.
async fn check_pending_events_relayed(server: &TestServer, old: &OldData, url: &str) {
    let pool = server.server().store().pool();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, rooms, event) in &old.pending_events {
        let event: serde_json::Value = serde_json::from_str(event).unwrap();
        loop {
            let (published,): (Option<i64>,) =
                sqlx::query_as("SELECT published_at FROM outbox WHERE id = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            if published.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pending event {id} relayed on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rooms: Vec<String> = serde_json::from_str(rooms).unwrap();
        for room in rooms {
            let history = get(
                &server.addr(),
                &format!("/api/v1/rooms/{room}/history"),
                &[],
            )
            .await
            .json();
            let messages = history["messages"].as_array().unwrap_or_else(|| {
                panic!("history of {room} on {url}: {history}");
            });
            assert!(
                messages.iter().any(|m| m["data"] == event),
                "the old event reached {room} on {url}: {history}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_every_earlier_release_upgrades_and_keeps_working() {
    let head = migrations(Backend::Sqlite).len();
    for fresh_url in db::all().await {
        let backend = backend_of(&fresh_url);
        let fresh = Store::connect(&fresh_url).await.unwrap();
        let fresh_schema = schema(fresh.pool(), backend).await;
        drop(fresh);
        for version in 1..=head {
            let url = match backend {
                Backend::Sqlite => db::sqlite_url(),
                Backend::Postgres => db::postgres_url().await.unwrap(),
            };
            let pool = database_at(&url, version).await;
            let old = read_old_data(&pool).await;
            pool.close().await;

            let server = TestServer::on_database(&url, |_| {}).await;
            let upgraded_schema = schema(server.server().store().pool(), backend).await;
            assert_eq!(
                upgraded_schema, fresh_schema,
                "the schema upgraded from migration {version} differs from a fresh one on {url}"
            );
            check_served(&server, &old, &url).await;
            check_pending_events_relayed(&server, &old, &url).await;
            server.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_audit_entries_get_their_project_on_upgrade() {
    for url in db::all().await {
        let pool = database_at(&url, 2).await;
        // Entries as the release before memberships wrote them: issue 1 (project 3, from
        // the fixtures) still exists; issue 9 (project 5) and its comment 7 were deleted,
        // so only the recorded changes know their project.
        let entries = [
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
        let projects: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT request_id, project_id FROM audit_log WHERE actor = 'ann' OR request_id LIKE 'req-%' ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let projects: Vec<Option<i64>> = projects.into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            projects,
            [
                // The fixtures' entries: issue 1 and its comment (project 3), issue 2
                // (project 5).
                Some(3),
                Some(3),
                Some(3),
                Some(5),
                // The entries above.
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
        let update = sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(store.pool())
            .await;
        assert!(update.is_err(), "still append-only after the upgrade");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_release_is_refused_with_a_clear_message() {
    for url in db::all().await {
        let pool = database_at(&url, migrations(backend_of(&url)).len()).await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, $1, 1)",
        )
        .bind(vec![0u8; 48])
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let error = Store::connect(&url)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("migrated by a newer release") && error.contains("9999"),
            "{url}: {error}"
        );
    }
}
