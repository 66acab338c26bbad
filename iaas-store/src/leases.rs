//! [`Leases`](iaas_core::Leases) on SQL, for both backends (see [`crate::sql`]).
//!
//! Acquiring is one upsert whose update applies only when the row is the acquirer's already or
//! has expired, so of two processes racing for a free lease exactly one gets a row back; the
//! term grows only when the holder changes.

/// Generates the leases of a store type made by [`crate::sql::sql_store`].
macro_rules! sql_leases {
    ($name:ident, $db:ty) => {
        #[async_trait::async_trait]
        impl iaas_core::Leases for $name {
            async fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> iaas_core::Result<Option<u64>> {
                let now = crate::rows::micros(self.clock.now());
                let until = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
                let term: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO leases (name, holder, term, expires_us) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (name) DO UPDATE SET \
                         term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END, \
                         holder = excluded.holder, \
                         expires_us = excluded.expires_us \
                     WHERE leases.holder = excluded.holder OR leases.expires_us < $4 \
                     RETURNING term",
                )
                .bind(name)
                .bind(holder)
                .bind(until)
                .bind(now)
                .fetch_optional(&self.writer)
                .await
                .map_err(|e| Self::err("lease", name, "acquiring the lease", e))?;
                Ok(term.map(|term| u64::try_from(term).unwrap_or(0)))
            }

            async fn release_lease(&self, name: &str, holder: &str) -> iaas_core::Result<()> {
                let now = crate::rows::micros(self.clock.now());
                sqlx::query("UPDATE leases SET expires_us = $1 WHERE name = $2 AND holder = $3")
                    .bind(now - 1)
                    .bind(name)
                    .bind(holder)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| Self::err("lease", name, "releasing the lease", e))?;
                Ok(())
            }

            async fn lease_holder(&self, name: &str) -> iaas_core::Result<Option<iaas_core::LeaseHolder>> {
                use sqlx::Row;
                let now = crate::rows::micros(self.clock.now());
                let row = sqlx::query("SELECT holder, term, expires_us FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *self.reader().await?)
                    .await
                    .map_err(|e| Self::err("lease", name, "reading the lease", e))?;
                let Some(row) = row else { return Ok(None) };
                let read = |e| Self::err("lease", name, "reading the lease", e);
                let term: i64 = row.try_get("term").map_err(read)?;
                let expires: i64 = row.try_get("expires_us").map_err(read)?;
                Ok(Some(iaas_core::LeaseHolder {
                    holder: row.try_get("holder").map_err(read)?,
                    term: u64::try_from(term).unwrap_or(0),
                    expired: expires < now,
                }))
            }
        }
    };
}

pub(crate) use sql_leases;
