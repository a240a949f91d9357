-- roomcast issue tracker schema, SQLite flavour. Timestamps are milliseconds since the
-- Unix epoch; the PostgreSQL migration has the same tables, columns and rules.

CREATE TABLE issues (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL CHECK (project_id > 0),
    title       TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description TEXT    NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    status      TEXT    NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    priority    TEXT    NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    issue_type  TEXT    NOT NULL CHECK (issue_type IN ('bug', 'feature', 'task')),
    assignee    TEXT    CHECK (assignee IS NULL OR length(assignee) BETWEEN 1 AND 100),
    reporter    TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX issues_project ON issues (project_id, id);
CREATE INDEX issues_assignee ON issues (assignee, id);

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_id   INTEGER NOT NULL REFERENCES issues (id),
    author     TEXT    NOT NULL,
    body       TEXT    NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX comments_issue ON comments (issue_id, id);

-- Append-only: see the triggers below.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    actor_kind TEXT    NOT NULL CHECK (actor_kind IN ('user', 'service', 'anonymous')),
    entity     TEXT    NOT NULL CHECK (entity IN ('issue', 'comment')),
    entity_id  INTEGER NOT NULL,
    action     TEXT    NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    changes    TEXT    NOT NULL,
    request_id TEXT    NOT NULL
);
CREATE INDEX audit_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_actor ON audit_log (actor, id);
CREATE INDEX audit_time ON audit_log (created_at);

-- The retention job may delete audit rows older than `allow_before`, which it raises
-- only inside its own transaction; at every other moment it is 0 and nothing can be
-- deleted or changed.
CREATE TABLE audit_guard (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    allow_before INTEGER NOT NULL
);
INSERT INTO audit_guard (id, allow_before) VALUES (1, 0);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.created_at >= (SELECT allow_before FROM audit_guard WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (only the retention job deletes expired rows)');
END;

-- Events to broadcast, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   INTEGER NOT NULL,
    rooms        TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_pending ON outbox (published_at, id);

-- Responses of POST requests that carried an Idempotency-Key.
CREATE TABLE idempotency_keys (
    principal    TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    location     TEXT,
    etag         TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);
