//! How much one user may hold: quotas, what an instance costs against them, and the check.
//!
//! A [`Quota`] bounds a user's instances (every one not deleted counts, failed ones included:
//! the user deletes those), the CPU and memory they hold in all, and what one instance may ask
//! for. An instance costs its resources once per container: a PostgreSQL cluster with two
//! replicas costs three times its `resources`. The platform's defaults come from its
//! configuration; an administrator may override any limit for one user
//! ([`QuotaOverride`]). The check runs inside the transaction that stores the instance (see
//! [`InstanceRepository::create_instance_within`](crate::InstanceRepository::create_instance_within)),
//! so concurrent creates of one user never overshoot it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::instance::{Instance, InstanceSpec, Resources};

/// The limits one user is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Instances that are not deleted.
    pub instances: u32,
    /// CPU of all those instances' containers, in thousandths of a core.
    pub millicpus: u64,
    /// Memory of all those instances' containers, in MiB.
    pub memory_mib: u64,
    /// CPU one instance may ask for per container (its `resources.millicpus`).
    pub instance_millicpus: u32,
    /// Memory one instance may ask for per container (its `resources.memory_mib`).
    pub instance_memory_mib: u32,
}

impl Default for Quota {
    /// 10 instances, 4 cores and 8 GiB in all, 2 cores and 4 GiB per container.
    fn default() -> Self {
        Self {
            instances: 10,
            millicpus: 4_000,
            memory_mib: 8_192,
            instance_millicpus: 2_000,
            instance_memory_mib: 4_096,
        }
    }
}

/// An administrator's override of some limits for one user; the others keep the platform's
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    /// See [`Quota::instances`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// See [`Quota::millicpus`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
    /// See [`Quota::memory_mib`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// See [`Quota::instance_millicpus`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_millicpus: Option<u32>,
    /// See [`Quota::instance_memory_mib`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_memory_mib: Option<u32>,
}

impl QuotaOverride {
    /// Whether it overrides nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Quota {
    /// These limits with `overrides` applied.
    #[must_use]
    pub fn with(self, overrides: &QuotaOverride) -> Self {
        Self {
            instances: overrides.instances.unwrap_or(self.instances),
            millicpus: overrides.millicpus.unwrap_or(self.millicpus),
            memory_mib: overrides.memory_mib.unwrap_or(self.memory_mib),
            instance_millicpus: overrides.instance_millicpus.unwrap_or(self.instance_millicpus),
            instance_memory_mib: overrides.instance_memory_mib.unwrap_or(self.instance_memory_mib),
        }
    }

    /// Whether `instance` may become `changed` beside the owner's other instances (`others`):
    /// a change that costs no more CPU or memory is admitted whatever the quota (lowering the
    /// replica count of an owner already past a lowered quota must stay possible); one that
    /// costs more must fit as [`Quota::admit`] says.
    pub fn admit_change(
        &self,
        others: &Usage,
        instance: &Instance,
        changed: &Instance,
    ) -> Result<(), QuotaExceeded> {
        let (before, after) = (Usage::of_one(instance), Usage::of_one(changed));
        if after.millicpus <= before.millicpus && after.memory_mib <= before.memory_mib {
            return Ok(());
        }
        self.admit(others, changed)
    }

    /// Whether `instance` fits beside what its owner already holds (`usage`); the first limit
    /// it would break otherwise.
    pub fn admit(&self, usage: &Usage, instance: &Instance) -> Result<(), QuotaExceeded> {
        let resources = instance.resources;
        let cost = Usage::of_one(instance);
        let checks = [
            (
                QuotaLimit::InstanceMillicpus,
                u64::from(self.instance_millicpus),
                0,
                u64::from(resources.millicpus),
            ),
            (
                QuotaLimit::InstanceMemoryMib,
                u64::from(self.instance_memory_mib),
                0,
                u64::from(resources.memory_mib),
            ),
            (QuotaLimit::Instances, u64::from(self.instances), u64::from(usage.instances), 1),
            (QuotaLimit::Millicpus, self.millicpus, usage.millicpus, cost.millicpus),
            (QuotaLimit::MemoryMib, self.memory_mib, usage.memory_mib, cost.memory_mib),
        ];
        for (limit, allowed, used, requested) in checks {
            if used.saturating_add(requested) > allowed {
                return Err(QuotaExceeded { limit, allowed, used, requested });
            }
        }
        Ok(())
    }
}

/// What a user holds against their quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Instances that are not deleted.
    pub instances: u32,
    /// Their containers' CPU, in thousandths of a core.
    pub millicpus: u64,
    /// Their containers' memory, in MiB.
    pub memory_mib: u64,
}

impl Usage {
    /// What `instances` hold together; deleted ones hold nothing.
    pub fn of<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Self {
        instances.into_iter().fold(Self::default(), |total, instance| {
            let one = Self::of_one(instance);
            Self {
                instances: total.instances.saturating_add(one.instances),
                millicpus: total.millicpus.saturating_add(one.millicpus),
                memory_mib: total.memory_mib.saturating_add(one.memory_mib),
            }
        })
    }

    /// What one instance holds: its resources once per container.
    pub fn of_one(instance: &Instance) -> Self {
        if instance.status == crate::InstanceStatus::Deleted {
            return Self::default();
        }
        let containers = containers_of(&instance.spec);
        let Resources { millicpus, memory_mib } = instance.resources;
        Self {
            instances: 1,
            millicpus: u64::from(millicpus) * containers,
            memory_mib: u64::from(memory_mib) * containers,
        }
    }
}

/// How many containers `spec` runs.
fn containers_of(spec: &InstanceSpec) -> u64 {
    match spec {
        // A highly available cluster adds its endpoint (HAProxy) and the store its members
        // elect through (etcd); every container gets the instance's resources.
        InstanceSpec::Postgres(pg) if pg.ha => 3 + u64::from(pg.replicas),
        InstanceSpec::Postgres(pg) => 1 + u64::from(pg.replicas),
        InstanceSpec::Nginx(_) | InstanceSpec::Docker(_) | InstanceSpec::K8s => 1,
    }
}

/// One limit of a [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// [`Quota::instances`].
    Instances,
    /// [`Quota::millicpus`].
    Millicpus,
    /// [`Quota::memory_mib`].
    MemoryMib,
    /// [`Quota::instance_millicpus`].
    InstanceMillicpus,
    /// [`Quota::instance_memory_mib`].
    InstanceMemoryMib,
}

impl QuotaLimit {
    /// Its name in JSON and in messages (`memory_mib`).
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::Instances => "instances",
            QuotaLimit::Millicpus => "millicpus",
            QuotaLimit::MemoryMib => "memory_mib",
            QuotaLimit::InstanceMillicpus => "instance_millicpus",
            QuotaLimit::InstanceMemoryMib => "instance_memory_mib",
        }
    }
}

impl fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that would take its owner past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "quota exceeded: {limit} allows {allowed}, {used} in use, this request asks for {requested} more"
)]
pub struct QuotaExceeded {
    /// The limit.
    pub limit: QuotaLimit,
    /// What the limit allows.
    pub allowed: u64,
    /// What the owner holds already (0 for a per-instance limit).
    pub used: u64,
    /// What the request would add.
    pub requested: u64,
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{InstanceName, InstanceStatus, NginxSpec, PostgresSpec, UserId};

    fn instance(spec: InstanceSpec, millicpus: u32, memory_mib: u32) -> Instance {
        Instance::new(
            UserId::new_random(),
            InstanceName::new("x").unwrap(),
            spec,
            Resources { millicpus, memory_mib },
            Utc::now(),
        )
        .unwrap()
    }

    fn postgres(replicas: u8) -> InstanceSpec {
        InstanceSpec::Postgres(PostgresSpec::new("app", replicas))
    }

    #[test]
    fn a_change_that_costs_no_more_is_admitted_even_past_the_quota() {
        let quota = Quota { millicpus: 1_000, ..Quota::default() };
        let big = instance(postgres(3), 500, 256);
        let mut smaller = big.clone();
        smaller.spec = postgres(1);
        // The owner already holds more than the quota allows (an admin lowered it).
        let others = Usage { instances: 1, millicpus: 2_000, memory_mib: 0 };
        assert_eq!(quota.admit_change(&others, &big, &smaller), Ok(()));
        assert_eq!(quota.admit_change(&others, &big, &big), Ok(()));
        let err = quota.admit_change(&others, &smaller, &big).unwrap_err();
        assert_eq!(err.limit, QuotaLimit::Millicpus);
    }

    #[test]
    fn an_instance_costs_its_resources_once_per_container() {
        let cluster = instance(postgres(2), 500, 256);
        assert_eq!(
            Usage::of_one(&cluster),
            Usage { instances: 1, millicpus: 1_500, memory_mib: 768 }
        );
        let mut gone = instance(InstanceSpec::Nginx(NginxSpec::default()), 500, 256);
        gone.status = InstanceStatus::Deleted;
        assert_eq!(Usage::of([&cluster, &gone]), Usage::of_one(&cluster));
    }

    #[test]
    fn each_limit_is_named_with_what_is_used_and_asked() {
        let quota = Quota {
            instances: 2,
            millicpus: 1_000,
            memory_mib: 1_024,
            instance_millicpus: 600,
            instance_memory_mib: 512,
        };
        let small = instance(InstanceSpec::Nginx(NginxSpec::default()), 100, 64);
        let empty = Usage::default();
        assert_eq!(quota.admit(&empty, &small), Ok(()));
        let cases = [
            (empty, instance(postgres(0), 700, 64), QuotaLimit::InstanceMillicpus, 600, 0, 700),
            (empty, instance(postgres(0), 100, 600), QuotaLimit::InstanceMemoryMib, 512, 0, 600),
            (
                Usage { instances: 2, millicpus: 0, memory_mib: 0 },
                small,
                QuotaLimit::Instances,
                2,
                2,
                1,
            ),
            (
                Usage { instances: 1, millicpus: 500, memory_mib: 0 },
                instance(postgres(1), 300, 64),
                QuotaLimit::Millicpus,
                1_000,
                500,
                600,
            ),
            (
                Usage { instances: 1, millicpus: 0, memory_mib: 900 },
                instance(postgres(0), 100, 256),
                QuotaLimit::MemoryMib,
                1_024,
                900,
                256,
            ),
        ];
        for (usage, request, limit, allowed, used, requested) in cases {
            assert_eq!(
                quota.admit(&usage, &request),
                Err(QuotaExceeded { limit, allowed, used, requested }),
                "{limit}"
            );
        }
        let message =
            QuotaExceeded { limit: QuotaLimit::Instances, allowed: 2, used: 2, requested: 1 }
                .to_string();
        assert_eq!(
            message,
            "quota exceeded: instances allows 2, 2 in use, this request asks for 1 more"
        );
    }

    #[test]
    fn an_override_replaces_only_what_it_names() {
        let overrides = QuotaOverride { instances: Some(50), ..QuotaOverride::default() };
        let quota = Quota::default().with(&overrides);
        assert_eq!(quota.instances, 50);
        assert_eq!(quota.memory_mib, Quota::default().memory_mib);
        assert!(QuotaOverride::default().is_empty() && !overrides.is_empty());
        let json = serde_json::to_string(&overrides).unwrap();
        assert_eq!(json, r#"{"instances":50}"#);
        assert!(serde_json::from_str::<QuotaOverride>(r#"{"cpus":1}"#).is_err());
    }
}
