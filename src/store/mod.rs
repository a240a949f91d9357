//! Storage of the issue tracker with sqlx: SQLite by default, PostgreSQL when the URL says
//! so. One code path serves both (sqlx's `Any` driver; the queries use `$n` placeholders,
//! which both accept); the schema is kept as one migration set per backend under
//! `migrations/`, with the same tables, constraints and rules.
//!
//! Every mutation writes, in one transaction: the change itself, its audit entry, its
//! outbox event (broadcast later by the relay), and the stored response of its
//! idempotency key, if any. A request that fails leaves nothing behind.

mod audit;
mod caller;
mod comment_rows;
mod comments;
mod gdpr;
mod idempotency;
mod issues;
mod memberships;
mod outbox;

pub use audit::{AuditEntry, AuditQuery};
pub use caller::Caller;
pub use gdpr::{Erasure, UserExport};
pub use idempotency::{IdempotencyKey, StoredResponse};
pub use issues::IssueFilter;
pub use memberships::MembershipChange;
pub use outbox::OutboxRow;

use crate::tracker::{Action, Actor, Entity};
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, SqlSafeStr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Which database runs behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Store failures, as the API needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// `If-Match` named another version than the current one.
    #[error("version {current} is current")]
    VersionMismatch {
        /// The row's current version.
        current: i64,
    },
    /// The database refused a value (a CHECK constraint).
    #[error("refused by the database: {0}")]
    Constraint(String),
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => {
                let message = db.message().to_owned();
                if message.contains("CHECK constraint") || message.contains("check constraint") {
                    StoreError::Constraint(message)
                } else if message.contains("FOREIGN KEY") || message.contains("foreign key") {
                    StoreError::NotFound
                } else {
                    StoreError::Internal(message)
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// Who asks for a change, and which request it belongs to.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Who.
    pub actor: Actor,
    /// The HTTP request id, recorded in the audit entry and the event.
    pub request_id: String,
    /// The request's `Idempotency-Key`, if any.
    pub idempotency: Option<IdempotencyKey>,
    /// Whether the actor acts with every right (see [`Caller::admin`]).
    pub admin: bool,
}

impl Mutation {
    /// The acting user of the mutation's transaction.
    pub fn caller(&self) -> Caller {
        Caller {
            user: self.actor.name.clone(),
            admin: self.admin,
        }
    }
}

/// Result of a mutation that may be answered from an idempotency record.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Done now.
    Done(T),
    /// The same key and request were seen before: the original response.
    Replay(StoredResponse),
    /// The key was used before with a different request.
    KeyReused,
}

/// The issue tracker's store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Signalled after every commit that wrote outbox rows.
    outbox_written: Arc<Notify>,
}

/// How long the first connection to PostgreSQL may take before the start fails.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One direct connection before the pool is built. The pool retries a refused
/// connection until its acquire timeout and then says only "pool timed out"; this says
/// where it tried to connect and why it could not.
async fn probe_postgres(url: &str, options: &AnyConnectOptions) -> Result<(), StoreError> {
    let address = sqlx::postgres::PgConnectOptions::from_str(url)
        .map(|pg| format!("{}:{}", pg.get_host(), pg.get_port()))
        .unwrap_or_else(|_| "the configured address".into());
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            Ok(())
        }
        Ok(Err(err)) => Err(StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {address}: {err}"
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from PostgreSQL at {address} within {} s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Internal(format!(
                "unsupported database URL {url}"
            )));
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid database URL: {e}")))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        if backend == Backend::Postgres {
            probe_postgres(url, &options).await?;
        }
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer at a time: one connection serializes the store's
            // transactions instead of failing them with "database is locked".
            .max_connections(if backend == Backend::Sqlite { 1 } else { 10 })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrator(backend).run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Internal(format!(
                "this database was migrated by a newer release (migration {version} is not known \
                     to this one): run that release, or roll back as migrations/README.md says"
            )),
            sqlx::migrate::MigrateError::VersionMismatch(version) => StoreError::Internal(format!(
                "migration {version} applied to this database differs from this release's: \
                     migrations are never edited once released (see migrations/README.md)"
            )),
            e => StoreError::Internal(format!("migration failed: {e}")),
        })?;
        Ok(Store {
            pool,
            backend,
            outbox_written: Arc::new(Notify::new()),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(result) => result.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable("no answer within 2 s".into())),
        }
    }

    /// Notified after each commit that wrote outbox rows.
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    /// The pool (tests read tables directly).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The migrations of one backend, compiled in, in order. Public for the migration-safety
/// tests, which apply prefixes of it to build the databases of earlier releases.
pub fn migrator(backend: Backend) -> Migrator {
    // (version, description, SQLite, PostgreSQL), in order.
    let migrations = [
        (
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        (
            2,
            "outbox trace",
            include_str!("../../migrations/sqlite/0002_outbox_trace.sql"),
            include_str!("../../migrations/postgres/0002_outbox_trace.sql"),
        ),
        (
            3,
            "memberships",
            include_str!("../../migrations/sqlite/0003_memberships.sql"),
            include_str!("../../migrations/postgres/0003_memberships.sql"),
        ),
    ];
    Migrator::with_migrations(
        migrations
            .into_iter()
            .map(|(version, description, sqlite, postgres)| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Milliseconds since the Unix epoch, as stored.
pub fn now_ms() -> i64 {
    crate::stream::unix_ms() as i64
}

/// One change, as recorded by [`record_change`].
pub(crate) struct Change {
    pub entity: Entity,
    pub action: Action,
    pub id: i64,
    pub project_id: i64,
    pub issue_id: i64,
    pub version: i64,
    pub changes: Value,
    pub at: i64,
}

/// Writes what every mutation writes besides the row itself, in its transaction: the
/// audit entry, the outbox event, and the idempotency record (when `response` is given).
pub(crate) async fn record_change(
    conn: &mut AnyConnection,
    mutation: &Mutation,
    change: &Change,
    response: Option<&StoredResponse>,
) -> Result<(), StoreError> {
    record_audit(
        conn,
        mutation,
        &AuditRecord {
            entity: change.entity,
            entity_id: change.id,
            action: change.action,
            project_id: Some(change.project_id),
            changes: &change.changes,
            at: change.at,
        },
    )
    .await?;
    let (rooms, event) = crate::tracker::event(
        change.entity,
        change.action,
        change.id,
        change.project_id,
        change.issue_id,
        change.version,
        &change.changes,
        &mutation.actor,
        &mutation.request_id,
        change.at,
    );
    let trace = crate::telemetry::traces::current_traceparent();
    outbox::enqueue(conn, &rooms, &event, change.at, trace.as_deref()).await?;
    if let (Some(key), Some(response)) = (&mutation.idempotency, response) {
        idempotency::remember(conn, key, response).await?;
    }
    Ok(())
}

/// Whether an error is a unique-key violation (two requests with one idempotency key).
pub(crate) fn is_unique_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Internal(message)
        if message.contains("UNIQUE constraint") || message.contains("duplicate key"))
}

/// One audit entry to append.
pub(crate) struct AuditRecord<'a> {
    pub entity: Entity,
    pub entity_id: i64,
    pub action: Action,
    /// The project the entry belongs to (`None`: visible to global administrators only).
    pub project_id: Option<i64>,
    pub changes: &'a Value,
    pub at: i64,
}

/// Appends an audit entry, and in the same transaction its event to the audit rooms
/// ([`crate::tracker::AUDIT_ROOM`], and the project's one when it has a project): the
/// live audit view sees exactly what the log holds, through the relay that publishes the
/// mutation's own event.
pub(crate) async fn record_audit(
    conn: &mut AnyConnection,
    mutation: &Mutation,
    record: &AuditRecord<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (created_at, actor, actor_kind, entity, entity_id, action, changes, request_id, project_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(record.at)
    .bind(&mutation.actor.name)
    .bind(mutation.actor.kind)
    .bind(record.entity.as_str())
    .bind(record.entity_id)
    .bind(record.action.as_str())
    .bind(record.changes.to_string())
    .bind(&mutation.request_id)
    .bind(record.project_id)
    .execute(&mut *conn)
    .await?;
    // Not `RETURNING id`: on PostgreSQL that needs the new row to pass the audit log's
    // read policy, which a project member who writes does not (only its admins read).
    let last_id = if conn.backend_name() == "PostgreSQL" {
        "SELECT lastval()"
    } else {
        "SELECT last_insert_rowid()"
    };
    let (id,): (i64,) = sqlx::query_as(last_id).fetch_one(&mut *conn).await?;
    let entry = audit::AuditEntry {
        id,
        created_at: record.at,
        actor: mutation.actor.name.clone(),
        actor_kind: mutation.actor.kind.to_owned(),
        entity: record.entity.as_str().to_owned(),
        entity_id: record.entity_id,
        action: record.action.as_str().to_owned(),
        changes: record.changes.clone(),
        request_id: mutation.request_id.clone(),
        project_id: record.project_id,
    };
    let mut rooms = vec![crate::tracker::AUDIT_ROOM.to_owned()];
    rooms.extend(record.project_id.map(crate::tracker::audit_room));
    let event = serde_json::to_value(&entry).expect("audit entries serialize");
    let trace = crate::telemetry::traces::current_traceparent();
    outbox::enqueue(conn, &rooms, &event, record.at, trace.as_deref()).await
}
