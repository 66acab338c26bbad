//! Instances: what a user asked the platform to run.
//!
//! An [`Instance`] is one logical piece of infrastructure (a PostgreSQL cluster, an Nginx site, a
//! generic Docker service) owned by one user. Its [`InstanceSpec`] says what to run; the runtime
//! crate turns the spec into containers. The kind is derived from the spec, so the two can never
//! disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{InstanceId, UserId, truncate_for_error};
use crate::status::InstanceStatus;

/// The kinds of infrastructure the platform knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceKind {
    /// PostgreSQL, a single node or a primary with streaming replicas.
    Postgres,
    /// Nginx serving a user-provided site configuration.
    Nginx,
    /// Any Docker image with env, ports and command.
    Docker,
    /// Kubernetes: part of the model, refused until a runtime can provide it.
    K8s,
}

impl InstanceKind {
    /// Every kind, in declaration order.
    pub const ALL: [InstanceKind; 4] =
        [InstanceKind::Postgres, InstanceKind::Nginx, InstanceKind::Docker, InstanceKind::K8s];

    /// The lowercase name used in event names (`postgres.created`), JSON and SQL.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Postgres => "postgres",
            InstanceKind::Nginx => "nginx",
            InstanceKind::Docker => "docker",
            InstanceKind::K8s => "k8s",
        }
    }
}

impl fmt::Display for InstanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        InstanceKind::ALL.into_iter().find(|kind| kind.as_str() == s).ok_or_else(|| {
            Error::invalid("kind", format!("unknown instance kind {:?}", truncate_for_error(s)))
        })
    }
}

/// A validated instance name: 1 to 63 characters of lowercase ASCII letters, digits and `-`,
/// starting with a letter and not ending with `-` (a DNS label, so it can name containers,
/// volumes, networks and host names unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

impl InstanceName {
    /// Longest accepted name (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let problem = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > Self::MAX_LEN {
            Some("must be at most 63 characters")
        } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            Some("must start with a lowercase letter")
        } else if name.ends_with('-') {
            Some("must not end with '-'")
        } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            Some("may contain only lowercase letters, digits and '-'")
        } else {
            None
        };
        match problem {
            Some(reason) => {
                Err(Error::invalid("name", format!("{:?} {reason}", truncate_for_error(&name))))
            }
            None => Ok(Self(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceName {
    type Error = Error;

    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<InstanceName> for String {
    fn from(name: InstanceName) -> Self {
        name.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// CPU and memory limits applied to every container of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in thousandths of a core (`500` = half a core).
    pub millicpus: u32,
    /// Memory limit in MiB.
    pub memory_mib: u32,
}

impl Resources {
    /// Smallest memory limit accepted; PostgreSQL does not start reliably below it.
    pub const MIN_MEMORY_MIB: u32 = 32;

    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<()> {
        if self.millicpus == 0 {
            return Err(Error::invalid("resources.millicpus", "must be greater than 0"));
        }
        if self.memory_mib < Self::MIN_MEMORY_MIB {
            return Err(Error::invalid(
                "resources.memory_mib",
                format!("must be at least {} MiB", Self::MIN_MEMORY_MIB),
            ));
        }
        Ok(())
    }
}

impl Default for Resources {
    /// Half a core and 256 MiB: enough for a small PostgreSQL or Nginx.
    fn default() -> Self {
        Self { millicpus: 500, memory_mib: 256 }
    }
}

/// A PostgreSQL cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// Name of the database created for the user.
    pub database: String,
    /// Number of streaming replicas beside the primary (0 = single node).
    #[serde(default)]
    pub replicas: u8,
    /// Managed for high availability: the members elect their primary (Patroni over etcd), a
    /// replica is promoted when the primary is lost, a lost member is made again, WAL is
    /// archived for backups and point-in-time restore (pgBackRest), and clients connect
    /// through two stable endpoints (read-write and read-only) that follow the primary. Needs
    /// at least one replica. Omitted from the wire form when off, so specs stored before it
    /// existed read back unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ha: bool,
    /// With `ha`: a commit returns only once one replica has it too (synchronous replication),
    /// so a failover loses no acknowledged transaction, at the cost of a round trip per commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synchronous: bool,
    /// With `ha`: start from another highly available cluster's backups instead of an empty
    /// database (point-in-time restore). The source keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// With `ha`: base backups the platform takes by itself, and how many it keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<BackupSchedule>,
}

/// Scheduled base backups of a highly available cluster: a full backup whenever the newest
/// one is `every_hours` old (at once when there is none), and `keep` full backups kept, with
/// the WAL and the backups that depend on them, whether the schedule took them or a user asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    /// Hours between two full backups (1 to 720).
    pub every_hours: u16,
    /// Full backups kept (1 to 30); the oldest go when a new one is complete.
    pub keep: u8,
}

impl BackupSchedule {
    /// Longest interval, in hours (30 days).
    pub const MAX_EVERY_HOURS: u16 = 720;
    /// Most full backups kept.
    pub const MAX_KEEP: u8 = 30;

    /// The interval between two backups.
    pub fn every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.every_hours) * 3600)
    }
}

/// Where a restored cluster starts from: a cluster of the same owner, and the moment to
/// restore (the latest the archive holds when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSpec {
    /// The highly available cluster whose backups and archived WAL are read.
    pub from: InstanceId,
    /// Replay WAL up to this moment (RFC 3339); a backup that ended before it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<DateTime<Utc>>,
}

impl PostgresSpec {
    /// Most replicas one cluster may have.
    pub const MAX_REPLICAS: u8 = 5;

    /// A cluster of a primary and `replicas` streaming replicas, not highly available.
    pub fn new(database: impl Into<String>, replicas: u8) -> Self {
        Self {
            database: database.into(),
            replicas,
            ha: false,
            synchronous: false,
            restore: None,
            backup_schedule: None,
        }
    }

    /// The same cluster, highly available (see [`ha`](Self::ha)).
    #[must_use]
    pub fn highly_available(mut self) -> Self {
        self.ha = true;
        self
    }

    /// The same cluster with synchronous replication (see [`synchronous`](Self::synchronous)).
    #[must_use]
    pub fn synchronous(mut self) -> Self {
        self.synchronous = true;
        self
    }

    /// Database names a tenant may not take: the server's own. The application role owns its
    /// database, and the platform's superuser connects to `postgres`; a tenant owning that one
    /// could change what the superuser's statements run.
    pub const RESERVED_DATABASES: [&'static str; 3] = ["postgres", "template0", "template1"];
}

/// An Nginx server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxSpec {
    /// A `server { ... }` block to serve; the image's default page when absent.
    #[serde(default)]
    pub site_config: Option<String>,
}

/// A container port to publish (TCP), on a host port the engine picks or on a chosen one.
///
/// On the wire an entry is either the container port alone (`80`, an ephemeral host port, the
/// form every spec had before host ports could be chosen) or `{"container": 80, "host": 18080}`
/// (`host` may be omitted). It is written back in the short form whenever `host` is `None`, so
/// stored specs keep their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMapping {
    /// The port the service listens on inside the container.
    pub container: u16,
    /// The host port to publish it on; `None` lets the engine pick a free one.
    pub host: Option<u16>,
}

impl PortMapping {
    /// Lowest host port a spec may choose. Ports below it are privileged: on the host they
    /// belong to its own services (ssh, a front proxy on 80/443, ...), and the engine, running
    /// as root, would bind them for any user who asked. Container ports have no such limit.
    pub const MIN_HOST_PORT: u16 = 1024;

    /// `container` published on an ephemeral host port.
    pub const fn ephemeral(container: u16) -> Self {
        Self { container, host: None }
    }

    /// `container` published on host port `host`.
    pub const fn on_host(container: u16, host: u16) -> Self {
        Self { container, host: Some(host) }
    }
}

impl From<u16> for PortMapping {
    fn from(container: u16) -> Self {
        Self::ephemeral(container)
    }
}

impl Serialize for PortMapping {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self.host {
            None => serializer.serialize_u16(self.container),
            Some(host) => {
                let mut mapping = serializer.serialize_struct("PortMapping", 2)?;
                mapping.serialize_field("container", &self.container)?;
                mapping.serialize_field("host", &host)?;
                mapping.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        /// The long form, with serde's own messages for unknown or missing fields.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            container: u16,
            #[serde(default)]
            host: Option<u16>,
        }

        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PortMapping;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a port number (80) or {"container": 80, "host": 18080}"#)
            }

            fn visit_u64<E: serde::de::Error>(
                self,
                port: u64,
            ) -> std::result::Result<PortMapping, E> {
                u16::try_from(port).map(PortMapping::ephemeral).map_err(|_| {
                    E::invalid_value(
                        serde::de::Unexpected::Unsigned(port),
                        &"a port number (0-65535)",
                    )
                })
            }

            fn visit_i64<E: serde::de::Error>(
                self,
                port: i64,
            ) -> std::result::Result<PortMapping, E> {
                u64::try_from(port)
                    .map_err(|_| {
                        E::invalid_value(
                            serde::de::Unexpected::Signed(port),
                            &"a port number (0-65535)",
                        )
                    })
                    .and_then(|port| self.visit_u64(port))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<PortMapping, A::Error> {
                let long = Long::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PortMapping { container: long.container, host: long.host })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// A generic Docker service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSpec {
    /// Image reference (`repository:tag`).
    pub image: String,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container ports to publish (TCP), each on an ephemeral or a chosen host port.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Command overriding the image's default.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// What to run, per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstanceSpec {
    /// See [`PostgresSpec`].
    Postgres(PostgresSpec),
    /// See [`NginxSpec`].
    Nginx(NginxSpec),
    /// See [`DockerSpec`].
    Docker(DockerSpec),
    /// Kubernetes; always refused by [`InstanceSpec::validate`] for now.
    K8s,
}

impl InstanceSpec {
    /// The kind this spec describes.
    pub const fn kind(&self) -> InstanceKind {
        match self {
            InstanceSpec::Postgres(_) => InstanceKind::Postgres,
            InstanceSpec::Nginx(_) => InstanceKind::Nginx,
            InstanceSpec::Docker(_) => InstanceKind::Docker,
            InstanceSpec::K8s => InstanceKind::K8s,
        }
    }

    /// Whether this is a highly available PostgreSQL cluster ([`PostgresSpec::ha`]).
    pub const fn is_highly_available(&self) -> bool {
        matches!(self, InstanceSpec::Postgres(pg) if pg.ha)
    }

    /// Checks the spec can be provisioned.
    pub fn validate(&self) -> Result<()> {
        match self {
            InstanceSpec::Postgres(pg) => {
                let db = &pg.database;
                let valid = !db.is_empty()
                    && db.len() <= 63
                    && db.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && db
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(Error::invalid(
                        "spec.database",
                        "must be 1-63 characters of lowercase letters, digits and '_', not starting with a digit",
                    ));
                }
                if PostgresSpec::RESERVED_DATABASES.contains(&db.as_str()) {
                    return Err(Error::invalid(
                        "spec.database",
                        format!("{db:?} belongs to the server itself; choose another name"),
                    ));
                }
                if pg.replicas > PostgresSpec::MAX_REPLICAS {
                    return Err(Error::invalid(
                        "spec.replicas",
                        format!("must be at most {}", PostgresSpec::MAX_REPLICAS),
                    ));
                }
                if pg.ha && pg.replicas == 0 {
                    return Err(Error::invalid(
                        "spec.replicas",
                        "must be at least 1 with ha: a failover needs a replica to promote",
                    ));
                }
                if pg.restore.is_some() && !pg.ha {
                    return Err(Error::invalid(
                        "spec.restore",
                        "needs ha: only highly available clusters are backed up and restored",
                    ));
                }
                if let Some(schedule) = pg.backup_schedule {
                    if !pg.ha {
                        return Err(Error::invalid(
                            "spec.backup_schedule",
                            "needs ha: only highly available clusters are backed up",
                        ));
                    }
                    if !(1..=BackupSchedule::MAX_EVERY_HOURS).contains(&schedule.every_hours) {
                        return Err(Error::invalid(
                            "spec.backup_schedule.every_hours",
                            format!("must be 1 to {}", BackupSchedule::MAX_EVERY_HOURS),
                        ));
                    }
                    if !(1..=BackupSchedule::MAX_KEEP).contains(&schedule.keep) {
                        return Err(Error::invalid(
                            "spec.backup_schedule.keep",
                            format!("must be 1 to {}", BackupSchedule::MAX_KEEP),
                        ));
                    }
                }
                if pg.synchronous && !pg.ha {
                    return Err(Error::invalid(
                        "spec.synchronous",
                        "needs ha: synchronous replication is offered on highly available clusters",
                    ));
                }
                Ok(())
            }
            InstanceSpec::Nginx(_) => Ok(()),
            InstanceSpec::Docker(docker) => {
                if docker.image.trim().is_empty() {
                    return Err(Error::invalid("spec.image", "must not be empty"));
                }
                validate_ports(&docker.ports)?;
                if docker.env.keys().any(|k| k.is_empty() || k.contains('=')) {
                    return Err(Error::invalid(
                        "spec.env",
                        "variable names must be non-empty and contain no '='",
                    ));
                }
                Ok(())
            }
            InstanceSpec::K8s => Err(Error::Unsupported {
                what: "instances of kind k8s: no Kubernetes runtime is configured".to_owned(),
            }),
        }
    }
}

/// Port 0 is no port, a chosen host port must not be privileged, and no container or host port
/// may appear twice (the engine would refuse the second binding half-way through).
fn validate_ports(ports: &[PortMapping]) -> Result<()> {
    let mut containers = std::collections::BTreeSet::new();
    let mut hosts = std::collections::BTreeSet::new();
    for port in ports {
        if port.container == 0 {
            return Err(Error::invalid("spec.ports", "port 0 is not a port"));
        }
        if !containers.insert(port.container) {
            return Err(Error::invalid(
                "spec.ports",
                format!("container port {} is listed twice", port.container),
            ));
        }
        let Some(host) = port.host else { continue };
        if host == 0 {
            return Err(Error::invalid(
                "spec.ports",
                format!(
                    "host port 0 for container port {} is not a port; omit \"host\" to let the engine pick one",
                    port.container
                ),
            ));
        }
        if host < PortMapping::MIN_HOST_PORT {
            return Err(Error::invalid(
                "spec.ports",
                format!(
                    "host port {host} is privileged; choose one from {} up, or omit \"host\"",
                    PortMapping::MIN_HOST_PORT
                ),
            ));
        }
        if !hosts.insert(host) {
            return Err(Error::invalid("spec.ports", format!("host port {host} is listed twice")));
        }
    }
    Ok(())
}

/// One piece of infrastructure owned by one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its id.
    pub id: InstanceId,
    /// The user who owns it; only they may see or change it.
    pub owner: UserId,
    /// Unique per owner.
    pub name: InstanceName,
    /// What runs.
    pub spec: InstanceSpec,
    /// Limits applied to each container.
    pub resources: Resources,
    /// Where it is in its life cycle.
    pub status: InstanceStatus,
    /// Optimistic-concurrency version, incremented by every write; a writer that read version
    /// `n` may only write if the stored version is still `n`.
    pub version: u64,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Instance {
    /// A new instance in [`InstanceStatus::Provisioning`], after validating the spec and limits.
    pub fn new(
        owner: UserId,
        name: InstanceName,
        spec: InstanceSpec,
        resources: Resources,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        spec.validate()?;
        resources.validate()?;
        Ok(Self {
            id: InstanceId::new_random(),
            owner,
            name,
            spec,
            resources,
            status: InstanceStatus::Provisioning,
            version: 0,
            created_at: now,
            updated_at: now,
        })
    }

    /// The kind, derived from the spec.
    pub const fn kind(&self) -> InstanceKind {
        self.spec.kind()
    }

    /// Whether `user` owns this instance. Every read and write on behalf of a user checks this.
    pub fn is_owned_by(&self, user: UserId) -> bool {
        self.owner == user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for good in ["a", "db-1", "x".repeat(63).as_str()] {
            assert!(InstanceName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "1db", "-db", "db-", "Db", "db_1", "db.1", "ünï", &"x".repeat(64)] {
            let err = InstanceName::new(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid { field: "name", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn names_are_validated_when_deserialized() {
        assert!(serde_json::from_str::<InstanceName>("\"../etc\"").is_err());
        assert_eq!(serde_json::from_str::<InstanceName>("\"web\"").unwrap().as_str(), "web");
    }

    #[test]
    fn k8s_is_refused_with_a_clear_error() {
        let err = InstanceSpec::K8s.validate().unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }));
        assert!(err.to_string().contains("k8s"));
    }

    #[test]
    fn a_new_instance_is_provisioning_and_owned() {
        let owner = UserId::new_random();
        let spec = InstanceSpec::Postgres(PostgresSpec::new("app", 1));
        let instance = Instance::new(
            owner,
            InstanceName::new("db").unwrap(),
            spec,
            Resources::default(),
            now(),
        )
        .unwrap();
        assert_eq!(instance.status, InstanceStatus::Provisioning);
        assert_eq!(instance.kind(), InstanceKind::Postgres);
        assert!(instance.is_owned_by(owner));
        assert!(!instance.is_owned_by(UserId::new_random()));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (InstanceSpec::Postgres(PostgresSpec::new("", 0)), "spec.database"),
            (InstanceSpec::Postgres(PostgresSpec::new("app", 9)), "spec.replicas"),
            (InstanceSpec::Postgres(PostgresSpec::new("postgres", 0)), "spec.database"),
            (InstanceSpec::Postgres(PostgresSpec::new("template1", 0)), "spec.database"),
            (
                InstanceSpec::Docker(DockerSpec {
                    image: " ".into(),
                    env: BTreeMap::new(),
                    ports: vec![],
                    command: None,
                }),
                "spec.image",
            ),
        ];
        for (spec, field) in cases {
            match spec.validate() {
                Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{spec:?}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    fn service(ports: Vec<PortMapping>) -> InstanceSpec {
        InstanceSpec::Docker(DockerSpec {
            image: "web:1".into(),
            env: BTreeMap::new(),
            ports,
            command: None,
        })
    }

    #[test]
    fn a_port_entry_is_a_number_or_a_mapping() {
        let spec: DockerSpec = serde_json::from_str(
            r#"{"image":"web:1","ports":[80,{"container":443,"host":18443},{"container":9000}]}"#,
        )
        .unwrap();
        assert_eq!(
            spec.ports,
            [
                PortMapping::ephemeral(80),
                PortMapping::on_host(443, 18443),
                PortMapping::ephemeral(9000)
            ]
        );
        // Written back in the short form whenever no host port is chosen: stored specs keep
        // their shape and old readers still read them.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ports"], serde_json::json!([80, {"container": 443, "host": 18443}, 9000]));
        assert_eq!(serde_json::from_value::<DockerSpec>(json).unwrap(), spec);
    }

    #[test]
    fn malformed_port_entries_are_refused_when_deserialized() {
        for bad in [
            r#"[-1]"#,
            r#"[70000]"#,
            r#"["80"]"#,
            r#"[{"host":18080}]"#,
            r#"[{"container":80,"host":70000}]"#,
            r#"[{"container":80,"hostname":"x"}]"#,
            r#"[80.5]"#,
        ] {
            let json = format!(r#"{{"image":"web:1","ports":{bad}}}"#);
            assert!(serde_json::from_str::<DockerSpec>(&json).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn host_ports_are_validated() {
        assert!(service(vec![80.into(), PortMapping::on_host(443, 18443)]).validate().is_ok());
        let cases = [
            (vec![PortMapping::ephemeral(0)], "port 0"),
            (vec![PortMapping::on_host(80, 0)], "host port 0"),
            (vec![PortMapping::on_host(80, 80)], "privileged"),
            (vec![PortMapping::on_host(80, 1023)], "privileged"),
            (vec![80.into(), PortMapping::on_host(80, 18080)], "container port 80 is listed twice"),
            (
                vec![PortMapping::on_host(80, 18080), PortMapping::on_host(81, 18080)],
                "host port 18080 is listed twice",
            ),
        ];
        for (ports, why) in cases {
            match service(ports.clone()).validate() {
                Err(Error::Invalid { field: "spec.ports", reason }) => {
                    assert!(reason.contains(why), "{ports:?}: {reason}");
                }
                other => panic!("{ports:?}: expected invalid spec.ports, got {other:?}"),
            }
        }
        assert!(
            service(vec![PortMapping::on_host(80, PortMapping::MIN_HOST_PORT)]).validate().is_ok()
        );
    }

    #[test]
    fn resources_below_the_minimum_are_rejected() {
        let err = Resources { millicpus: 100, memory_mib: 4 }.validate().unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "resources.memory_mib", .. }));
    }

    #[test]
    fn spec_json_is_tagged_by_kind() {
        let spec = InstanceSpec::Nginx(NginxSpec::default());
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["kind"], "nginx");
        let back: InstanceSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }
}
