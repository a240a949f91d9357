//! PostgreSQL row-level security behind the API's checks.

use super::{OUTSIDER, PROJECT_ADMIN, VIEWER, World};
use crate::support::db;
use roomcast::store::Caller;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_level_security_shows_a_transaction_only_its_users_projects() {
    // Runs when DATABASE_URL names a PostgreSQL (scripts/test.sh sets it when one is
    // reachable), like every PostgreSQL case of the suite.
    if let Some(url) = db::postgres_url().await {
        let w = World::on(&url).await;
        let pool = w.server.server().store().pool();
        let count = |sql: &'static str, user: Option<&'static str>| async move {
            let mut tx = pool.begin().await.unwrap();
            // The role the store runs tracker transactions as; the test connects as a
            // superuser, which row-level security would not apply to.
            sqlx::query("SELECT set_config('role', 'roomcast_tracker', true)")
                .execute(&mut *tx)
                .await
                .unwrap();
            if let Some(user) = user {
                sqlx::query("SELECT set_config('roomcast.user', $1, true)")
                    .bind(user)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            n
        };
        let tables = [
            "SELECT COUNT(*) FROM issues",
            "SELECT COUNT(*) FROM comments",
            "SELECT COUNT(*) FROM memberships",
            "SELECT COUNT(*) FROM audit_log",
        ];
        for sql in tables {
            assert_eq!(count(sql, None).await, 0, "{sql} without an acting user");
        }
        assert_eq!(count("SELECT COUNT(*) FROM issues", Some(VIEWER)).await, 1);
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM issues WHERE project_id = 2",
                Some(VIEWER)
            )
            .await,
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM comments", Some(VIEWER)).await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM memberships", Some(OUTSIDER)).await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_log", Some(VIEWER)).await,
            0,
            "viewers read no audit"
        );
        assert!(count("SELECT COUNT(*) FROM audit_log", Some(PROJECT_ADMIN)).await > 0);
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM audit_log WHERE project_id <> 1",
                Some(PROJECT_ADMIN)
            )
            .await,
            0
        );
        // A viewer's transaction cannot write, whatever the API would let through.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('role', 'roomcast_tracker', true), set_config('roomcast.user', 'vic', true)").execute(&mut *tx).await.unwrap();
        let write = sqlx::query("UPDATE issues SET title = 'x'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(write.rows_affected(), 0);
        tx.rollback().await.unwrap();
        // The store's own transactions: a non-member sees nothing even when it asks
        // directly, bypassing the API's checks.
        let store = w.server.server().store();
        let outsider = Caller {
            user: OUTSIDER.into(),
            admin: false,
        };
        assert!(store.get_issue(&outsider, w.issue).await.is_err());
        let viewer = Caller {
            user: VIEWER.into(),
            admin: false,
        };
        assert_eq!(store.get_issue(&viewer, w.issue).await.unwrap().id, w.issue);
        w.server.stop().await;
    }
}
