-- The W3C trace context of the change that wrote each event, so the relay's publish
-- continues the change's trace.
ALTER TABLE outbox ADD COLUMN trace TEXT;
