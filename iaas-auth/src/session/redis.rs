//! [`SessionStore`] in Redis, shared by every instance of the auth service.
//!
//! Keys (all under a configurable prefix):
//!
//! | key | type | what | TTL |
//! |---|---|---|---|
//! | `refresh:{sha256}` | hash | one session: `user`, `family`, `created_ms`, `family_created_ms`, `expires_ms`, `idle_until_ms`, `client`, and once rotated `rotated_to`, `rotated_at_ms` | idle timeout, capped by the family's end |
//! | `family:{id}` | set | the token hashes of one family | until the family's end |
//! | `user:{id}:sessions` | set | the token hashes of one user | longest family |
//! | `user:{id}:nbf` | string | "not before" stamp (ms) | absolute lifetime |
//! | `throttle:{key}` | string | failure counter | the window |
//!
//! Every script that ends a login publishes it on the channel `ended` under the prefix, in the
//! same atomic step (`"{user} {family}"`, or `"{user}"` for all of a user's), so live
//! connections of any process sharing the server end at once
//! ([`SessionStore::login_news`]).
//!
//! Sessions are Redis hashes rather than JSON blobs so the Lua scripts can read and update
//! single fields without a JSON round trip. Every change that touches more than one key is one
//! Lua script (run with `EVALSHA`, falling back to `EVAL`), so it is atomic: a crash or a
//! concurrent refresh never sees a half-rotated family. The scripts derive key names from the
//! prefix they are given, which is fine on a single Redis or a replicated primary but not on
//! Redis Cluster (where all keys would need one hash tag).
//!
//! Every call runs under the configured timeout; a Redis error or a timeout is
//! [`AuthError::Unavailable`] (HTTP 503). The [`ConnectionManager`] reconnects by itself, so
//! the store recovers when Redis comes back without any action.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use iaas_core::UserId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{Attempts, Rotate, Rotation, Session, SessionStore, TokenHash};
use crate::error::{AuthError, Result};

mod news;

const BACKEND: &str = "redis";

/// Settings of the Redis session store. `Debug` leaves the URL's password out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisSessionConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key (default `"iaas:auth:"`).
    pub key_prefix: String,
    /// Deadline of one call, connection included (default 500 ms).
    pub timeout: StdDuration,
}

impl std::fmt::Debug for RedisSessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionConfig")
            .field("url", &iaas_core::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisSessionConfig {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "iaas:auth:".to_owned(),
            timeout: StdDuration::from_millis(500),
        }
    }

    /// Replaces the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Replaces the per-call timeout.
    pub fn with_timeout(mut self, timeout: StdDuration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Shared Lua helpers: key names and family revocation.
const PRELUDE: &str = r"
local p = ARGV[1]
local function rk(h) return p .. 'refresh:' .. h end
local function uk(u) return p .. 'user:' .. u .. ':sessions' end
local function fk(f) return p .. 'family:' .. f end
local function nk(u) return p .. 'user:' .. u .. ':nbf' end
local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function kill_family(s)
  for _, m in ipairs(redis.call('SMEMBERS', fk(s.family))) do
    redis.call('DEL', rk(m))
    redis.call('SREM', uk(s.user), m)
  end
  redis.call('DEL', fk(s.family))
  -- Told, not required: a server whose ACL refuses the channel still ends the login.
  redis.pcall('PUBLISH', p .. 'ended', s.user .. ' ' .. s.family)
end
local function extend(key, ms)
  local left = redis.call('PTTL', key)
  if left < ms then redis.call('PEXPIRE', key, ms) end
end
local function is_revoked(s)
  local nbf = redis.call('GET', nk(s.user))
  return nbf and tonumber(s.family_created_ms) <= tonumber(nbf)
end
";

/// ARGV: prefix, hash, user, family, created_ms, family_created_ms, expires_ms, client, ttl_ms,
/// family_ttl_ms.
const CREATE: &str = r"
local key = rk(ARGV[2])
redis.call('HSET', key, 'user', ARGV[3], 'family', ARGV[4], 'created_ms', ARGV[5],
  'family_created_ms', ARGV[6], 'expires_ms', ARGV[7], 'client', ARGV[8],
  'idle_until_ms', tonumber(ARGV[5]) + tonumber(ARGV[9]))
redis.call('PEXPIRE', key, ARGV[9])
redis.call('SADD', fk(ARGV[4]), ARGV[2])
extend(fk(ARGV[4]), tonumber(ARGV[10]))
redis.call('SADD', uk(ARGV[3]), ARGV[2])
extend(uk(ARGV[3]), tonumber(ARGV[10]))
return 1
";

/// ARGV: prefix, presented, successor, now_ms, grace_ms, idle_ms.
/// Reply: {outcome, field, value, ...} with the successor's fields, or {outcome, user, family}.
const ROTATE: &str = r"
local old, new = ARGV[2], ARGV[3]
local now, grace, idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = load(rk(old))
if not s then return {'unknown'} end
if is_revoked(s) then kill_family(s) return {'revoked'} end
if now >= tonumber(s.expires_ms) then kill_family(s) return {'expired'} end
-- The key's TTL removes idle sessions; this check makes the caller's clock authoritative too.
if now >= tonumber(s.idle_until_ms) then return {'unknown'} end
if s.rotated_to then
  if s.rotated_to == new and now - tonumber(s.rotated_at_ms) < grace then
    local flat = redis.call('HGETALL', rk(new))
    if #flat > 0 then
      local reply = {'repeated'}
      for _, v in ipairs(flat) do reply[#reply + 1] = v end
      return reply
    end
  end
  kill_family(s)
  return {'reused', s.user, s.family}
end
local ttl = math.min(idle, tonumber(s.expires_ms) - now)
-- The successor's fields, written once and returned as the reply (no HGETALL to read them back).
local fields = {'user', s.user, 'family', s.family, 'created_ms', ARGV[4],
  'family_created_ms', s.family_created_ms, 'expires_ms', s.expires_ms, 'client', s.client,
  'idle_until_ms', tostring(now + ttl)}
redis.call('HSET', rk(new), unpack(fields))
redis.call('PEXPIRE', rk(new), ttl)
-- The rotated record lives as long as its successor could, so a replay is recognised.
redis.call('HSET', rk(old), 'rotated_to', new, 'rotated_at_ms', ARGV[4], 'idle_until_ms', now + ttl)
redis.call('PEXPIRE', rk(old), ttl)
redis.call('SADD', fk(s.family), new)
redis.call('SADD', uk(s.user), new)
return {'rotated', unpack(fields)}
";

/// ARGV: prefix, hash. Reply: the session's fields, or empty.
const REVOKE_FAMILY: &str = r"
local flat = redis.call('HGETALL', rk(ARGV[2]))
if #flat == 0 then return {} end
local s = load(rk(ARGV[2]))
kill_family(s)
return flat
";

/// ARGV: prefix, user, family. Reply: 1 when the family was the user's and is now revoked.
const REVOKE_SESSION: &str = r"
for _, m in ipairs(redis.call('SMEMBERS', fk(ARGV[3]))) do
  local s = load(rk(m))
  if s then
    if s.user ~= ARGV[2] then return 0 end
    kill_family(s)
    return 1
  end
end
return 0
";

/// ARGV: prefix, user, family, now_ms. Reply: 1 when a member of the family is the user's,
/// not idle, not past the family's end and not revoked.
const FAMILY_LIVE: &str = r"
local now = tonumber(ARGV[4])
for _, m in ipairs(redis.call('SMEMBERS', fk(ARGV[3]))) do
  local s = load(rk(m))
  if s and s.user == ARGV[2] and now < tonumber(s.idle_until_ms)
     and now < tonumber(s.expires_ms) and not is_revoked(s) then
    return 1
  end
end
return 0
";

/// ARGV: prefix, user, now_ms, stamp_ttl_ms. Reply: sessions deleted.
const REVOKE_ALL: &str = r"
local u = ARGV[2]
local old = redis.call('GET', nk(u))
if not old or tonumber(old) < tonumber(ARGV[3]) then
  redis.call('SET', nk(u), ARGV[3], 'PX', ARGV[4])
end
local deleted = 0
for _, m in ipairs(redis.call('SMEMBERS', uk(u))) do
  local fam = redis.call('HGET', rk(m), 'family')
  if fam then redis.call('DEL', fk(fam)) end
  deleted = deleted + redis.call('DEL', rk(m))
end
redis.call('DEL', uk(u))
redis.pcall('PUBLISH', p .. 'ended', u)
return deleted
";

/// ARGV: prefix, user, now_ms. Reply: one array of fields per current session; dead index entries
/// are pruned on the way.
const LIST: &str = r"
local u = ARGV[2]
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', uk(u))) do
  local s = load(rk(m))
  if not s then
    redis.call('SREM', uk(u), m)
  elseif not s.rotated_to and not is_revoked(s) and tonumber(ARGV[3]) < tonumber(s.idle_until_ms) then
    out[#out + 1] = redis.call('HGETALL', rk(m))
  end
end
return out
";

/// KEYS: counter. ARGV: window_ms. Reply: {count, ms left}.
const RECORD_FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) left = tonumber(ARGV[1]) end
return {n, left}
";

/// [`SessionStore`] on a Redis server.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: ConnectionManager,
    config: RedisSessionConfig,
    create: Script,
    rotate: Script,
    revoke_family: Script,
    revoke_session: Script,
    family_live: Script,
    revoke_all: Script,
    list: Script,
    record_failure: Script,
    /// The endings published by every process sharing the server.
    endings: Arc<news::EndingsHeard>,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").field("config", &self.config).finish_non_exhaustive()
    }
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

impl RedisSessionStore {
    /// Connects to the server in `config`; [`AuthError::Unavailable`] when it does not answer
    /// in time.
    pub async fn connect(config: RedisSessionConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(|err| AuthError::Config {
            reason: format!("redis URL {:?}: {err}", iaas_core::redact_url(&config.url)),
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let conn = with_timeout(
            config.timeout,
            &format!("connecting to {}", iaas_core::redact_url(&config.url)),
            ConnectionManager::new_with_config(client.clone(), manager),
        )
        .await?;
        let endings =
            news::EndingsHeard::new(client, news::channel(&config.key_prefix), config.timeout);
        Ok(Self {
            conn,
            endings: Arc::new(endings),
            config,
            create: script(CREATE),
            rotate: script(ROTATE),
            revoke_family: script(REVOKE_FAMILY),
            revoke_session: script(REVOKE_SESSION),
            family_live: script(FAMILY_LIVE),
            revoke_all: script(REVOKE_ALL),
            list: script(LIST),
            record_failure: Script::new(RECORD_FAILURE),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisSessionConfig {
        &self.config
    }

    fn throttle_key(&self, key: &str) -> String {
        format!("{}throttle:{key}", self.config.key_prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
        operation: &str,
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation.arg(&self.config.key_prefix);
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        with_timeout(self.config.timeout, operation, invocation.invoke_async(&mut conn)).await
    }
}

async fn with_timeout<T>(
    limit: StdDuration,
    operation: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(AuthError::unavailable(BACKEND, operation.to_owned(), err)),
        Err(elapsed) => Err(AuthError::unavailable(
            BACKEND,
            format!("{operation} (no answer within {limit:?})"),
            elapsed,
        )),
    }
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// A positive duration in ms (Redis refuses a zero or negative TTL).
fn ttl_ms(d: Duration) -> String {
    d.num_milliseconds().max(1).to_string()
}

fn corrupt(operation: &str, what: impl Into<String>) -> AuthError {
    AuthError::internal(operation.to_owned(), what.into())
}

/// Builds a session from `field, value, ...` pairs.
fn parse_session(flat: &[String], operation: &str) -> Result<Session> {
    let field = |name: &str| {
        flat.chunks(2)
            .find(|pair| pair.first().is_some_and(|f| f == name))
            .and_then(|pair| pair.get(1))
            .ok_or_else(|| corrupt(operation, format!("session hash lacks field {name:?}")))
    };
    let time = |name: &str| -> Result<DateTime<Utc>> {
        field(name)?
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| corrupt(operation, format!("session field {name:?} is not a time")))
    };
    Ok(Session {
        user: field("user")?
            .parse()
            .map_err(|err| corrupt(operation, format!("session field \"user\": {err}")))?,
        family: field("family")?
            .parse::<Uuid>()
            .map_err(|err| corrupt(operation, format!("session field \"family\": {err}")))?,
        created_at: time("created_ms")?,
        family_created_at: time("family_created_ms")?,
        expires_at: time("expires_ms")?,
        client: field("client")?.clone(),
    })
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(
        &self,
        hash: &TokenHash,
        session: &Session,
        idle_timeout: Duration,
    ) -> Result<()> {
        let lifetime = session.expires_at - session.created_at;
        let args = [
            hash.as_str().to_owned(),
            session.user.to_string(),
            session.family.to_string(),
            ms(session.created_at),
            ms(session.family_created_at),
            ms(session.expires_at),
            session.client.clone(),
            ttl_ms(idle_timeout.min(lifetime)),
            ttl_ms(lifetime),
        ];
        let operation = format!("creating a session for user {}", session.user);
        self.run::<i64>(&self.create, &[], &args, &operation).await.map(drop)
    }

    async fn rotate<'a>(&self, request: Rotate<'a>) -> Result<Rotation> {
        let args = [
            request.presented.as_str().to_owned(),
            request.successor.as_str().to_owned(),
            ms(request.now),
            request.reuse_grace.num_milliseconds().to_string(),
            request.idle_timeout.num_milliseconds().to_string(),
        ];
        let operation = "rotating a refresh token";
        let reply: Vec<String> = self.run(&self.rotate, &[], &args, operation).await?;
        let (outcome, rest) =
            reply.split_first().ok_or_else(|| corrupt(operation, "empty script reply"))?;
        Ok(match outcome.as_str() {
            "unknown" => Rotation::Unknown,
            "revoked" => Rotation::Revoked,
            "expired" => Rotation::Expired,
            "rotated" => Rotation::Rotated(parse_session(rest, operation)?),
            "repeated" => Rotation::Repeated(parse_session(rest, operation)?),
            "reused" => match rest {
                [user, family] => Rotation::Reused {
                    user: user.parse().map_err(|err| corrupt(operation, format!("{err}")))?,
                    family: family.parse().map_err(|err| corrupt(operation, format!("{err}")))?,
                },
                _ => return Err(corrupt(operation, "malformed reuse reply")),
            },
            other => return Err(corrupt(operation, format!("unknown outcome {other:?}"))),
        })
    }

    async fn revoke_family(&self, hash: &TokenHash) -> Result<Option<Session>> {
        let operation = "revoking a session family";
        let flat: Vec<String> =
            self.run(&self.revoke_family, &[], &[hash.as_str().to_owned()], operation).await?;
        if flat.is_empty() { Ok(None) } else { parse_session(&flat, operation).map(Some) }
    }

    async fn revoke_session(&self, user: UserId, family: Uuid) -> Result<bool> {
        let operation = format!("revoking session {family} of user {user}");
        let args = [user.to_string(), family.to_string()];
        let revoked: i64 = self.run(&self.revoke_session, &[], &args, &operation).await?;
        Ok(revoked == 1)
    }

    async fn revoke_all(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        keep_stamp_for: Duration,
    ) -> Result<u64> {
        let args = [user.to_string(), ms(now), ttl_ms(keep_stamp_for)];
        let operation = format!("revoking every session of user {user}");
        let deleted: i64 = self.run(&self.revoke_all, &[], &args, &operation).await?;
        Ok(u64::try_from(deleted).unwrap_or_default())
    }

    /// The endings published on the server by every process sharing it, heard on a
    /// connection of their own (see the `news` module's docs in the source).
    fn login_news(&self) -> Option<iaas_core::LoginNewsFeed> {
        Some(self.endings.listen())
    }

    async fn is_family_live(&self, user: UserId, family: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let operation = format!("checking session {family} of user {user}");
        let args = [user.to_string(), family.to_string(), ms(now)];
        let live: i64 = self.run(&self.family_live, &[], &args, &operation).await?;
        Ok(live == 1)
    }

    async fn list(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<Session>> {
        let operation = format!("listing the sessions of user {user}");
        let rows: Vec<Vec<String>> =
            self.run(&self.list, &[], &[user.to_string(), ms(now)], &operation).await?;
        let mut sessions = rows
            .iter()
            .map(|row| parse_session(row, &operation))
            .filter(|s| s.as_ref().map_or(true, |s| now < s.expires_at))
            .collect::<Result<Vec<_>>>()?;
        sessions.sort_by_key(|s| s.family_created_at);
        Ok(sessions)
    }

    async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        _now: DateTime<Utc>,
    ) -> Result<Attempts> {
        let counter = self.throttle_key(key);
        let mut invocation = self.record_failure.key(&counter);
        invocation.arg(ttl_ms(window));
        let mut conn = self.conn.clone();
        let operation = format!("counting a failed login for {key}");
        let (count, left): (u64, i64) =
            with_timeout(self.config.timeout, &operation, invocation.invoke_async(&mut conn))
                .await?;
        Ok(Attempts { count, retry_after: Duration::milliseconds(left.max(0)) })
    }

    async fn failures(&self, key: &str, _now: DateTime<Utc>) -> Result<Attempts> {
        let counter = self.throttle_key(key);
        let mut conn = self.conn.clone();
        let operation = format!("reading failed logins for {key}");
        let (count, left): (Option<u64>, i64) = with_timeout(
            self.config.timeout,
            &operation,
            redis::pipe().get(&counter).pttl(&counter).query_async(&mut conn),
        )
        .await?;
        Ok(Attempts {
            count: count.unwrap_or_default(),
            retry_after: Duration::milliseconds(left.max(0)),
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        let counter = self.throttle_key(key);
        let mut conn = self.conn.clone();
        let operation = format!("clearing failed logins for {key}");
        with_timeout(self.config.timeout, &operation, conn.del::<_, ()>(&counter)).await
    }
}
