//! The repositories, written once for every backend.
//!
//! The SQL is the same on SQLite and PostgreSQL (`$n` placeholders, `ON CONFLICT`, partial
//! indexes and `RETURNING` exist on both), and so is the Rust around it; only the column types
//! in the migrations and how a write transaction begins differ. A macro stamps the code out per
//! backend, so each gets concrete sqlx types and no trait-bound maze.
//!
//! # Outbox claims
//!
//! A relay claims whole instances in `outbox_claims` (an upsert that succeeds only when the
//! instance is unclaimed, already ours, or its lease has run out), then reads the unsent entries
//! of the instances it holds, in `seq` order. `seq` follows commit order per instance: every
//! write to an instance updates its row first, so concurrent writers of one instance queue
//! on that row lock and take their `seq` one after the other. `record_event`, which changes no
//! column, updates the row to itself for the same lock (and leaves `version` alone, so a status
//! change that waited for it still finds the version it read). Row locks on the outbox
//! (`FOR UPDATE SKIP LOCKED`) are not used because a lock would end with the claiming
//! transaction, while a claim must outlive it for as long as the relay is publishing.

/// Generates a store type over one sqlx backend.
macro_rules! sql_store {
    (
        $(#[$doc:meta])* $name:ident, $db:ty, backend = $backend:literal, begin_write = $begin:literal,
        lock_owner = $lock_owner:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            /// Where reads run (`readers.rs`).
            readers: std::sync::Arc<crate::readers::Readers<$db>>,
            /// Where writes run: the same pool on PostgreSQL; on SQLite a pool of one
            /// connection, so in-process writers queue in order for it instead of polling
            /// SQLite's busy handler (whose sleeps of up to 100 ms made the tail of a commit).
            writer: sqlx::Pool<$db>,
            clock: std::sync::Arc<dyn iaas_core::Clock>,
        }

        impl $name {
            /// The connection pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            /// Uses `clock` for outbox times and leases (tests move time instead of sleeping).
            #[must_use]
            pub fn with_clock(mut self, clock: std::sync::Arc<dyn iaas_core::Clock>) -> Self {
                self.clock = clock;
                self
            }

            fn err(entity: &'static str, key: impl std::fmt::Display, operation: &str, err: sqlx::Error) -> iaas_core::Error {
                crate::error::db_error($backend, entity, &key.to_string(), operation, err)
            }

            /// A connection for one read.
            async fn reader(&self) -> iaas_core::Result<crate::readers::ReadConnection<'_, $db>> {
                self.readers.acquire().await.map_err(|e| Self::err("connection", "", "lending a connection to a read", e))
            }

            /// Begins a transaction that will write. SQLite takes the write lock up front so two
            /// writers never deadlock on a lock upgrade; PostgreSQL's row locks need nothing.
            async fn begin_write(&self, operation: &str) -> iaas_core::Result<sqlx::Transaction<'static, $db>> {
                self.writer.begin_with($begin).await.map_err(|e| Self::err("transaction", "", operation, e))
            }

            async fn append_event(
                tx: &mut sqlx::Transaction<'static, $db>,
                event: &iaas_core::InfrastructureEvent,
                now: chrono::DateTime<chrono::Utc>,
            ) -> iaas_core::Result<()> {
                sqlx::query("INSERT INTO outbox (event_id, instance_id, payload, created_us) VALUES ($1, $2, $3, $4)")
                    .bind(*event.id.as_uuid())
                    .bind(*event.instance_id.as_uuid())
                    .bind(crate::rows::payload(event)?)
                    .bind(crate::rows::micros(now))
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| Self::err("event", event.id, "appending to the outbox", e))?;
                Ok(())
            }

            fn instance_row(row: &<$db as sqlx::Database>::Row) -> Result<crate::rows::InstanceRow, sqlx::Error> {
                use sqlx::Row;
                Ok(crate::rows::InstanceRow {
                    id: row.try_get("id")?,
                    owner: row.try_get("owner")?,
                    name: row.try_get("name")?,
                    spec: row.try_get("spec")?,
                    resources: row.try_get("resources")?,
                    status: row.try_get("status")?,
                    version: row.try_get("version")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            async fn fetch_instance<'e, E>(executor: E, id: iaas_core::InstanceId) -> iaas_core::Result<Option<iaas_core::Instance>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {} FROM instances WHERE id = $1", crate::rows::INSTANCE_COLUMNS));
                let row = sqlx::query(sql)
                    .bind(*id.as_uuid())
                    .fetch_optional(executor)
                    .await
                    .map_err(|e| Self::err("instance", id, "reading", e))?;
                row.map(|row| {
                    Self::instance_row(&row).map_err(|e| Self::err("instance", id, "reading", e))?.into_instance()
                })
                .transpose()
            }

            async fn list_instances(&self, filter: &str, owner: Option<uuid::Uuid>, operation: &str) -> iaas_core::Result<Vec<iaas_core::Instance>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM instances WHERE {filter} ORDER BY created_at, id",
                    crate::rows::INSTANCE_COLUMNS
                ));
                let mut query = sqlx::query(sql);
                if let Some(owner) = owner {
                    query = query.bind(owner);
                }
                let rows = query.fetch_all(&mut *self.reader().await?).await.map_err(|e| Self::err("instance", "", operation, e))?;
                rows.iter()
                    .map(|row| Self::instance_row(row).map_err(|e| Self::err("instance", "", operation, e))?.into_instance())
                    .collect()
            }

            /// Writes a new instance row and its event in `tx`.
            async fn insert_instance(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                instance: &iaas_core::Instance,
                event: &iaas_core::InfrastructureEvent,
            ) -> iaas_core::Result<()> {
                let operation = "creating the instance";
                let values = crate::rows::InstanceValues::of(instance)?;
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO instances ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    crate::rows::INSTANCE_COLUMNS
                ));
                sqlx::query(sql)
                    .bind(*instance.id.as_uuid())
                    .bind(*instance.owner.as_uuid())
                    .bind(instance.name.as_str())
                    .bind(instance.kind().as_str())
                    .bind(values.spec)
                    .bind(values.resources)
                    .bind(instance.status.as_str())
                    .bind(values.version)
                    .bind(instance.created_at)
                    .bind(instance.updated_at)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| Self::err("instance", &instance.name, operation, e))?;
                let now = self.clock.now();
                Self::follow_change(tx, instance.id, instance.status, instance.status, event, now).await?;
                Self::append_event(tx, event, now).await
            }

            /// Tries a status change once; `Ok(None)` when a concurrent writer won the race.
            async fn try_update_status(&self, change: &iaas_core::StatusChange) -> iaas_core::Result<Option<iaas_core::Instance>> {
                use iaas_core::Transition;
                let operation = "changing the status";
                let mut tx = self.begin_write(operation).await?;
                let mut instance = Self::fetch_instance(&mut *tx, change.id)
                    .await?
                    .ok_or_else(|| iaas_core::Error::not_found("instance", change.id))?;
                if let Some(expected) = change.expected_version
                    && instance.version != expected
                {
                    return Err(iaas_core::Error::conflict(
                        "instance",
                        change.id,
                        format!("version is {}, expected {expected}", instance.version),
                    ));
                }
                let Transition::Changed { from, to } = instance.status.transition_to(change.to)? else {
                    return Ok(Some(instance));
                };
                let read_version = crate::rows::to_i64(instance.version, "instance version")?;
                let updated = sqlx::query(
                    "UPDATE instances SET status = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4",
                )
                .bind(to.as_str())
                .bind(change.at)
                .bind(*change.id.as_uuid())
                .bind(read_version)
                .execute(&mut *tx)
                .await
                .map_err(|e| Self::err("instance", change.id, operation, e))?;
                if updated.rows_affected() == 0 {
                    return Ok(None);
                }
                let now = self.clock.now();
                Self::follow_change(&mut tx, change.id, from, to, &change.event, now).await?;
                Self::append_event(&mut tx, &change.event, now).await?;
                tx.commit().await.map_err(|e| Self::err("instance", change.id, operation, e))?;
                instance.status = to;
                instance.version += 1;
                instance.updated_at = change.at;
                Ok(Some(instance))
            }
        }

        #[async_trait::async_trait]
        impl iaas_core::UserRepository for $name {
            async fn create_user(&self, user: &iaas_core::User) -> iaas_core::Result<()> {
                sqlx::query(
                    "INSERT INTO users (id, username, password_hash, scopes, created_at, password_changed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(*user.id.as_uuid())
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(crate::rows::scopes_json(user)?)
                .bind(user.created_at)
                .bind(user.password_changed_at)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("user", &user.username, "creating the user", e))?;
                Ok(())
            }

            async fn get_user(&self, id: iaas_core::UserId) -> iaas_core::Result<Option<iaas_core::User>> {
                self.find_user("id = $1", *id.as_uuid(), &id.to_string()).await
            }

            async fn find_user_by_username(&self, username: &str) -> iaas_core::Result<Option<iaas_core::User>> {
                self.find_user("username = $1", username.to_owned(), username).await
            }

            async fn set_password_hash(
                &self,
                id: iaas_core::UserId,
                password_hash: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> iaas_core::Result<()> {
                let done = sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
                    .bind(password_hash)
                    .bind(at)
                    .bind(*id.as_uuid())
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("user", id, "changing the password", e))?;
                if done.rows_affected() == 0 {
                    return Err(iaas_core::Error::not_found("user", id));
                }
                Ok(())
            }

            async fn set_scopes(&self, id: iaas_core::UserId, scopes: &[String]) -> iaas_core::Result<()> {
                let json = serde_json::to_string(scopes)
                    .map_err(|e| iaas_core::Error::Internal { operation: "encoding scopes".into(), source: Box::new(e) })?;
                let done = sqlx::query("UPDATE users SET scopes = $1 WHERE id = $2")
                    .bind(json)
                    .bind(*id.as_uuid())
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("user", id, "changing the scopes", e))?;
                if done.rows_affected() == 0 {
                    return Err(iaas_core::Error::not_found("user", id));
                }
                Ok(())
            }
        }

        impl $name {
            async fn find_user<T>(&self, filter: &str, key: T, shown: &str) -> iaas_core::Result<Option<iaas_core::User>>
            where
                T: for<'q> sqlx::Encode<'q, $db> + sqlx::Type<$db> + Send,
            {
                use sqlx::Row;
                let sql = sqlx::AssertSqlSafe(format!("SELECT {} FROM users WHERE {filter}", crate::rows::USER_COLUMNS));
                let row = sqlx::query(sql)
                    .bind(key)
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("user", shown, "reading the user", e))?;
                let Some(row) = row else { return Ok(None) };
                let decode = |row: &<$db as sqlx::Database>::Row| -> Result<crate::rows::UserRow, sqlx::Error> {
                    Ok(crate::rows::UserRow {
                        id: row.try_get("id")?,
                        username: row.try_get("username")?,
                        password_hash: row.try_get("password_hash")?,
                        scopes: row.try_get("scopes")?,
                        created_at: row.try_get("created_at")?,
                        password_changed_at: row.try_get("password_changed_at")?,
                    })
                };
                decode(&row).map_err(|e| Self::err("user", shown, "reading the user", e))?.into_user().map(Some)
            }
        }

        #[async_trait::async_trait]
        impl iaas_core::InstanceRepository for $name {
            async fn create_instance(&self, instance: &iaas_core::Instance, event: &iaas_core::InfrastructureEvent) -> iaas_core::Result<()> {
                let operation = "creating the instance";
                let mut tx = self.begin_write(operation).await?;
                self.insert_instance(&mut tx, instance, event).await?;
                tx.commit().await.map_err(|e| Self::err("instance", instance.id, operation, e))
            }

            async fn create_instance_within(
                &self,
                instance: &iaas_core::Instance,
                event: &iaas_core::InfrastructureEvent,
                quota: &iaas_core::Quota,
            ) -> iaas_core::Result<()> {
                let operation = "creating the instance within its owner's quota";
                let owner = *instance.owner.as_uuid();
                let mut tx = self.begin_write(operation).await?;
                let lock_owner: Option<&'static str> = $lock_owner;
                if let Some(lock) = lock_owner {
                    sqlx::query(lock)
                        .bind(crate::rows::owner_lock_key(owner))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| Self::err("instance", instance.owner, operation, e))?;
                }
                // Read after the lock (on PostgreSQL each statement sees what committed before
                // it), so a create that waited for another sees that one's instance.
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM instances WHERE owner = $1 AND status <> 'deleted'",
                    crate::rows::INSTANCE_COLUMNS
                ));
                let rows = sqlx::query(sql)
                    .bind(owner)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| Self::err("instance", instance.owner, operation, e))?;
                let held = rows
                    .iter()
                    .map(|row| Self::instance_row(row).map_err(|e| Self::err("instance", instance.owner, operation, e))?.into_instance())
                    .collect::<iaas_core::Result<Vec<_>>>()?;
                quota.admit(&iaas_core::Usage::of(&held), instance)?;
                self.insert_instance(&mut tx, instance, event).await?;
                tx.commit().await.map_err(|e| Self::err("instance", instance.id, operation, e))
            }

            async fn get_instance(&self, id: iaas_core::InstanceId) -> iaas_core::Result<Option<iaas_core::Instance>> {
                Self::fetch_instance(&mut *self.reader().await?, id).await
            }

            async fn list_instances_by_owner(&self, owner: iaas_core::UserId) -> iaas_core::Result<Vec<iaas_core::Instance>> {
                self.list_instances("owner = $1", Some(*owner.as_uuid()), "listing the owner's instances").await
            }

            async fn list_active_instances(&self) -> iaas_core::Result<Vec<iaas_core::Instance>> {
                self.list_instances("status <> 'deleted'", None, "listing active instances").await
            }

            async fn update_status(&self, change: iaas_core::StatusChange) -> iaas_core::Result<iaas_core::Instance> {
                // Without an expected version the change must land whatever else happened (it
                // reports the outside world), so a lost race is retried against the new row.
                for _ in 0..crate::MAX_STATUS_RETRIES {
                    if let Some(instance) = self.try_update_status(&change).await? {
                        return Ok(instance);
                    }
                    if let Some(expected) = change.expected_version {
                        return Err(iaas_core::Error::conflict(
                            "instance",
                            change.id,
                            format!("changed concurrently since version {expected}"),
                        ));
                    }
                }
                Err(iaas_core::Error::conflict(
                    "instance",
                    change.id,
                    format!("still changing concurrently after {} attempts", crate::MAX_STATUS_RETRIES),
                ))
            }

            async fn update_spec_within(&self, change: iaas_core::SpecChange, quota: &iaas_core::Quota) -> iaas_core::Result<iaas_core::Instance> {
                let operation = "changing the instance's spec within its owner's quota";
                let id = change.id;
                let mut tx = self.begin_write(operation).await?;
                let Some(mut instance) = Self::fetch_instance(&mut *tx, id).await? else {
                    return Err(iaas_core::Error::not_found("instance", id));
                };
                // The same per-owner serialization as a create, so the two cannot both fit.
                let lock_owner: Option<&'static str> = $lock_owner;
                if let Some(lock) = lock_owner {
                    sqlx::query(lock)
                        .bind(crate::rows::owner_lock_key(*instance.owner.as_uuid()))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| Self::err("instance", id, operation, e))?;
                }
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM instances WHERE owner = $1 AND status <> 'deleted' AND id <> $2",
                    crate::rows::INSTANCE_COLUMNS
                ));
                let rows = sqlx::query(sql)
                    .bind(*instance.owner.as_uuid())
                    .bind(*id.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| Self::err("instance", id, operation, e))?;
                let others = rows
                    .iter()
                    .map(|row| Self::instance_row(row).map_err(|e| Self::err("instance", id, operation, e))?.into_instance())
                    .collect::<iaas_core::Result<Vec<_>>>()?;
                if instance.status == iaas_core::InstanceStatus::Deleted {
                    return Err(iaas_core::Error::conflict(
                        "instance",
                        id,
                        format!("is deleted; its spec no longer changes (refused: {})", change.event.name()),
                    ));
                }
                let stored = instance.clone();
                instance.spec = change.spec;
                quota.admit_change(&iaas_core::Usage::of(&others), &stored, &instance)?;
                let values = crate::rows::InstanceValues::of(&instance)?;
                let expected = crate::rows::to_i64(change.expected_version, "instance version")?;
                let updated = sqlx::query(
                    "UPDATE instances SET spec = $1, version = version + 1 WHERE id = $2 AND version = $3",
                )
                .bind(values.spec)
                .bind(*id.as_uuid())
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(|e| Self::err("instance", id, operation, e))?;
                if updated.rows_affected() == 0 {
                    return Err(iaas_core::Error::conflict(
                        "instance",
                        id,
                        format!("version is {}, expected {}", instance.version, change.expected_version),
                    ));
                }
                Self::append_event(&mut tx, &change.event, self.clock.now()).await?;
                tx.commit().await.map_err(|e| Self::err("instance", id, operation, e))?;
                instance.version += 1;
                Ok(instance)
            }

            async fn record_event(&self, event: &iaas_core::InfrastructureEvent) -> iaas_core::Result<()> {
                let operation = "recording an event";
                let id = event.instance_id;
                let mut tx = self.begin_write(operation).await?;
                // An update that changes nothing, for the row lock every write to an instance
                // takes first (see the module docs): the event's `seq` comes after those of the
                // writers before it, and the status read is the latest committed, so a delete
                // cannot commit between the check and the append. Version and `updated_at` stay.
                let status: Option<String> =
                    sqlx::query_scalar("UPDATE instances SET status = status WHERE id = $1 RETURNING status")
                        .bind(*id.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| Self::err("instance", id, operation, e))?;
                let Some(status) = status else {
                    return Err(iaas_core::Error::not_found("instance", id));
                };
                if status == iaas_core::InstanceStatus::Deleted.as_str() {
                    return Err(iaas_core::Error::conflict(
                        "instance",
                        id,
                        format!("is deleted; no event after its `deleted` one (refused: {})", event.name()),
                    ));
                }
                Self::append_event(&mut tx, event, self.clock.now()).await?;
                tx.commit().await.map_err(|e| Self::err("instance", id, operation, e))
            }
        }

        #[async_trait::async_trait]
        impl iaas_core::QuotaRepository for $name {
            async fn quota_override(&self, user: iaas_core::UserId) -> iaas_core::Result<Option<iaas_core::QuotaOverride>> {
                let limits: Option<String> = sqlx::query_scalar("SELECT limits FROM quota_overrides WHERE user_id = $1")
                    .bind(*user.as_uuid())
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("quota", user, "reading the quota override", e))?;
                limits.map(|limits| crate::rows::quota_from_json(*user.as_uuid(), &limits)).transpose()
            }

            async fn set_quota_override(
                &self,
                user: iaas_core::UserId,
                overrides: &iaas_core::QuotaOverride,
                at: chrono::DateTime<chrono::Utc>,
            ) -> iaas_core::Result<()> {
                let operation = "setting the quota override";
                let done = if overrides.is_empty() {
                    sqlx::query("DELETE FROM quota_overrides WHERE user_id = $1")
                        .bind(*user.as_uuid())
                        .execute(&self.writer)
                        .await
                } else {
                    sqlx::query(
                        "INSERT INTO quota_overrides (user_id, limits, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET limits = excluded.limits, updated_at = excluded.updated_at",
                    )
                    .bind(*user.as_uuid())
                    .bind(crate::rows::quota_json(overrides)?)
                    .bind(at)
                    .execute(&self.writer)
                    .await
                };
                done.map_err(|e| Self::err("quota", user, operation, e))?;
                Ok(())
            }
        }

        crate::jobs::sql_jobs!($name, $db);
        crate::leases::sql_leases!($name, $db);

        #[async_trait::async_trait]
        impl iaas_core::Outbox for $name {
            async fn claim(&self, relay: &str, limit: u32, lease: std::time::Duration) -> iaas_core::Result<Vec<iaas_core::OutboxEntry>> {
                use sqlx::Row;
                let operation = "claiming outbox entries";
                let now = crate::rows::micros(self.clock.now());
                let until = now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX));
                let mut tx = self.begin_write(operation).await?;
                let mut candidates: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT o.instance_id FROM outbox o \
                     WHERE o.sent_us IS NULL AND o.parked_us IS NULL AND NOT EXISTS ( \
                         SELECT 1 FROM outbox_claims c \
                         WHERE c.instance_id = o.instance_id AND c.relay <> $1 AND c.claimed_until_us >= $2) \
                     GROUP BY o.instance_id ORDER BY MIN(o.seq) LIMIT $3",
                )
                .bind(relay)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| Self::err("outbox", relay, operation, e))?;
                // One lock order for every relay, so two claimers never deadlock.
                candidates.sort_unstable();
                for instance in candidates {
                    sqlx::query(
                        "INSERT INTO outbox_claims (instance_id, relay, claimed_until_us) VALUES ($1, $2, $3) \
                         ON CONFLICT (instance_id) DO UPDATE \
                         SET relay = excluded.relay, claimed_until_us = excluded.claimed_until_us \
                         WHERE outbox_claims.relay = excluded.relay OR outbox_claims.claimed_until_us < $4",
                    )
                    .bind(instance)
                    .bind(relay)
                    .bind(until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Self::err("outbox", relay, operation, e))?;
                }
                let rows = sqlx::query(
                    "SELECT o.seq, o.payload, o.created_us FROM outbox o \
                     JOIN outbox_claims c ON c.instance_id = o.instance_id \
                     WHERE o.sent_us IS NULL AND o.parked_us IS NULL \
                       AND c.relay = $1 AND c.claimed_until_us >= $2 \
                     ORDER BY o.seq LIMIT $3",
                )
                .bind(relay)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| Self::err("outbox", relay, operation, e))?;
                tx.commit().await.map_err(|e| Self::err("outbox", relay, operation, e))?;
                rows.iter()
                    .map(|row| {
                        let seq: i64 = row.try_get("seq").map_err(|e| Self::err("outbox", relay, operation, e))?;
                        let payload: String = row.try_get("payload").map_err(|e| Self::err("outbox", seq, operation, e))?;
                        let created: i64 = row.try_get("created_us").map_err(|e| Self::err("outbox", seq, operation, e))?;
                        crate::rows::outbox_entry(seq, &payload, created)
                    })
                    .collect()
            }

            async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> iaas_core::Result<()> {
                let operation = "marking outbox entries sent";
                let now = crate::rows::micros(self.clock.now());
                let mut tx = self.begin_write(operation).await?;
                for chunk in seqs.chunks(crate::MAX_BINDS_PER_STATEMENT) {
                    let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE outbox SET sent_us = ");
                    update.push_bind(now).push(" WHERE sent_us IS NULL AND seq IN (");
                    let mut list = update.separated(", ");
                    for seq in chunk {
                        list.push_bind(crate::rows::to_i64(*seq, "outbox seq")?);
                    }
                    update.push(")");
                    update.build().execute(&mut *tx).await.map_err(|e| Self::err("outbox", relay, operation, e))?;
                }
                sqlx::query(
                    "DELETE FROM outbox_claims WHERE relay = $1 AND NOT EXISTS ( \
                         SELECT 1 FROM outbox o WHERE o.instance_id = outbox_claims.instance_id \
                         AND o.sent_us IS NULL AND o.parked_us IS NULL)",
                )
                .bind(relay)
                .execute(&mut *tx)
                .await
                .map_err(|e| Self::err("outbox", relay, operation, e))?;
                tx.commit().await.map_err(|e| Self::err("outbox", relay, operation, e))
            }

            async fn release(&self, relay: &str) -> iaas_core::Result<()> {
                sqlx::query("DELETE FROM outbox_claims WHERE relay = $1")
                    .bind(relay)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("outbox", relay, "releasing outbox claims", e))?;
                Ok(())
            }

            async fn stats(&self) -> iaas_core::Result<iaas_core::OutboxStats> {
                let (pending, oldest, parked): (i64, Option<i64>, i64) = sqlx::query_as(
                    "SELECT \
                         COUNT(*) FILTER (WHERE parked_us IS NULL), \
                         MIN(created_us) FILTER (WHERE parked_us IS NULL), \
                         COUNT(*) FILTER (WHERE parked_us IS NOT NULL) \
                     FROM outbox WHERE sent_us IS NULL",
                )
                .fetch_one(&mut *self.reader().await?)
                .await
                .map_err(|e| Self::err("outbox", "", "reading outbox stats", e))?;
                Ok(iaas_core::OutboxStats {
                    pending: u64::try_from(pending).unwrap_or_default(),
                    parked: u64::try_from(parked).unwrap_or_default(),
                    oldest_pending_at: oldest.map(crate::rows::from_micros),
                })
            }

            async fn purge_sent(&self, sent_before: chrono::DateTime<chrono::Utc>) -> iaas_core::Result<u64> {
                let done = sqlx::query("DELETE FROM outbox WHERE sent_us IS NOT NULL AND sent_us < $1")
                    .bind(crate::rows::micros(sent_before))
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("outbox", "", "purging sent outbox entries", e))?;
                Ok(done.rows_affected())
            }

            async fn record_failure(&self, seq: u64, error: &str) -> iaas_core::Result<u32> {
                let operation = "counting a failed publish";
                let attempts: Option<i32> = sqlx::query_scalar(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1 \
                     WHERE seq = $2 AND sent_us IS NULL AND parked_us IS NULL RETURNING attempts",
                )
                .bind(error)
                .bind(crate::rows::to_i64(seq, "outbox seq")?)
                .fetch_optional(&self.writer)
                .await
                .map_err(|e| Self::err("outbox", seq, operation, e))?;
                Ok(attempts.and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
            }

            async fn park(&self, seq: u64, error: &str) -> iaas_core::Result<()> {
                sqlx::query(
                    "UPDATE outbox SET parked_us = $1, last_error = $2 \
                     WHERE seq = $3 AND sent_us IS NULL AND parked_us IS NULL",
                )
                .bind(crate::rows::micros(self.clock.now()))
                .bind(error)
                .bind(crate::rows::to_i64(seq, "outbox seq")?)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("outbox", seq, "parking an outbox entry", e))?;
                Ok(())
            }

            async fn parked(&self, limit: u32) -> iaas_core::Result<Vec<iaas_core::ParkedEntry>> {
                use sqlx::Row;
                let operation = "listing parked outbox entries";
                let rows = sqlx::query(
                    "SELECT seq, payload, created_us, attempts, last_error, parked_us FROM outbox \
                     WHERE parked_us IS NOT NULL AND sent_us IS NULL ORDER BY seq LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader().await?)
                .await
                .map_err(|e| Self::err("outbox", "", operation, e))?;
                rows.iter()
                    .map(|row| {
                        let get_err = |e| Self::err("outbox", "", operation, e);
                        let seq: i64 = row.try_get("seq").map_err(get_err)?;
                        let payload: String = row.try_get("payload").map_err(get_err)?;
                        let created: i64 = row.try_get("created_us").map_err(get_err)?;
                        let attempts: i32 = row.try_get("attempts").map_err(get_err)?;
                        let error: Option<String> = row.try_get("last_error").map_err(get_err)?;
                        let parked: i64 = row.try_get("parked_us").map_err(get_err)?;
                        Ok(iaas_core::ParkedEntry {
                            entry: crate::rows::outbox_entry(seq, &payload, created)?,
                            attempts: u32::try_from(attempts).unwrap_or(0),
                            error: error.unwrap_or_default(),
                            parked_at: crate::rows::from_micros(parked),
                        })
                    })
                    .collect()
            }

            async fn retry_parked(&self, seq: u64) -> iaas_core::Result<bool> {
                let done = sqlx::query(
                    "UPDATE outbox SET parked_us = NULL, attempts = 0 \
                     WHERE seq = $1 AND sent_us IS NULL AND parked_us IS NOT NULL",
                )
                .bind(crate::rows::to_i64(seq, "outbox seq")?)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("outbox", seq, "retrying a parked outbox entry", e))?;
                Ok(done.rows_affected() == 1)
            }

            async fn drop_parked(&self, seq: u64) -> iaas_core::Result<bool> {
                let done = sqlx::query(
                    "DELETE FROM outbox WHERE seq = $1 AND sent_us IS NULL AND parked_us IS NOT NULL",
                )
                .bind(crate::rows::to_i64(seq, "outbox seq")?)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("outbox", seq, "dropping a parked outbox entry", e))?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use sql_store;
