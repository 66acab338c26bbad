-- The platform's own sealed secrets of an instance (those it needs again after the
-- provisioning, such as the passwords a lost cluster member is made again with; never the
-- tenant's application password), written before the instance, removed when it is deleted.
CREATE TABLE platform_secrets (
    instance_id BLOB PRIMARY KEY,
    sealed      TEXT NOT NULL
);
