-- Limits an administrator set for one user, as the JSON of iaas_core::QuotaOverride (only the
-- limits it overrides); a user without a row has the platform's configured defaults.
CREATE TABLE quota_overrides (
    user_id    UUID PRIMARY KEY,
    limits     TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
