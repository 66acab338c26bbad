//! [`JobQueue`](iaas_core::JobQueue) on SQL, written once for both backends like the rest of
//! the store (see [`crate::sql`]).
//!
//! A claim is one `UPDATE ... RETURNING` whose condition (due, lease free or run out) is written
//! on the outer statement as well as in the subquery that picks the rows: on PostgreSQL a
//! concurrent claimer that picked the same row waits for the first one's row lock and then
//! re-checks the condition against the row as committed, finds the lease taken and skips it; on
//! SQLite writes are serialized anyway. The attempt count is the fence: renewing, completing or
//! retrying names the claim's attempt and holder, so a stale claim changes nothing.

/// The job columns a claim returns.
pub(crate) const JOB_COLUMNS: &str =
    "id, instance_id, action, from_status, attempts, last_error, created_us";

/// How long a job row a process cannot read waits before it is claimed again (a minute).
pub(crate) const UNREADABLE_JOB_WAIT_US: i64 = 60_000_000;

/// The condition that a claim still holds its job: `$1`..`$4` are its instance, holder,
/// attempt and job id.
pub(crate) const FENCE: &str = "instance_id = $1 AND holder = $2 AND attempts = $3 AND id = $4";

/// Generates the job queue of a store type made by [`crate::sql::sql_store`].
macro_rules! sql_jobs {
    ($name:ident, $db:ty) => {
        impl $name {
            /// What a status change of `id` from `from` to `to` (with `event`) does to its job,
            /// in the change's transaction: a job of the status left is removed (only a status
            /// that promises engine work has one), the one `to` asks for is written, and the
            /// kept secrets go when the provisioning ends ([`iaas_core::forgets_secrets`]), the
            /// platform's when the instance is deleted.
            async fn follow_change(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: iaas_core::InstanceId,
                from: iaas_core::InstanceStatus,
                to: iaas_core::InstanceStatus,
                event: &iaas_core::InfrastructureEvent,
                now: chrono::DateTime<chrono::Utc>,
            ) -> iaas_core::Result<()> {
                let operation = "writing the instance's job";
                if from != to && (from.is_transitional() || from == iaas_core::InstanceStatus::Provisioning) {
                    sqlx::query("DELETE FROM jobs WHERE instance_id = $1")
                        .bind(*id.as_uuid())
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| Self::err("job", id, operation, e))?;
                }
                if iaas_core::forgets_secrets(from, to) {
                    sqlx::query("DELETE FROM instance_secrets WHERE instance_id = $1")
                        .bind(*id.as_uuid())
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| Self::err("secrets", id, "forgetting the secrets of a provisioned instance", e))?;
                }
                if to == iaas_core::InstanceStatus::Deleted {
                    sqlx::query("DELETE FROM platform_secrets WHERE instance_id = $1")
                        .bind(*id.as_uuid())
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| Self::err("secrets", id, "forgetting the platform's secrets of a deleted instance", e))?;
                }
                if let Some(action) = iaas_core::JobAction::for_change(to, event) {
                    let now = crate::rows::micros(now);
                    sqlx::query(
                        "INSERT INTO jobs (id, instance_id, action, from_status, created_us, due_us) VALUES ($5, $1, $2, $3, $4, $4)",
                    )
                    .bind(*id.as_uuid())
                    .bind(action.as_str())
                    .bind(from.as_str())
                    .bind(now)
                    .bind(uuid::Uuid::now_v7().to_string())
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| Self::err("job", id, operation, e))?;
                }
                Ok(())
            }

            fn job_row(row: &<$db as sqlx::Database>::Row) -> iaas_core::Result<iaas_core::Job> {
                use sqlx::Row;
                let read = |e| Self::err("job", "", "reading a job", e);
                let id: uuid::Uuid = row.try_get("instance_id").map_err(read)?;
                let action: String = row.try_get("action").map_err(read)?;
                let from: String = row.try_get("from_status").map_err(read)?;
                let attempts: i64 = row.try_get("attempts").map_err(read)?;
                crate::rows::job(
                    row.try_get("id").map_err(read)?,
                    id,
                    &action,
                    &from,
                    attempts,
                    row.try_get("last_error").map_err(read)?,
                    row.try_get("created_us").map_err(read)?,
                )
            }

            /// Gives back the claim of a job row [`Self::job_row`] could not read (`error`).
            async fn hand_back(
                &self,
                row: &<$db as sqlx::Database>::Row,
                holder: &str,
                error: &iaas_core::Error,
            ) -> iaas_core::Result<()> {
                use sqlx::Row;
                let error = iaas_core::error_chain(error);
                let Ok(id) = row.try_get::<uuid::Uuid, _>("instance_id") else {
                    tracing::error!(%error, "a job row cannot be read, nor its instance; skipped");
                    return Ok(());
                };
                tracing::error!(
                    instance = %id,
                    %error,
                    "a job this version cannot read was claimed; handing it back untouched"
                );
                // Due again a minute on: a process that cannot read it would otherwise claim it
                // first at every poll (claims go by due time) and never reach the others.
                let due = crate::rows::micros(self.clock.now()).saturating_add(crate::jobs::UNREADABLE_JOB_WAIT_US);
                sqlx::query(
                    "UPDATE jobs SET holder = NULL, leased_until_us = NULL, attempts = attempts - 1, due_us = $3 \
                     WHERE instance_id = $1 AND holder = $2",
                )
                .bind(id)
                .bind(holder)
                .bind(due)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("job", id, "handing back a job it cannot read", e))?;
                Ok(())
            }

            /// Runs `sql`, whose `$1`..`$4` are the claim's fence (instance, holder, attempt,
            /// job id, as [`FENCE`](crate::jobs::FENCE) matches them) and `$5`, `$6` are
            /// `extra`; says whether the claim still held.
            async fn fenced(
                &self,
                sql: String,
                job: &iaas_core::Job,
                holder: &str,
                extra: (Option<i64>, Option<&str>),
                operation: &str,
            ) -> iaas_core::Result<bool> {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(*job.instance_id.as_uuid())
                    .bind(holder.to_owned())
                    .bind(i64::from(job.attempts))
                    .bind(job.id.clone());
                if let Some(number) = extra.0 {
                    query = query.bind(number);
                }
                if let Some(text) = extra.1 {
                    query = query.bind(text.to_owned());
                }
                let done = query
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("job", job.instance_id, operation, e))?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl iaas_core::JobQueue for $name {
            async fn claim_due_jobs(&self, holder: &str, lease: std::time::Duration, limit: u32) -> iaas_core::Result<Vec<iaas_core::Job>> {
                let operation = "claiming due jobs";
                let now = crate::rows::micros(self.clock.now());
                let until = now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX));
                let sql = sqlx::AssertSqlSafe(format!(
                    "UPDATE jobs SET holder = $1, leased_until_us = $2, attempts = attempts + 1 \
                     WHERE instance_id IN ( \
                         SELECT instance_id FROM jobs \
                         WHERE due_us <= $3 AND (leased_until_us IS NULL OR leased_until_us < $3) \
                         ORDER BY due_us, created_us LIMIT $4) \
                       AND due_us <= $3 AND (leased_until_us IS NULL OR leased_until_us < $3) \
                     RETURNING {}",
                    crate::jobs::JOB_COLUMNS
                ));
                let rows = sqlx::query(sql)
                    .bind(holder)
                    .bind(until)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.writer)
                    .await
                    .map_err(|e| Self::err("job", holder, operation, e))?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in &rows {
                    match Self::job_row(row) {
                        Ok(job) => jobs.push(job),
                        // A job this process cannot read (written by a newer version during a
                        // rolling upgrade, say) must not hold up the others, nor be spent: it
                        // is handed back as it was, for a process that knows it.
                        Err(error) => {
                            if let Err(failed) = self.hand_back(row, holder, &error).await {
                                // Its lease runs out instead; the jobs read are still this claim's.
                                tracing::warn!(error = %iaas_core::error_chain(&failed), "handing back a job row it cannot read");
                            }
                        }
                    }
                }
                jobs.sort_by_key(|job| job.created_at);
                Ok(jobs)
            }

            async fn renew_job(&self, job: &iaas_core::Job, holder: &str, lease: std::time::Duration) -> iaas_core::Result<bool> {
                let now = crate::rows::micros(self.clock.now());
                let until = now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX));
                self.fenced(
                    format!("UPDATE jobs SET leased_until_us = $5 WHERE {}", crate::jobs::FENCE),
                    job,
                    holder,
                    (Some(until), None),
                    "renewing a job's lease",
                )
                .await
            }

            async fn complete_job(&self, job: &iaas_core::Job, holder: &str) -> iaas_core::Result<bool> {
                self.fenced(
                    format!("DELETE FROM jobs WHERE {}", crate::jobs::FENCE),
                    job,
                    holder,
                    (None, None),
                    "completing a job",
                )
                .await
            }

            async fn retry_job(&self, job: &iaas_core::Job, holder: &str, after: std::time::Duration, error: &str) -> iaas_core::Result<bool> {
                let now = crate::rows::micros(self.clock.now());
                let due = now.saturating_add(i64::try_from(after.as_micros()).unwrap_or(i64::MAX));
                self.fenced(
                    format!(
                        "UPDATE jobs SET due_us = $5, last_error = $6, holder = NULL, leased_until_us = NULL WHERE {}",
                        crate::jobs::FENCE
                    ),
                    job,
                    holder,
                    (Some(due), Some(error)),
                    "giving a job back for a retry",
                )
                .await
            }

            async fn release_job(&self, job: &iaas_core::Job, holder: &str) -> iaas_core::Result<bool> {
                let now = crate::rows::micros(self.clock.now());
                self.fenced(
                    format!(
                        "UPDATE jobs SET due_us = $5, holder = NULL, leased_until_us = NULL, attempts = attempts - 1, last_error = $6 WHERE {}",
                        crate::jobs::FENCE
                    ),
                    job,
                    holder,
                    (Some(now), Some(iaas_core::RELEASED_UNFINISHED)),
                    "giving a job back unspent",
                )
                .await
            }

            async fn job_of(&self, instance: iaas_core::InstanceId) -> iaas_core::Result<Option<iaas_core::Job>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {} FROM jobs WHERE instance_id = $1", crate::jobs::JOB_COLUMNS));
                let row = sqlx::query(sql)
                    .bind(*instance.as_uuid())
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("job", instance, "reading a job", e))?;
                row.as_ref().map(Self::job_row).transpose()
            }

            async fn job_stats(&self) -> iaas_core::Result<iaas_core::JobStats> {
                use sqlx::Row;
                let now = crate::rows::micros(self.clock.now());
                let row = sqlx::query(
                    "SELECT COUNT(*) AS pending, \
                            COUNT(CASE WHEN leased_until_us >= $1 THEN 1 END) AS leased, \
                            COUNT(CASE WHEN attempts > 0 AND (leased_until_us IS NULL OR leased_until_us < $1) THEN 1 END) AS retried \
                     FROM jobs",
                )
                .bind(now)
                .fetch_one(&mut *self.reader().await?)
                .await
                .map_err(|e| Self::err("job", "", "counting jobs", e))?;
                let count = |column: &str| -> iaas_core::Result<u64> {
                    let n: i64 = row.try_get(column).map_err(|e| Self::err("job", "", "counting jobs", e))?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                Ok(iaas_core::JobStats { pending: count("pending")?, leased: count("leased")?, retried: count("retried")? })
            }

            async fn keep_secrets(&self, instance: iaas_core::InstanceId, sealed: &str) -> iaas_core::Result<()> {
                sqlx::query(
                    "INSERT INTO instance_secrets (instance_id, sealed) VALUES ($1, $2) \
                     ON CONFLICT (instance_id) DO UPDATE SET sealed = excluded.sealed",
                )
                .bind(*instance.as_uuid())
                .bind(sealed)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("secrets", instance, "keeping the instance's secrets", e))?;
                Ok(())
            }

            async fn kept_secrets(&self, instance: iaas_core::InstanceId) -> iaas_core::Result<Option<String>> {
                sqlx::query_scalar("SELECT sealed FROM instance_secrets WHERE instance_id = $1")
                    .bind(*instance.as_uuid())
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("secrets", instance, "reading the instance's secrets", e))
            }

            async fn forget_secrets(&self, instance: iaas_core::InstanceId) -> iaas_core::Result<()> {
                for table in ["instance_secrets", "platform_secrets"] {
                    let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE instance_id = $1"));
                    sqlx::query(sql)
                        .bind(*instance.as_uuid())
                        .execute(&self.writer)
                        .await
                        .map_err(|e| Self::err("secrets", instance, "forgetting the instance's secrets", e))?;
                }
                Ok(())
            }

            async fn keep_platform_secrets(&self, instance: iaas_core::InstanceId, sealed: &str) -> iaas_core::Result<()> {
                sqlx::query(
                    "INSERT INTO platform_secrets (instance_id, sealed) VALUES ($1, $2) \
                     ON CONFLICT (instance_id) DO UPDATE SET sealed = excluded.sealed",
                )
                .bind(*instance.as_uuid())
                .bind(sealed)
                .execute(&self.writer)
                .await
                .map_err(|e| Self::err("secrets", instance, "keeping the platform's secrets of the instance", e))?;
                Ok(())
            }

            async fn platform_secrets(&self, instance: iaas_core::InstanceId) -> iaas_core::Result<Option<String>> {
                sqlx::query_scalar("SELECT sealed FROM platform_secrets WHERE instance_id = $1")
                    .bind(*instance.as_uuid())
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("secrets", instance, "reading the platform's secrets of the instance", e))
            }
        }
    };
}

pub(crate) use sql_jobs;
