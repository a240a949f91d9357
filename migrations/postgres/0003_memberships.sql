-- Project membership, an audit log that also records membership changes and GDPR
-- erasures, and row-level security on the tracker's tables. The SQLite migration of the
-- same number has the same tables and rules (SQLite has no row-level security).

CREATE TABLE memberships (
    id         BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL CHECK (project_id > 0),
    user_id    TEXT   NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 200),
    role       TEXT   NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at BIGINT NOT NULL,
    created_by TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, project_id);

-- The audit log gains the project of each entry (so project admins can be shown their
-- projects' entries) and two kinds of entries.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_entity_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_entity_check
    CHECK (entity IN ('issue', 'comment', 'membership', 'user'));
ALTER TABLE audit_log DROP CONSTRAINT audit_log_action_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_action_check
    CHECK (action IN ('create', 'update', 'delete', 'erase'));
ALTER TABLE audit_log ADD COLUMN project_id BIGINT;
CREATE INDEX audit_project ON audit_log (project_id, id);

-- The project of an older entry: from the issue when it still exists, else from the
-- recorded changes (an issue's create or delete entry names its project, a comment's
-- create entry its issue). Entries whose project cannot be found keep NULL: only
-- global administrators see them. The append-only trigger is off for this one update.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;
WITH issue_projects (issue_id, project_id) AS (
    SELECT id, project_id FROM issues
    UNION ALL
    SELECT entity_id, COALESCE(changes::jsonb #>> '{project_id,after}', changes::jsonb #>> '{project_id,before}')::BIGINT
    FROM audit_log WHERE entity = 'issue' AND action IN ('create', 'delete')
),
comment_issues (comment_id, issue_id) AS (
    SELECT id, issue_id FROM comments
    UNION ALL
    SELECT entity_id, COALESCE(changes::jsonb #>> '{issue_id,after}', changes::jsonb #>> '{issue_id,before}')::BIGINT
    FROM audit_log WHERE entity = 'comment' AND action IN ('create', 'delete')
)
UPDATE audit_log a SET project_id = (
    SELECT p.project_id FROM issue_projects p
    WHERE p.project_id IS NOT NULL AND p.issue_id = CASE a.entity
        WHEN 'issue' THEN a.entity_id
        ELSE (SELECT c.issue_id FROM comment_issues c
              WHERE c.comment_id = a.entity_id AND c.issue_id IS NOT NULL LIMIT 1)
    END
    LIMIT 1);
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change;

-- Besides the retention job's deletions, one change is allowed: a GDPR erasure raises
-- `pseudonymise` inside its own transaction and may then rewrite `actor` and `changes`
-- (the erased user's name becomes a pseudonym); nothing else of an entry can change.
ALTER TABLE audit_guard ADD COLUMN pseudonymise BOOLEAN NOT NULL DEFAULT FALSE;

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.created_at < (SELECT allow_before FROM audit_guard WHERE id = 1) THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE'
       AND (SELECT pseudonymise FROM audit_guard WHERE id = 1)
       AND (NEW.id, NEW.created_at, NEW.actor_kind, NEW.entity, NEW.entity_id, NEW.action, NEW.request_id)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.created_at, OLD.actor_kind, OLD.entity, OLD.entity_id, OLD.action, OLD.request_id)
       AND NEW.project_id IS NOT DISTINCT FROM OLD.project_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (only the retention job deletes expired rows, only an erasure pseudonymises)';
END;
$$ LANGUAGE plpgsql;

-- A random key per database for erasure pseudonyms: the same user always gets the same
-- pseudonym, and the pseudonym cannot be recomputed from a user id without this key.
CREATE TABLE pseudonym_key (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    key TEXT    NOT NULL
);
INSERT INTO pseudonym_key (id, key)
VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

-- Row-level security, as defence in depth behind the API's own checks.
--
-- The store runs every tracker transaction as the role `roomcast_tracker` (through
-- `set_config('role', …, true)`), with the acting user in `roomcast.user` and
-- `roomcast.admin` = 'on' for global administrators, services and open servers. The
-- role is not the tables' owner and not a superuser, so the policies below apply to it;
-- the connecting role (the owner) keeps running the outbox relay and the retention job,
-- which belong to no user. Roles are cluster-wide, so the role is created only once
-- (this migration runs once per schema); creating it needs CREATEROLE, or an operator
-- creates it beforehand. Tables added by later migrations need their own grants.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'roomcast_tracker') THEN
        CREATE ROLE roomcast_tracker NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- Created at the same moment by a migration of another schema.
    NULL;
END
$$;
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'roomcast_tracker', 'MEMBER') THEN
        EXECUTE format('GRANT roomcast_tracker TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO roomcast_tracker', current_schema());
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO roomcast_tracker', current_schema());
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON issues, comments, memberships TO roomcast_tracker;
GRANT SELECT, INSERT ON audit_log, outbox, idempotency_keys TO roomcast_tracker;
GRANT SELECT ON audit_guard TO roomcast_tracker;

-- Whether the acting user holds at least `min_rank` (1 viewer, 2 member, 3 admin) in
-- `project`, or acts as administrator. It reads memberships as its owner, so that the
-- policies of `memberships` itself can use it without recursing.
CREATE FUNCTION roomcast_may(project BIGINT, min_rank INTEGER) RETURNS BOOLEAN
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT COALESCE(current_setting('roomcast.admin', true), '') = 'on'
        OR EXISTS (
            SELECT 1 FROM memberships m
            WHERE m.project_id = project
              AND m.user_id = current_setting('roomcast.user', true)
              AND CASE m.role WHEN 'viewer' THEN 1 WHEN 'member' THEN 2 ELSE 3 END >= min_rank)
$$;

ALTER TABLE issues ENABLE ROW LEVEL SECURITY;
CREATE POLICY issues_read ON issues FOR SELECT USING (roomcast_may(project_id, 1));
CREATE POLICY issues_insert ON issues FOR INSERT WITH CHECK (roomcast_may(project_id, 2));
CREATE POLICY issues_update ON issues FOR UPDATE
    USING (roomcast_may(project_id, 2)) WITH CHECK (roomcast_may(project_id, 2));
CREATE POLICY issues_delete ON issues FOR DELETE USING (roomcast_may(project_id, 2));

ALTER TABLE comments ENABLE ROW LEVEL SECURITY;
CREATE POLICY comments_read ON comments FOR SELECT
    USING (roomcast_may((SELECT i.project_id FROM issues i WHERE i.id = issue_id), 1));
CREATE POLICY comments_insert ON comments FOR INSERT
    WITH CHECK (roomcast_may((SELECT i.project_id FROM issues i WHERE i.id = issue_id), 2));
CREATE POLICY comments_update ON comments FOR UPDATE
    USING (roomcast_may((SELECT i.project_id FROM issues i WHERE i.id = issue_id), 2))
    WITH CHECK (roomcast_may((SELECT i.project_id FROM issues i WHERE i.id = issue_id), 2));
CREATE POLICY comments_delete ON comments FOR DELETE
    USING (roomcast_may((SELECT i.project_id FROM issues i WHERE i.id = issue_id), 2));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY memberships_read ON memberships FOR SELECT USING (roomcast_may(project_id, 1));
CREATE POLICY memberships_insert ON memberships FOR INSERT WITH CHECK (roomcast_may(project_id, 3));
CREATE POLICY memberships_update ON memberships FOR UPDATE
    USING (roomcast_may(project_id, 3)) WITH CHECK (roomcast_may(project_id, 3));
CREATE POLICY memberships_delete ON memberships FOR DELETE USING (roomcast_may(project_id, 3));

-- Project admins read their projects' entries; members write entries of their changes.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_read ON audit_log FOR SELECT USING (roomcast_may(project_id, 3));
CREATE POLICY audit_insert ON audit_log FOR INSERT WITH CHECK (roomcast_may(project_id, 2));
