-- The engine work owed to an instance in a transitional status, one job per instance, written
-- in the transaction of the status change that asks for it; claimed under a lease that runs
-- out when its holder dies. Times are microseconds since the Unix epoch, as in the outbox.
CREATE TABLE jobs (
    instance_id     UUID PRIMARY KEY,
    action          TEXT NOT NULL,
    from_status     TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_us      BIGINT NOT NULL,
    due_us          BIGINT NOT NULL,
    holder          TEXT,
    leased_until_us BIGINT
);
CREATE INDEX jobs_due ON jobs (due_us);

-- The sealed secrets of an instance (the store never sees them in clear), written before the
-- instance, removed when it is deleted.
CREATE TABLE instance_secrets (
    instance_id UUID PRIMARY KEY,
    sealed      TEXT NOT NULL
);

-- Instances already under way when this table came get their job, due at once.
INSERT INTO jobs (instance_id, action, from_status, created_us, due_us)
SELECT id,
       CASE status
           WHEN 'provisioning' THEN 'provision'
           WHEN 'starting' THEN 'start'
           WHEN 'stopping' THEN 'stop'
           WHEN 'restarting' THEN 'restart'
           ELSE 'remove'
       END,
       CASE status WHEN 'starting' THEN 'stopped' WHEN 'provisioning' THEN 'provisioning' ELSE 'running' END,
       0,
       0
FROM instances
WHERE status IN ('provisioning', 'starting', 'stopping', 'restarting', 'deleting');
