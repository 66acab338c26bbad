-- Users, instances and the transactional outbox.
--
-- Outbox bookkeeping times (created_us, sent_us, claimed_until_us) are microseconds since the
-- Unix epoch, identical on both backends, because the relay compares them; entity times use the
-- native timestamp type.

CREATE TABLE users (
    id                  BLOB PRIMARY KEY,
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    password_changed_at TEXT NOT NULL
);

CREATE TABLE instances (
    id         BLOB PRIMARY KEY,
    owner      BLOB NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    resources  TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- A name is unique among an owner's instances that still exist.
CREATE UNIQUE INDEX instances_owner_name ON instances (owner, name) WHERE status <> 'deleted';
CREATE INDEX instances_owner ON instances (owner, created_at);

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    BLOB NOT NULL UNIQUE,
    instance_id BLOB NOT NULL,
    payload     TEXT NOT NULL,
    created_us  INTEGER NOT NULL,
    sent_us     INTEGER
);
CREATE INDEX outbox_unsent ON outbox (instance_id, seq) WHERE sent_us IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_us) WHERE sent_us IS NOT NULL;

-- Which relay publishes which instance's events, until when.
CREATE TABLE outbox_claims (
    instance_id      BLOB PRIMARY KEY,
    relay            TEXT NOT NULL,
    claimed_until_us INTEGER NOT NULL
);
