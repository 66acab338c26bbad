//! The container runtime port: what provisioning needs from an engine.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use iaas_core::{Instance, InstanceId, UserId};

use crate::error::DockerError;
use crate::lifecycle::PrimaryState;

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

    /// The secret named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// 24 characters from an alphabet without look-alikes (about 139 bits): a database password
/// made for a tenant or kept inside the platform.
pub(crate) fn random_password() -> Result<String, String> {
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
    fn admit(&self, instance: &Instance) -> Result<(), DockerError> {
        let _ = instance;
        Ok(())
    }

    /// Whether the engine answers now. Creation asks before anything is stored, so a request
    /// made while there is no engine is refused (503) instead of leaving an instance that can
    /// only fail. The default answers yes.
    async fn ready(&self) -> Result<(), DockerError> {
        Ok(())
    }

    /// Creates and starts the instance's containers (with its volume and network). A failure
    /// half-way removes what this call created.
    async fn provision(
        &self,
        instance: &Instance,
        secrets: &Secrets,
    ) -> Result<Vec<ContainerRef>, DockerError>;

    /// Starts every container of the instance.
    async fn start(&self, instance: InstanceId) -> Result<(), DockerError>;

    /// Stops every container of the instance (SIGTERM, then SIGKILL after the stop timeout).
    async fn stop(&self, instance: InstanceId) -> Result<(), DockerError>;

    /// Restarts every container of the instance.
    async fn restart(&self, instance: InstanceId) -> Result<(), DockerError>;

    /// Removes the instance's containers and network; with `purge`, its volumes (data) too.
    async fn remove(&self, instance: InstanceId, purge: bool) -> Result<(), DockerError>;

    /// Every managed container, running or not.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, DockerError>;

    /// The instance's primary container as the engine describes it now
    /// ([`PrimaryState::gone`] when it has none): what the outcome of an action is read from
    /// once the engine call returned (see [`outcome`](crate::outcome)).
    async fn primary_state(&self, instance: InstanceId) -> Result<PrimaryState, DockerError>;
}
