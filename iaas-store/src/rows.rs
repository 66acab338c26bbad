//! Conversions between rows and domain values, shared by both backends. A row that does not
//! decode (a value written by a newer version, or edited by hand) is an `Internal` error naming
//! the row, never a panic.

use chrono::{DateTime, Utc};
use iaas_core::{
    Error, InfrastructureEvent, Instance, InstanceName, InstanceSpec, OutboxEntry, Resources,
    Result, User,
};
use uuid::Uuid;

/// The instance columns, in the order [`InstanceRow`] reads them.
pub(crate) const INSTANCE_COLUMNS: &str =
    "id, owner, name, kind, spec, resources, status, version, created_at, updated_at";

/// The user columns.
pub(crate) const USER_COLUMNS: &str =
    "id, username, password_hash, scopes, created_at, password_changed_at";

fn corrupt(what: String, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Internal { operation: format!("decoding {what}"), source: Box::new(err) }
}

/// An `instances` row as stored.
pub(crate) struct InstanceRow {
    pub(crate) id: Uuid,
    pub(crate) owner: Uuid,
    pub(crate) name: String,
    pub(crate) spec: String,
    pub(crate) resources: String,
    pub(crate) status: String,
    pub(crate) version: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl InstanceRow {
    pub(crate) fn into_instance(self) -> Result<Instance> {
        let what = || format!("instance {}", self.id);
        Ok(Instance {
            id: self.id.into(),
            owner: self.owner.into(),
            name: InstanceName::new(self.name.clone()).map_err(|e| corrupt(what(), e))?,
            spec: serde_json::from_str::<InstanceSpec>(&self.spec)
                .map_err(|e| corrupt(what(), e))?,
            resources: serde_json::from_str::<Resources>(&self.resources)
                .map_err(|e| corrupt(what(), e))?,
            status: self.status.parse().map_err(|e| corrupt(what(), e))?,
            version: u64::try_from(self.version).map_err(|e| corrupt(what(), e))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The values written for an instance.
pub(crate) struct InstanceValues {
    pub(crate) spec: String,
    pub(crate) resources: String,
    pub(crate) version: i64,
}

impl InstanceValues {
    pub(crate) fn of(instance: &Instance) -> Result<Self> {
        let encode =
            |e: serde_json::Error| corrupt(format!("instance {} for writing", instance.id), e);
        Ok(Self {
            spec: serde_json::to_string(&instance.spec).map_err(encode)?,
            resources: serde_json::to_string(&instance.resources).map_err(encode)?,
            version: to_i64(instance.version, "instance version")?,
        })
    }
}

/// A `users` row as stored.
pub(crate) struct UserRow {
    pub(crate) id: Uuid,
    pub(crate) username: String,
    pub(crate) password_hash: String,
    pub(crate) scopes: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) password_changed_at: DateTime<Utc>,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<User> {
        Ok(User {
            id: self.id.into(),
            scopes: serde_json::from_str(&self.scopes)
                .map_err(|e| corrupt(format!("user {}", self.id), e))?,
            username: self.username,
            password_hash: self.password_hash,
            created_at: self.created_at,
            password_changed_at: self.password_changed_at,
        })
    }
}

pub(crate) fn scopes_json(user: &User) -> Result<String> {
    serde_json::to_string(&user.scopes)
        .map_err(|e| corrupt(format!("user {} for writing", user.id), e))
}

/// An outbox row as claimed.
pub(crate) fn outbox_entry(seq: i64, payload: &str, created_us: i64) -> Result<OutboxEntry> {
    let event = InfrastructureEvent::from_json(payload.as_bytes())
        .map_err(|e| corrupt(format!("outbox entry {seq}"), e))?;
    Ok(OutboxEntry {
        seq: u64::try_from(seq).map_err(|e| corrupt(format!("outbox entry {seq}"), e))?,
        event,
        created_at: from_micros(created_us),
    })
}

/// Event payload as stored: the wire JSON, so the relay publishes exactly these bytes' meaning.
/// The stored form of a quota override.
pub(crate) fn quota_json(overrides: &iaas_core::QuotaOverride) -> Result<String> {
    serde_json::to_string(overrides).map_err(|e| corrupt("a quota override for writing".into(), e))
}

/// A stored quota override.
pub(crate) fn quota_from_json(user: Uuid, limits: &str) -> Result<iaas_core::QuotaOverride> {
    serde_json::from_str(limits)
        .map_err(|e| corrupt(format!("the quota override of user {user}"), e))
}

/// The key of the per-owner lock a quota-checked create takes on PostgreSQL: the owner id's
/// first 8 bytes (distinct owners may share a key and then wait for each other; never wrong).
pub(crate) fn owner_lock_key(owner: Uuid) -> i64 {
    let bytes = owner.as_bytes();
    i64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

pub(crate) fn payload(event: &InfrastructureEvent) -> Result<String> {
    String::from_utf8(event.to_json()).map_err(|e| corrupt(format!("event {}", event.id), e))
}

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::invalid("version", format!("{what} {value} does not fit in a database integer"))
    })
}

/// A job as read from its row.
pub(crate) fn job(
    job_id: String,
    id: uuid::Uuid,
    action: &str,
    from: &str,
    attempts: i64,
    last_error: Option<String>,
    created_us: i64,
) -> Result<iaas_core::Job> {
    let instance_id = iaas_core::InstanceId::from_uuid(id);
    Ok(iaas_core::Job {
        id: job_id,
        instance_id,
        action: iaas_core::JobAction::parse(action).ok_or_else(|| Error::Internal {
            operation: format!("decoding the job of instance {instance_id}"),
            source: format!("unknown action {action:?}").into(),
        })?,
        from: from.parse().map_err(|e| corrupt(format!("job of instance {instance_id}"), e))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error,
        created_at: from_micros(created_us),
    })
}
