//! What a tenant asks of a highly available PostgreSQL cluster beyond start, stop and restart:
//! `POST /v1/instances/{id}/switchover`, `POST` and `GET /v1/instances/{id}/backups`, and
//! `PATCH /v1/instances/{id}` (the replica count).
//!
//! A backup is a pgBackRest base backup (full by default, or `diff`/`incr`) taken on the
//! primary into the cluster's repository, where WAL is archived continuously: it is taken
//! before the answer (`201` with the backup set; seconds for a small database, bounded by the
//! runtime's backup timeout) and recorded as a `backed_up` event.
//!
//! A switchover is planned: the primary finishes what it was doing, hands over to a replica
//! (the body's `target`, else the running replica with the least lag) and follows it, so no
//! committed transaction is lost and clients of the read-write endpoint see one short pause.
//! It is carried out before the answer (a few seconds), and answered `200` with the old and
//! new primary and how long it took; it is also recorded as a `switchover` event.
//!
//! `PATCH /v1/instances/{id}` with `{"backup_schedule": {"every_hours": h, "keep": n}}` (or
//! `null`) sets when the platform backs the cluster up by itself and how many full backups it
//! keeps (see [`crate::backup_schedule`]).
//!
//! `PATCH /v1/instances/{id}` with `{"replicas": n}` changes how many replicas a running
//! cluster keeps (1 to [`PostgresSpec::MAX_REPLICAS`], within the owner's quota: each member
//! costs the instance's resources). The new count is stored with a `config_changed` event and
//! answered `202`; the supervisor then meets it within its interval, as it brings back a lost
//! member: a new member copies the data from the primary and is recorded as `node_added`, a
//! member beyond the count is removed with its data and recorded as `node_removed` (the
//! primary hands over to a member that stays first, so it is never the one removed).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iaas_core::pgbackrest::BackupKind;
use iaas_core::{
    BackupSchedule, EventAction, InfrastructureEvent, Instance, InstanceSpec, InstanceStatus,
    PostgresSpec, Principal, SpecChange,
};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, JsonBody, ProvisioningApi, SCOPE_READ, SCOPE_WRITE, caller, owned};

/// `PATCH /v1/instances/{id}` body: `{"replicas": 2}`, `{"backup_schedule": {"every_hours":
/// 24, "keep": 7}}` (`null` turns the schedule off), or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeRequest {
    /// Replicas beside the primary.
    #[serde(default)]
    replicas: Option<u8>,
    /// The backup schedule; `Some(None)` (a JSON `null`) turns it off.
    #[serde(default, deserialize_with = "present")]
    backup_schedule: Option<Option<BackupSchedule>>,
}

/// A field that is present, `null` included.
fn present<'de, D, T>(value: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(value).map(Some)
}

/// Stores a new replica count or backup schedule (see the module docs) and answers `202` with
/// the instance (`200` when nothing changes).
pub(crate) async fn change(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ChangeRequest>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    if request.replicas.is_none() && request.backup_schedule.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "nothing to change: give replicas, backup_schedule or both",
        ));
    }
    let instance = owned_cluster(&api, &principal, &id, "a replica count to change").await?;
    let InstanceSpec::Postgres(pg) = &instance.spec else {
        return Err(ApiError::internal("a highly available cluster without a PostgreSQL spec"));
    };
    let wanted = PostgresSpec {
        replicas: request.replicas.unwrap_or(pg.replicas),
        backup_schedule: request.backup_schedule.unwrap_or(pg.backup_schedule),
        ..pg.clone()
    };
    if wanted == *pg {
        return Ok((StatusCode::OK, Json(instance)).into_response());
    }
    running(&instance, "its replica count and backup schedule change while it runs")?;
    let mut event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::ConfigChanged,
        api.clock.now(),
    );
    if wanted.replicas != pg.replicas {
        event = event
            .with_metadata("replicas_from", pg.replicas.to_string())
            .with_metadata("replicas", wanted.replicas.to_string());
    }
    if wanted.backup_schedule != pg.backup_schedule {
        let schedule = wanted.backup_schedule.map_or_else(
            || "off".to_owned(),
            |s| format!("every {} h, keep {}", s.every_hours, s.keep),
        );
        event = event.with_metadata("backup_schedule", schedule);
    }
    let spec = InstanceSpec::Postgres(wanted);
    spec.validate()?;
    let quota = crate::quota_api::quota_of(&api, principal.user_id).await?;
    let change = SpecChange { id: instance.id, expected_version: instance.version, spec, event };
    let changed = api.repo.update_spec_within(change, &quota).await?;
    (api.on_commit)();
    Ok((StatusCode::ACCEPTED, Json(changed)).into_response())
}

/// `POST /v1/instances/{id}/switchover` body: `{}` or `{"target": "member-1"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwitchoverRequest {
    /// The member to promote; the running replica with the least lag when absent.
    #[serde(default)]
    target: Option<String>,
}

/// Longest member name accepted in a request (members are `member-0` .. `member-N`).
const MAX_TARGET_LEN: usize = 32;

pub(crate) async fn switchover(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<SwitchoverRequest>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned_cluster(&api, &principal, &id, "switchovers").await?;
    running(&instance, "a switchover needs it running")?;
    let target = request.target.as_deref();
    if target.is_some_and(|t| t.is_empty() || t.len() > MAX_TARGET_LEN) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "target must be a member name such as member-1 (at most {MAX_TARGET_LEN} characters)"
            ),
        ));
    }
    if let Some(supervisor) = &api.supervisor {
        supervisor.expect_switchover(instance.id, target).await;
    }
    let started = std::time::Instant::now();
    let change = api.runtime.switchover(instance.id, target).await?;
    let took_ms = started.elapsed().as_millis();
    let mut event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Switchover,
        api.clock.now(),
    )
    .with_metadata("new_primary", &change.new_leader)
    .with_metadata("took_ms", took_ms.to_string());
    if let Some(old) = &change.old_leader {
        event = event.with_metadata("old_primary", old);
    }
    if let Some(timeline) = change.timeline {
        event = event.with_metadata("timeline", timeline.to_string());
    }
    api.repo.record_event(&event).await?;
    (api.on_commit)();
    if let Some(supervisor) = &api.supervisor {
        let now = api.runtime.cluster_members(instance.id).await.ok().flatten();
        supervisor.switchover_done(instance.id, now);
    }
    let body = json!({
        "instance_id": instance.id,
        "action": "switchover",
        "old_primary": change.old_leader,
        "new_primary": change.new_leader,
        "timeline": change.timeline,
        "took_ms": took_ms,
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `POST /v1/instances/{id}/backups` body: `{}` (a full backup) or `{"type": "diff"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    #[serde(default, rename = "type")]
    kind: Option<BackupKind>,
}

/// The instance `id` of the caller, which must be a highly available cluster.
/// `Ok` when `instance` runs; else 409 `not_running` saying that `why` (what the request
/// needs, in words).
pub(crate) fn running(instance: &Instance, why: &str) -> Result<(), ApiError> {
    if instance.status == InstanceStatus::Running {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "not_running",
        format!("instance {} is {}; {why}", instance.id, instance.status),
    ))
}

async fn owned_cluster(
    api: &ProvisioningApi,
    principal: &Principal,
    id: &str,
    what: &str,
) -> Result<Instance, ApiError> {
    let instance = owned(api, principal, id).await?;
    if !instance.spec.is_highly_available() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_highly_available",
            format!(
                "instance {} is not a highly available PostgreSQL cluster (spec.ha); only those have {what}",
                instance.id
            ),
        ));
    }
    Ok(instance)
}

/// Takes a base backup before answering (201 with it) and records a `backed_up` event.
pub(crate) async fn backup(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<BackupRequest>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned_cluster(&api, &principal, &id, "backups").await?;
    running(&instance, "a backup needs it running")?;
    let kind = request.kind.unwrap_or(BackupKind::Full);
    // The cluster's schedule says how many full backups to keep, whoever takes one.
    let keep = match &instance.spec {
        InstanceSpec::Postgres(pg) => pg.backup_schedule.map(|s| s.keep),
        _ => None,
    };
    let backup = api.runtime.backup(instance.id, kind, keep).await?;
    let event = crate::backup_schedule::backed_up_event(&instance, &backup, kind, api.clock.now())
        .with_metadata("reason", "asked");
    api.repo.record_event(&event).await?;
    (api.on_commit)();
    let body = json!({"instance_id": instance.id, "backup": backup});
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /v1/instances/{id}/backups`: the backups, oldest first, and the WAL archived.
pub(crate) async fn backups(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let instance = owned_cluster(&api, &principal, &id, "backups").await?;
    let catalog = api.runtime.backups(instance.id).await?;
    let body = json!({
        "instance_id": instance.id,
        "backups": catalog.backups,
        "wal_min": catalog.wal_min,
        "wal_max": catalog.wal_max,
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
