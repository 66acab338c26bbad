-- Failed publishes per outbox entry, the last error, and when an entry that failed for good was
-- parked (taken out of line until an operator retries or drops it).
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN parked_us INTEGER;
CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_us IS NOT NULL;
