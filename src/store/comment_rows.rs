//! Comment rows as read from the database: shared by comments, by issues (an issue is
//! deleted with its comments) and by the personal-data export, so that none of those
//! needs another for it.

use super::StoreError;
use crate::tracker::Comment;
use sqlx::AnyConnection;

pub(crate) type Row = (i64, i64, String, String, i64, i64, i64);

pub(crate) fn from_row(
    (id, issue_id, author, body, version, created_at, updated_at): Row,
) -> Comment {
    Comment {
        id,
        issue_id,
        author,
        body,
        version,
        created_at,
        updated_at,
    }
}

/// Every comment of an issue (used when the issue is deleted).
pub(crate) async fn of_issue(
    conn: &mut AnyConnection,
    issue_id: i64,
) -> Result<Vec<Comment>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, issue_id, author, body, version, created_at, updated_at FROM comments WHERE issue_id = $1 ORDER BY id",
    )
    .bind(issue_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
