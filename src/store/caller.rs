//! Who a tracker transaction acts for. On PostgreSQL every tracker transaction runs as
//! the role `roomcast_tracker` with the acting user and the administrator flag set for
//! the transaction only, so the row-level security policies of migration 0003 decide
//! which rows it sees and may write — a second line behind the API's own checks. On
//! SQLite (no row-level security) the transaction is an ordinary one.

use super::{Backend, Store, StoreError};
use sqlx::{Any, Transaction};

/// The acting user of a tracker transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id (JWT `sub`), service name or `anonymous`.
    pub user: String,
    /// Whether it acts with every right (global administrator, service, open server).
    pub admin: bool,
}

impl Store {
    /// Begins a transaction acting as `caller`.
    pub(crate) async fn begin_as(
        &self,
        caller: &Caller,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // `roomcast_tracker` (created by migration 0003) is neither the tables' owner
            // nor a superuser, so row-level security applies to it.
            // `set_config(…, true)` lasts until the end of the transaction, so a pooled
            // connection never carries one caller's identity into another's work.
            sqlx::query(
                "SELECT set_config('roomcast.user', $1, true), set_config('roomcast.admin', $2, true), \
                 set_config('role', 'roomcast_tracker', true)",
            )
            .bind(&caller.user)
            .bind(if caller.admin { "on" } else { "off" })
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx)
    }

    /// A transaction that will write. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`), so it waits its turn behind another process's writer (the
    /// busy timeout) instead of failing with "database is locked" when it upgrades from
    /// reading to writing, as a deferred transaction does when another connection wrote
    /// in between.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}
