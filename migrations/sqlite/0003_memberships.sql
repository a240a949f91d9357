-- Project membership, and an audit log that also records membership changes and GDPR
-- erasures. The PostgreSQL migration of the same number has the same tables and rules
-- (and, in addition, row-level security).

CREATE TABLE memberships (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL CHECK (project_id > 0),
    user_id    TEXT    NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    role       TEXT    NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (project_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, project_id);

-- The audit log gains the project of each entry (so project admins can be shown their
-- projects' entries) and two kinds of entries. SQLite cannot change a CHECK constraint
-- in place: the table is rebuilt. (Dropping a table fires no DELETE trigger.)
CREATE TABLE audit_log_v3 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    actor_kind TEXT    NOT NULL CHECK (actor_kind IN ('user', 'service', 'anonymous')),
    entity     TEXT    NOT NULL CHECK (entity IN ('issue', 'comment', 'membership', 'user')),
    entity_id  INTEGER NOT NULL,
    action     TEXT    NOT NULL CHECK (action IN ('create', 'update', 'delete', 'erase')),
    changes    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    project_id INTEGER
);

-- The project of an older entry: from the issue when it still exists, else from the
-- recorded changes (an issue's create or delete entry names its project, a comment's
-- create entry its issue). Entries whose project cannot be found keep NULL: only
-- global administrators see them.
INSERT INTO audit_log_v3 (id, created_at, actor, actor_kind, entity, entity_id, action, changes, request_id, project_id)
WITH issue_projects (issue_id, project_id) AS (
    SELECT id, project_id FROM issues
    UNION ALL
    SELECT entity_id, COALESCE(json_extract(changes, '$.project_id.after'), json_extract(changes, '$.project_id.before'))
    FROM audit_log WHERE entity = 'issue' AND action IN ('create', 'delete')
),
comment_issues (comment_id, issue_id) AS (
    SELECT id, issue_id FROM comments
    UNION ALL
    SELECT entity_id, COALESCE(json_extract(changes, '$.issue_id.after'), json_extract(changes, '$.issue_id.before'))
    FROM audit_log WHERE entity = 'comment' AND action IN ('create', 'delete')
)
SELECT a.id, a.created_at, a.actor, a.actor_kind, a.entity, a.entity_id, a.action, a.changes, a.request_id,
       (SELECT p.project_id FROM issue_projects p
         WHERE p.project_id IS NOT NULL AND p.issue_id = CASE a.entity
             WHEN 'issue' THEN a.entity_id
             ELSE (SELECT c.issue_id FROM comment_issues c WHERE c.comment_id = a.entity_id AND c.issue_id IS NOT NULL LIMIT 1)
         END
         LIMIT 1)
FROM audit_log a;

DROP TABLE audit_log;
ALTER TABLE audit_log_v3 RENAME TO audit_log;
CREATE INDEX audit_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_actor ON audit_log (actor, id);
CREATE INDEX audit_time ON audit_log (created_at);
CREATE INDEX audit_project ON audit_log (project_id, id);

-- Besides the retention job's deletions, one change is allowed: a GDPR erasure raises
-- `pseudonymise` inside its own transaction and may then rewrite `actor` and `changes`
-- (the erased user's name becomes a pseudonym); nothing else of an entry can change.
ALTER TABLE audit_guard ADD COLUMN pseudonymise INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN (SELECT pseudonymise FROM audit_guard WHERE id = 1) = 0
  OR NEW.id IS NOT OLD.id OR NEW.created_at IS NOT OLD.created_at
  OR NEW.actor_kind IS NOT OLD.actor_kind OR NEW.entity IS NOT OLD.entity
  OR NEW.entity_id IS NOT OLD.entity_id OR NEW.action IS NOT OLD.action
  OR NEW.request_id IS NOT OLD.request_id OR NEW.project_id IS NOT OLD.project_id
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (only an erasure pseudonymises entries)');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.created_at >= (SELECT allow_before FROM audit_guard WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (only the retention job deletes expired rows)');
END;

-- A random key per database for erasure pseudonyms: the same user always gets the same
-- pseudonym, and the pseudonym cannot be recomputed from a user id without this key.
CREATE TABLE pseudonym_key (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    key TEXT    NOT NULL
);
INSERT INTO pseudonym_key (id, key) VALUES (1, lower(hex(randomblob(32))));
