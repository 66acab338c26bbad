//! Persistence ports for users and instances.
//!
//! Instance writes carry their event: the adapter stores the row and appends the event to its
//! outbox in one transaction, so an event is published if and only if the change it describes
//! was committed (no lost and no phantom events).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::event::InfrastructureEvent;
use crate::id::{InstanceId, UserId};
use crate::instance::{Instance, InstanceSpec};
use crate::quota::{Quota, QuotaOverride};
use crate::status::InstanceStatus;
use crate::user::User;

/// Stores user accounts.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Stores a new user; [`Error::Conflict`](crate::Error::Conflict) when the username is taken.
    async fn create_user(&self, user: &User) -> Result<()>;

    /// The user with this id, if any.
    async fn get_user(&self, id: UserId) -> Result<Option<User>>;

    /// The user with this username, if any.
    async fn find_user_by_username(&self, username: &str) -> Result<Option<User>>;

    /// Replaces the password hash; [`Error::NotFound`](crate::Error::NotFound) for an unknown id.
    async fn set_password_hash(
        &self,
        id: UserId,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Replaces the scopes the user's tokens carry from their next login or refresh;
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown id.
    async fn set_scopes(&self, id: UserId, scopes: &[String]) -> Result<()>;
}

/// Stores the quota overrides an administrator sets for single users.
#[async_trait]
pub trait QuotaRepository: Send + Sync {
    /// The override of `user`, if any.
    async fn quota_override(&self, user: UserId) -> Result<Option<QuotaOverride>>;

    /// Replaces the override of `user`; an empty one removes it (the defaults apply again).
    async fn set_quota_override(
        &self,
        user: UserId,
        overrides: &QuotaOverride,
        at: DateTime<Utc>,
    ) -> Result<()>;
}

/// A status change to apply atomically with its event.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The instance to change.
    pub id: InstanceId,
    /// The version the caller read; the write fails with a conflict if it moved on.
    /// `None` applies the change to whatever version is stored (for observations of the
    /// outside world, such as a Docker event, that must not be lost to a race).
    pub expected_version: Option<u64>,
    /// The new status.
    pub to: InstanceStatus,
    /// The event describing the change, appended to the outbox when the status changes.
    pub event: InfrastructureEvent,
    /// When the change happened.
    pub at: DateTime<Utc>,
}

/// A change of what an instance is asked to be (its spec: a cluster's replica count), applied
/// atomically with its event.
#[derive(Debug, Clone)]
pub struct SpecChange {
    /// The instance to change.
    pub id: InstanceId,
    /// The version the caller read; the write fails with a conflict if it moved on.
    pub expected_version: u64,
    /// The spec it is to have.
    pub spec: InstanceSpec,
    /// The event describing the change (`config_changed`), appended to the outbox.
    pub event: InfrastructureEvent,
}

/// Stores instances together with their outbox of events.
#[async_trait]
pub trait InstanceRepository: Send + Sync {
    /// Stores a new instance and its `created` event in one transaction.
    /// [`Error::Conflict`](crate::Error::Conflict) when the owner already has an instance of
    /// that name.
    async fn create_instance(&self, instance: &Instance, event: &InfrastructureEvent)
    -> Result<()>;

    /// [`create_instance`](Self::create_instance), if `instance` fits in `quota` beside the
    /// owner's other instances that are not deleted ([`Quota::admit`]); else
    /// [`Error::QuotaExceeded`](crate::Error::QuotaExceeded) and nothing is written. The check
    /// and the write are one transaction, serialized per owner, so concurrent creates of one
    /// owner never overshoot the quota, from one process or many.
    async fn create_instance_within(
        &self,
        instance: &Instance,
        event: &InfrastructureEvent,
        quota: &Quota,
    ) -> Result<()>;

    /// The instance with this id, if any (deleted ones included).
    async fn get_instance(&self, id: InstanceId) -> Result<Option<Instance>>;

    /// The owner's instances, oldest first.
    async fn list_instances_by_owner(&self, owner: UserId) -> Result<Vec<Instance>>;

    /// Every instance not yet deleted (the reconciler's view of what should exist).
    async fn list_active_instances(&self) -> Result<Vec<Instance>>;

    /// Applies a status change and appends its event, atomically. An unchanged status writes
    /// nothing. Returns the instance as stored afterwards.
    ///
    /// Errors: [`NotFound`](crate::Error::NotFound),
    /// [`Conflict`](crate::Error::Conflict) on a version mismatch,
    /// [`InvalidTransition`](crate::Error::InvalidTransition) when the life cycle forbids it.
    async fn update_status(&self, change: StatusChange) -> Result<Instance>;

    /// Appends `event` to the outbox of the instance it names (`event.instance_id`), changing
    /// nothing else: for what happens to an instance without changing its status, such as a
    /// `failover` or a switchover of a running cluster, a member recreated (`started` with the
    /// member in its metadata) or a backup taken.
    ///
    /// The event joins the same outbox as those of [`create_instance`](Self::create_instance)
    /// and [`update_status`](Self::update_status), under the same per-instance serialization:
    /// it is published after every event of the instance committed before it and before every
    /// one committed after it.
    ///
    /// The instance's `version` and `updated_at` stay as they are. The version guards the
    /// status: an observation that changes no status must not make a concurrent
    /// [`update_status`](Self::update_status) with an `expected_version` fail as stale (a
    /// failover reported while a user stops the instance would otherwise turn the stop into a
    /// conflict), and `updated_at` keeps meaning "when the status last changed".
    ///
    /// Errors: [`NotFound`](crate::Error::NotFound) for an unknown instance;
    /// [`Conflict`](crate::Error::Conflict) for a `deleted` one (its `deleted` event is its last,
    /// and an event behind it would tell consumers about an instance that no longer exists;
    /// a `deleting` instance still takes events). Nothing is written on an error.
    async fn record_event(&self, event: &InfrastructureEvent) -> Result<()>;

    /// Gives the instance `change.spec` and appends `change.event`, atomically, if the instance
    /// with that spec still fits in `quota` beside its owner's other instances that are not
    /// deleted (serialized per owner with [`create_instance_within`](Self::create_instance_within)).
    /// The version moves on (a concurrent change made on the old spec fails as stale);
    /// `updated_at` stays, as for [`record_event`](Self::record_event). Returns the instance as
    /// stored afterwards.
    ///
    /// Errors: [`NotFound`](crate::Error::NotFound),
    /// [`Conflict`](crate::Error::Conflict) on a version mismatch or a `deleted` instance,
    /// [`QuotaExceeded`](crate::Error::QuotaExceeded). Nothing is written on an error.
    async fn update_spec_within(&self, change: SpecChange, quota: &Quota) -> Result<Instance>;
}
