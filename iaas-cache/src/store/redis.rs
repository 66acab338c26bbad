//! The Redis backend: one multiplexed, auto-reconnecting connection shared by every caller.
//!
//! A [`ConnectionManager`] pipelines concurrent commands over one socket (no pool to size, no
//! per-call connection setup) and reconnects in the background after Redis restarts, so a cache
//! that lost Redis is used again without a restart of the process. Every call is bounded by
//! [`RedisStoreConfig::timeout`] (default 50 ms: a cache slower than that is worse than going to
//! the source), batches are split into MGET / DEL commands of at most
//! `MAX_KEYS_PER_COMMAND` keys sent in one pipeline, and the
//! conditional fill is a Lua script, atomic on the server.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::CacheStore;
use super::deadline::Ticker;
use crate::error::{CacheError, Result};

const BACKEND: &str = "redis";

/// Keys per command when a batch is split (MGET / DEL); keeps one command from blocking Redis.
const MAX_KEYS_PER_COMMAND: usize = 512;

/// Writes `ARGV[1]` under `KEYS[1]` for `ARGV[2]` ms only if the generation under `KEYS[2]` is
/// still `ARGV[3]` (`""` standing for "no generation yet"). Lua runs atomically in Redis, so no
/// invalidation can slip between the check and the write.
const SET_IF_GENERATION: &str = r"
local current = redis.call('GET', KEYS[2])
if current == false then current = '' end
if current ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Settings of a [`RedisStore`]. `Debug` leaves the URL's password out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStoreConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Bound on every call, reconnect waits included (default 50 ms).
    pub timeout: Duration,
    /// Bound on establishing a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts while Redis is down (default 1 s).
    pub max_reconnect_delay: Duration,
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &iaas_core::redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .finish()
    }
}

impl RedisStoreConfig {
    /// The documented defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(1),
        }
    }

    /// The same settings with another per-call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Redis [`CacheStore`].
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    /// Started on the first call (inside the runtime), shared by every clone.
    ticker: Arc<OnceLock<Arc<Ticker>>>,
    set_if_generation: Script,
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects now; fails with [`CacheError::Connect`] when Redis cannot be reached.
    pub async fn connect(config: &RedisStoreConfig) -> Result<Self> {
        let store = Self::lazy(config)?;
        let mut conn = store.conn.clone();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(config.connect_timeout, ping).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(err)) => Err(store.connect_error(Box::new(err))),
            Err(elapsed) => Err(store.connect_error(Box::new(elapsed))),
        }
    }

    /// Builds the store without connecting: the first call connects, so a process can start
    /// while Redis is down and use it once it is up. Fails only on a malformed URL.
    pub fn lazy(config: &RedisStoreConfig) -> Result<Self> {
        let url = iaas_core::redact_url(&config.url);
        let connect_error = |err: RedisError| CacheError::Connect {
            backend: BACKEND,
            url: url.clone(),
            source: Box::new(err),
        };
        let client = Client::open(config.url.as_str()).map_err(connect_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            // The per-call timeout is applied around each call (it also bounds waiting for a
            // reconnection, which the manager's response timeout does not); a second timer
            // per request would only cost time on the hit path.
            .set_response_timeout(None)
            .set_max_delay(config.max_reconnect_delay);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(connect_error)?;
        Ok(Self {
            conn,
            timeout: config.timeout,
            ticker: Arc::default(),
            set_if_generation: Script::new(SET_IF_GENERATION),
            url,
        })
    }

    /// A clone of the shared connection, for commands outside the cache's (`INFO`, see
    /// [`redis_health`](crate::redis_health)).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn connect_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> CacheError {
        CacheError::Connect { backend: BACKEND, url: self.url.clone(), source }
    }

    /// Runs one call under the per-call timeout, naming the operation and key on failure.
    async fn call<T, F>(
        &self,
        operation: &'static str,
        key: impl Fn() -> String,
        call: F,
    ) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let ticker = self.ticker.get_or_init(|| Ticker::start(self.timeout));
        let started = ticker.epoch();
        let bounded = async {
            tokio::select! {
                biased;
                result = call => Ok(result),
                () = ticker.expired(started) => Err(()),
            }
        };
        match bounded.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if err.is_timeout() => Err(self.timeout_error(operation, key())),
            Ok(Err(err)) => Err(CacheError::Backend {
                backend: BACKEND,
                operation,
                key: key(),
                source: Box::new(err),
            }),
            Err(_elapsed) => Err(self.timeout_error(operation, key())),
        }
    }

    fn timeout_error(&self, operation: &'static str, key: String) -> CacheError {
        CacheError::Timeout {
            backend: BACKEND,
            operation,
            key,
            timeout_ms: self.timeout.as_millis(),
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    // Redis refuses a zero expiry; the shortest TTL it stores is 1 ms.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn ttl_ms_i64(ttl: Duration) -> i64 {
    i64::try_from(ttl_ms(ttl)).unwrap_or(i64::MAX)
}

#[async_trait]
impl CacheStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        self.call("GET", || key.to_owned(), redis::cmd("GET").arg(key).query_async(&mut conn)).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(MAX_KEYS_PER_COMMAND) {
            pipe.cmd("MGET").arg(chunk);
        }
        let mut conn = self.conn.clone();
        let batches: Vec<Vec<Option<Vec<u8>>>> =
            self.call("MGET", || first_key(keys), pipe.query_async(&mut conn)).await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms(ttl));
        self.call("SET", || key.to_owned(), cmd.query_async(&mut conn)).await
    }

    async fn get_with_generation(
        &self,
        key: &str,
        generation_key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<u64>)> {
        let mut conn = self.conn.clone();
        let (value, raw): (Option<Vec<u8>>, Option<String>) = self
            .call(
                "MGET value and generation",
                || key.to_owned(),
                redis::cmd("MGET").arg(key).arg(generation_key).query_async(&mut conn),
            )
            .await?;
        let generation = raw
            .map(|raw| {
                raw.parse::<u64>().map_err(|err| CacheError::Backend {
                    backend: BACKEND,
                    operation: "parsing generation",
                    key: generation_key.to_owned(),
                    source: Box::new(err),
                })
            })
            .transpose()?;
        Ok((value, generation))
    }

    async fn set_if_generation(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        generation_key: &str,
        expected: Option<u64>,
    ) -> Result<bool> {
        let expected = expected.map(|g| g.to_string()).unwrap_or_default();
        let mut invocation = self.set_if_generation.key(key);
        invocation.key(generation_key).arg(value).arg(ttl_ms(ttl)).arg(expected);
        let mut conn = self.conn.clone();
        let written: i64 = self
            .call("conditional SET", || key.to_owned(), invocation.invoke_async(&mut conn))
            .await?;
        Ok(written == 1)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(MAX_KEYS_PER_COMMAND) {
            pipe.cmd("DEL").arg(chunk);
        }
        let mut conn = self.conn.clone();
        let counts: Vec<u64> =
            self.call("DEL", || first_key(keys), pipe.query_async(&mut conn)).await?;
        Ok(counts.into_iter().sum())
    }

    async fn invalidate(
        &self,
        keys: &[String],
        generation_key: &str,
        generation_ttl: Duration,
    ) -> Result<()> {
        // MULTI/EXEC in one pipeline: one round trip, and no reader sees the keys gone with
        // the old generation still in place.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in keys.chunks(MAX_KEYS_PER_COMMAND) {
            pipe.cmd("DEL").arg(chunk).ignore();
        }
        pipe.cmd("INCR").arg(generation_key).ignore();
        pipe.cmd("PEXPIRE").arg(generation_key).arg(ttl_ms_i64(generation_ttl)).ignore();
        let mut conn = self.conn.clone();
        self.call("invalidating", || first_key(keys), pipe.query_async::<()>(&mut conn)).await
    }
}

/// The first key of a batch, for error messages.
fn first_key(keys: &[String]) -> String {
    match keys {
        [] => String::new(),
        [one] => one.clone(),
        [first, ..] => format!("{first} (+{} more)", keys.len() - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_url_is_a_connect_error() {
        let err = RedisStore::lazy(&RedisStoreConfig::new("not a url")).unwrap_err();
        assert!(matches!(err, CacheError::Connect { .. }), "{err}");
    }

    #[test]
    fn ttls_are_never_zero() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_secs(300)), 300_000);
    }
}
