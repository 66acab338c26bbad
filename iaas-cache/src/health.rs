//! Redis operating targets, read from `INFO`: memory use < 70 % of `maxmemory`,
//! eviction rate < 5 % (evicted keys per second), keyspace hit ratio > 80 %.
//!
//! [`redis_health`] takes one sample; alert rules compare [`RedisHealth::memory_ratio`] and
//! [`RedisHealth::keyspace_hit_ratio`] to the targets, and two samples give
//! [`RedisHealth::evictions_per_second`].

use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::error::{CacheError, Result};

/// One reading of Redis's `INFO memory` and `INFO stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisHealth {
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes (0 = no limit).
    pub maxmemory: u64,
    /// `evicted_keys` since the server started.
    pub evicted_keys: u64,
    /// `keyspace_hits` since the server started.
    pub keyspace_hits: u64,
    /// `keyspace_misses` since the server started.
    pub keyspace_misses: u64,
}

impl RedisHealth {
    /// Parses the text of `INFO` (any sections; the fields above are picked out). A field
    /// that is missing reads 0; one that is not a number is an error naming it.
    pub fn from_info(info: &str) -> Result<Self, String> {
        let mut health = RedisHealth::default();
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else { continue };
            let slot = match name {
                "used_memory" => &mut health.used_memory,
                "maxmemory" => &mut health.maxmemory,
                "evicted_keys" => &mut health.evicted_keys,
                "keyspace_hits" => &mut health.keyspace_hits,
                "keyspace_misses" => &mut health.keyspace_misses,
                _ => continue,
            };
            *slot = value.parse().map_err(|err| format!("INFO field {name}={value:?}: {err}"))?;
        }
        Ok(health)
    }

    /// `used_memory / maxmemory`; `None` without a limit (target: < 0.7).
    pub fn memory_ratio(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss, reason = "a ratio")]
        (self.maxmemory > 0).then(|| self.used_memory as f64 / self.maxmemory as f64)
    }

    /// `hits / (hits + misses)` over the server's life; `None` before the first lookup (target:
    /// > 0.8).
    pub fn keyspace_hit_ratio(&self) -> Option<f64> {
        let lookups = self.keyspace_hits + self.keyspace_misses;
        #[allow(clippy::cast_precision_loss, reason = "a ratio")]
        (lookups > 0).then(|| self.keyspace_hits as f64 / lookups as f64)
    }

    /// Keys evicted per second between `earlier` and this reading, taken `elapsed` apart.
    pub fn evictions_per_second(&self, earlier: &RedisHealth, elapsed: Duration) -> f64 {
        let evicted = self.evicted_keys.saturating_sub(earlier.evicted_keys);
        let secs = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate")]
        if secs > 0.0 { evicted as f64 / secs } else { 0.0 }
    }
}

/// Reads `INFO memory` and `INFO stats` from the server behind `conn` and publishes them as
/// gauges (`iaas_cache_redis_used_memory_bytes`, `iaas_cache_redis_maxmemory_bytes`,
/// `iaas_cache_redis_evicted_keys`, `iaas_cache_redis_keyspace_hit_ratio`).
pub async fn redis_health<C: ConnectionLike + Send>(conn: &mut C) -> Result<RedisHealth> {
    let info: String =
        redis::cmd("INFO").arg("memory").arg("stats").query_async(conn).await.map_err(|err| {
            CacheError::Backend {
                backend: "redis",
                operation: "INFO memory stats",
                key: String::new(),
                source: Box::new(err),
            }
        })?;
    let health = RedisHealth::from_info(&info).map_err(|reason| CacheError::Backend {
        backend: "redis",
        operation: "parsing INFO",
        key: String::new(),
        source: reason.into(),
    })?;
    #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
    {
        metrics::gauge!("iaas_cache_redis_used_memory_bytes").set(health.used_memory as f64);
        metrics::gauge!("iaas_cache_redis_maxmemory_bytes").set(health.maxmemory as f64);
        metrics::gauge!("iaas_cache_redis_evicted_keys").set(health.evicted_keys as f64);
    }
    if let Some(ratio) = health.keyspace_hit_ratio() {
        metrics::gauge!("iaas_cache_redis_keyspace_hit_ratio").set(ratio);
    }
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_text_is_parsed() {
        let info = "# Memory\r\nused_memory:700\r\nused_memory_human:700B\r\nmaxmemory:1000\r\n\
                    # Stats\r\nevicted_keys:12\r\nkeyspace_hits:80\r\nkeyspace_misses:20\r\n";
        let health = RedisHealth::from_info(info).unwrap();
        assert_eq!(health.memory_ratio(), Some(0.7));
        assert_eq!(health.keyspace_hit_ratio(), Some(0.8));
        let later = RedisHealth { evicted_keys: 32, ..health };
        assert!((later.evictions_per_second(&health, Duration::from_secs(10)) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_garbled_field_is_named() {
        let err = RedisHealth::from_info("maxmemory:lots\r\n").unwrap_err();
        assert!(err.contains("maxmemory"), "{err}");
        assert_eq!(RedisHealth::from_info("").unwrap().memory_ratio(), None);
    }
}
