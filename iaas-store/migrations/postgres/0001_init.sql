-- Users, instances and the transactional outbox.
--
-- Outbox bookkeeping times (created_us, sent_us, claimed_until_us) are microseconds since the
-- Unix epoch, identical on both backends, because the relay compares them; entity times use the
-- native timestamp type.

CREATE TABLE users (
    id                  UUID PRIMARY KEY,
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    password_changed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE instances (
    id         UUID PRIMARY KEY,
    owner      UUID NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    resources  TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- A name is unique among an owner's instances that still exist.
CREATE UNIQUE INDEX instances_owner_name ON instances (owner, name) WHERE status <> 'deleted';
CREATE INDEX instances_owner ON instances (owner, created_at);

CREATE TABLE outbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    instance_id UUID NOT NULL,
    payload     TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    sent_us     BIGINT
);
CREATE INDEX outbox_unsent ON outbox (instance_id, seq) WHERE sent_us IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_us) WHERE sent_us IS NOT NULL;

-- Which relay publishes which instance's events, until when.
CREATE TABLE outbox_claims (
    instance_id      UUID PRIMARY KEY,
    relay            TEXT NOT NULL,
    claimed_until_us BIGINT NOT NULL
);
