//! The container runtime port: what provisioning needs from an engine.
//!
//! Provisioning (the HTTP API, the watcher, the lifecycle rule) speaks to an engine only
//! through [`ContainerRuntime`] and [`RuntimeWatch`], so it does not depend on which engine
//! runs the containers: `iaas-docker` implements both on a Docker engine, and another runtime
//! implements the same two traits. The types here are the words of that conversation:
//! containers and their labels and roles, the state of an instance's primary, the engine's
//! events in the platform's terms, and [`RuntimeError`].

mod error;
mod watch;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::patroni::{LeaderChange, PatroniCluster};
use crate::pgbackrest::{BackupCatalog, BackupKind, BackupSet};
use crate::{Instance, InstanceId, InstanceSpec, InstanceStatus, UserId};

pub use error::RuntimeError;
pub use watch::{RuntimeEvent, RuntimeEventStream, RuntimeWatch};

/// Label marking every container, volume and network the platform manages.
pub const LABEL_MANAGED: &str = "iaas.managed";
/// Label naming the instance a container belongs to.
pub const LABEL_INSTANCE: &str = "iaas.instance";
/// Label naming the instance's owner.
pub const LABEL_OWNER: &str = "iaas.owner";
/// Label naming the instance's kind (`postgres`, `nginx`, `docker`).
pub const LABEL_KIND: &str = "iaas.kind";
/// Label naming the container's role in its cluster (`primary`, `replica-1`, ...).
pub const LABEL_ROLE: &str = "iaas.role";

/// Secret settings for a container (passwords): passed to the engine, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one secret.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// These secrets but the one named `key`.
    #[must_use]
    pub fn without(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }

    /// The secret named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every secret, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The role of an instance's first (or only) container.
pub const PRIMARY: &str = "primary";

/// The role of a highly available PostgreSQL cluster's endpoint (HAProxy): what clients
/// connect to, so what decides the instance's status, as a primary does elsewhere. Its members
/// (`member-0`, `member-1`, ...) take turns as primary, so none of them can.
pub const ENDPOINT: &str = "endpoint";

/// The role of the store a highly available cluster's members elect their primary through
/// (etcd).
pub const STORE: &str = "store";

/// What the role of every member of a highly available PostgreSQL cluster starts with.
pub const MEMBER_PREFIX: &str = "member-";

/// The role of member `n` of a highly available PostgreSQL cluster.
pub fn member_role(n: u8) -> String {
    format!("{MEMBER_PREFIX}{n}")
}

/// Whether engine events about a container playing `role` (its `iaas.role` label) decide its
/// instance's status: the primary's (or a highly available cluster's endpoint's) do, a
/// replica's, a member's or the store's do not.
///
/// So a replica that stops, dies or is removed leaves a running cluster `running` (the core
/// life cycle has no `degraded` status); the cluster info shows that node with
/// `running: false`. The watcher, the reconciler and the cluster info all apply this rule, so
/// they never disagree. A container without a role label is a single node, hence a primary.
pub fn role_decides_status(role: &str) -> bool {
    role.is_empty() || role == PRIMARY || role == ENDPOINT
}

/// Whether a container playing `role` holds part of a highly available cluster's data (a
/// member or the store); see [`status_without_primary`].
pub fn holds_cluster_data(role: &str) -> bool {
    role == STORE || role.starts_with(MEMBER_PREFIX)
}

/// The status of an instance none of whose containers decides it any more (see
/// [`role_decides_status`]; its endpoint was removed, say), from the role of each container
/// left and whether it runs: `deleted` when none holds a highly available cluster's data (see
/// [`holds_cluster_data`]); else `failed` while one of them runs (the cluster is up but
/// unreachable, and the supervisor makes its endpoint again), `stopped` when none does (a
/// stopped cluster stays stopped; starting it makes the endpoint again).
pub fn status_without_primary<'a>(
    left: impl IntoIterator<Item = (&'a str, bool)>,
) -> InstanceStatus {
    let mut data_left = false;
    for (role, running) in left {
        if holds_cluster_data(role) {
            if running {
                return InstanceStatus::Failed;
            }
            data_left = true;
        }
    }
    if data_left { InstanceStatus::Stopped } else { InstanceStatus::Deleted }
}

/// `role` with a missing role label read as the primary's (a single node has no other).
pub fn role_or_primary(role: &str) -> &str {
    if role.is_empty() { PRIMARY } else { role }
}

/// The role of the container provisioning creates and starts last: the instance is up once it
/// runs (a runtime creates a PostgreSQL cluster's replicas in order, after the primary).
pub fn last_node_role(spec: &InstanceSpec) -> String {
    match spec {
        InstanceSpec::Postgres(pg) if pg.ha => ENDPOINT.to_owned(),
        InstanceSpec::Postgres(pg) if pg.replicas > 0 => format!("replica-{}", pg.replicas),
        _ => PRIMARY.to_owned(),
    }
}

/// Exit statuses of a main process ended by SIGKILL (128 + 9) and SIGTERM (128 + 15): what a
/// stop leaves (SIGTERM, then SIGKILL after the stop timeout).
const STOP_SIGNAL_EXIT_CODES: [i64; 2] = [137, 143];

/// Whether a container that exited with `code` was ended by the signals a stop sends.
pub fn exited_by_stop_signal(code: i64) -> bool {
    STOP_SIGNAL_EXIT_CODES.contains(&code)
}

/// 24 characters from an alphabet without look-alikes (about 139 bits): a database password
/// made for a tenant or kept inside the platform. Both the API (a tenant's password nobody
/// chose) and a runtime (its own superuser's) make them, so it lives beside the port.
pub fn random_password() -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // The largest multiple of the alphabet's size below 256: bytes at or above it are drawn
    // again, so no character is favoured.
    const LIMIT: u8 = (256 - 256 % ALPHABET.len()) as u8;
    let mut password = String::with_capacity(24);
    let mut bytes = [0u8; 48];
    while password.len() < 24 {
        getrandom::getrandom(&mut bytes)
            .map_err(|err| format!("no randomness for a password: {err}"))?;
        for byte in bytes.iter().filter(|b| **b < LIMIT).take(24 - password.len()) {
            password.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
        }
    }
    Ok(password)
}

/// A container the runtime created for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// Engine id.
    pub id: String,
    /// Name (`iaas-{instance}-{role}`).
    pub name: String,
    /// Role in the cluster.
    pub role: String,
}

/// A managed container as the engine sees it (what the reconciler compares with the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Engine id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The instance it belongs to.
    pub instance: InstanceId,
    /// The instance's owner.
    pub owner: Option<UserId>,
    /// Role in the cluster.
    pub role: String,
    /// Whether it is running.
    pub running: bool,
}

/// Creates and runs instances as containers.
///
/// Every operation is idempotent by instance id: provisioning an instance that already has its
/// containers returns them, stopping a stopped one succeeds, removing a removed one succeeds.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Whether this runtime would run `instance` as specified: the checks of its own policy
    /// (which host ports may be chosen, say) made before anything is stored or created, with
    /// no engine call. [`provision`](Self::provision) makes them again. The default admits
    /// everything.
    fn admit(&self, instance: &Instance) -> Result<(), RuntimeError> {
        let _ = instance;
        Ok(())
    }

    /// Whether the engine answers now. Creation asks before anything is stored, so a request
    /// made while there is no engine is refused (503) instead of leaving an instance that can
    /// only fail. The default answers yes.
    async fn ready(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The secrets `instance` is made with: `given` (the application's credentials and what
    /// the caller chose) and, beside them, those the runtime needs for itself, drawn at random.
    /// The platform asks before it keeps them, so every process that provisions the instance,
    /// or makes a lost part of it again, uses the same ones. The default adds nothing.
    fn complete_secrets(
        &self,
        instance: &Instance,
        given: &Secrets,
    ) -> Result<Secrets, RuntimeError> {
        let _ = instance;
        Ok(given.clone())
    }

    /// Creates and starts the instance's containers (with its volume and network). A failure
    /// half-way removes what this call created.
    async fn provision(
        &self,
        instance: &Instance,
        secrets: &Secrets,
    ) -> Result<Vec<ContainerRef>, RuntimeError>;

    /// Starts every container of the instance.
    async fn start(&self, instance: InstanceId) -> Result<(), RuntimeError>;

    /// Stops every container of the instance (SIGTERM, then SIGKILL after the stop timeout).
    async fn stop(&self, instance: InstanceId) -> Result<(), RuntimeError>;

    /// Restarts every container of the instance.
    async fn restart(&self, instance: InstanceId) -> Result<(), RuntimeError>;

    /// Removes the instance's containers and network; with `purge`, its volumes (data) too.
    async fn remove(&self, instance: InstanceId, purge: bool) -> Result<(), RuntimeError>;

    /// [`remove`](Self::remove) with the instance at hand: a runtime that learns the owner
    /// from the containers (for the network their instances share) learns it from `instance`
    /// when there is no container left to ask, as after a provisioning that failed before
    /// making one.
    async fn remove_instance(&self, instance: &Instance, purge: bool) -> Result<(), RuntimeError> {
        self.remove(instance.id, purge).await
    }

    /// Every managed container, running or not.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError>;

    /// The instance's primary container as the engine describes it now
    /// ([`PrimaryState::gone`] when it has none): what the outcome of an action is read from
    /// once the engine call returned (provisioning's lifecycle rule reads it).
    async fn primary_state(&self, instance: InstanceId) -> Result<PrimaryState, RuntimeError>;

    /// The members of the highly available PostgreSQL cluster `instance` as its own election
    /// sees them (Patroni's view, read from a running member); `None` when no member answers
    /// (all down, or the instance is not such a cluster). The default knows of no cluster.
    async fn cluster_members(
        &self,
        instance: InstanceId,
    ) -> Result<Option<PatroniCluster>, RuntimeError> {
        let _ = instance;
        Ok(None)
    }

    /// A planned switchover of the highly available cluster `instance`: the primary hands
    /// over to `candidate` (by default the up replica with the least lag) and follows it.
    /// Returns the change made. Refused (`Unsupported`) by runtimes without such clusters.
    async fn switchover(
        &self,
        instance: InstanceId,
        candidate: Option<&str>,
    ) -> Result<LeaderChange, RuntimeError> {
        let _ = (instance, candidate);
        Err(RuntimeError::Unsupported { what: "switchover".to_owned() })
    }

    /// Takes a base backup of the highly available cluster `instance` into its backup
    /// repository, on its primary, and returns it once it is complete; then keeps `keep_full`
    /// full backups (with what depends on them), or the runtime's default number when `None`.
    /// Refused (`Unsupported`) by runtimes without such clusters.
    async fn backup(
        &self,
        instance: InstanceId,
        kind: BackupKind,
        keep_full: Option<u8>,
    ) -> Result<BackupSet, RuntimeError> {
        let _ = (instance, kind, keep_full);
        Err(RuntimeError::Unsupported { what: "backups".to_owned() })
    }

    /// The backups of the highly available cluster `instance` and the WAL archived beside
    /// them. Refused (`Unsupported`) by runtimes without such clusters.
    async fn backups(&self, instance: InstanceId) -> Result<BackupCatalog, RuntimeError> {
        let _ = instance;
        Err(RuntimeError::Unsupported { what: "backups".to_owned() })
    }

    /// Brings back what a highly available cluster lost: starts its containers that stopped
    /// and makes again those that were removed (a member from its siblings' settings, with a
    /// fresh data volume it fills from the primary), except the roles in `keep_down`. `kept`
    /// holds the platform's own secrets of the cluster (empty when none were kept): when no
    /// member is left to copy settings from, a member whose data survived is made again with
    /// them. Returns the roles brought back. The default brings back nothing.
    async fn repair(
        &self,
        instance: &Instance,
        keep_down: &[String],
        kept: &Secrets,
    ) -> Result<Vec<String>, RuntimeError> {
        let _ = (instance, keep_down, kept);
        Ok(Vec::new())
    }

    /// Gives `role` of the PostgreSQL instance `instance` the password `password`, on its
    /// primary. Refused (`Unsupported`) by runtimes and kinds without such roles.
    async fn change_password(
        &self,
        instance: InstanceId,
        role: &str,
        password: &str,
    ) -> Result<(), RuntimeError> {
        let _ = (instance, role, password);
        Err(RuntimeError::Unsupported { what: "passwords".to_owned() })
    }

    /// Removes the members of a highly available cluster beyond its spec's replica count,
    /// with their data, handing the primary over first when it is one of them (it is then
    /// removed by a later call). The default removes nothing.
    async fn retire_surplus(&self, instance: &Instance) -> Result<Retired, RuntimeError> {
        let _ = instance;
        Ok(Retired::default())
    }
}

/// What [`ContainerRuntime::retire_surplus`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retired {
    /// The roles of the members removed.
    pub removed: Vec<String>,
    /// The hand-over of a primary beyond the replica count to a member that stays.
    pub handed_over: Option<crate::patroni::LeaderChange>,
}

/// An instance's primary container as the engine describes it: what provisioning's lifecycle
/// rule reads to decide an action's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrimaryState {
    /// Its engine id (empty when there is none).
    pub container_id: String,
    /// Its name.
    pub name: String,
    /// The status its state stands for; `deleted` when there is no primary container.
    pub status: InstanceStatus,
    /// The exit status of its main process, once it exited.
    pub exit_code: Option<i64>,
    /// When its main process last started (RFC 3339, as the engine says).
    pub started_at: Option<String>,
    /// When the engine was seen in this state (the event's time, or when the inspection
    /// began): the time the change is recorded at.
    pub observed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl PrimaryState {
    /// No primary container is left.
    pub fn gone() -> Self {
        Self {
            container_id: String::new(),
            name: String::new(),
            status: InstanceStatus::Deleted,
            exit_code: None,
            started_at: None,
            observed_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_decides() {
        assert!(role_decides_status("primary"));
        assert!(role_decides_status(""), "a container without a role is a single node");
        assert!(!role_decides_status("replica-1"));
    }

    #[test]
    fn the_last_node_is_the_last_replica() {
        use crate::{NginxSpec, PostgresSpec};
        let pg = |replicas| InstanceSpec::Postgres(PostgresSpec::new("app", replicas));
        assert_eq!(last_node_role(&pg(0)), "primary");
        assert_eq!(last_node_role(&pg(2)), "replica-2");
        assert_eq!(last_node_role(&InstanceSpec::Nginx(NginxSpec::default())), "primary");
        assert_eq!(role_or_primary(""), "primary");
        assert_eq!(role_or_primary("replica-1"), "replica-1");
    }

    #[test]
    fn only_the_signals_of_a_stop_count_as_one() {
        assert!(exited_by_stop_signal(137));
        assert!(exited_by_stop_signal(143));
        assert!(!exited_by_stop_signal(0));
        assert!(!exited_by_stop_signal(139));
    }

    #[test]
    fn an_instance_without_its_primary_is_what_its_cluster_data_left_says() {
        use InstanceStatus::{Deleted, Failed, Stopped};
        assert_eq!(status_without_primary([]), Deleted);
        assert_eq!(status_without_primary([("replica-1", true)]), Deleted, "no cluster data");
        assert_eq!(status_without_primary([("member-0", false), ("store", true)]), Failed);
        assert_eq!(status_without_primary([("member-1", true)]), Failed);
        assert_eq!(status_without_primary([("member-0", false), ("store", false)]), Stopped);
    }

    #[test]
    fn random_passwords_are_long_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert!(matches!((&a, &b), (Ok(a), Ok(b)) if a.len() == 24 && a != b), "{a:?} {b:?}");
    }

    #[test]
    fn secrets_never_show_their_values() {
        let secrets = Secrets::new().with("POSTGRES_PASSWORD", "s3cret");
        assert_eq!(secrets.get("POSTGRES_PASSWORD"), Some("s3cret"));
        assert!(!format!("{secrets:?}").contains("s3cret"));
    }
}
