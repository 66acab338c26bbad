//! Networks: one bridge network per user.
//!
//! Every container of one user's instances joins that user's network (`{prefix}-user-{owner}`),
//! so a user's app reaches the same user's database by the database instance's name, as on a
//! PaaS. A primary answers to its instance's name (`orders`), each replica to the name and its
//! role (`replica-1.orders`: the dot keeps it from ever being another instance's name, which
//! cannot hold one); every container also answers to its container name, which
//! replicas use to find their primary. Different users' containers share no network: their
//! names do not resolve across, and the engine's isolation rules drop traffic between
//! different bridge networks, so one user's container cannot open a connection to another's
//! even by address.
//!
//! A network is created with the user's first instance and removed with the last one's
//! containers. Instances made by releases with one network per instance (`{prefix}-{id}`)
//! join their user's network through [`DockerRuntime::join_user_networks`] (the platform runs
//! it at start) and keep their old network too, because their replicas reach the primary by
//! the `primary` alias on it; it is removed with them.

use std::collections::HashMap;

use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkCreateRequest};
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
};
use iaas_core::{Instance, InstanceId, UserId};

use crate::connection::EngineConnection;
use crate::engine::DockerRuntime;
use crate::error::from_bollard;
use iaas_core::RuntimeError;
use iaas_core::runtime::{ENDPOINT, MEMBER_PREFIX, PRIMARY};
use iaas_core::runtime::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_OWNER, LABEL_ROLE};

/// What [`DockerRuntime::join_user_networks`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkMigration {
    /// Containers connected to their user's network.
    pub joined: usize,
    /// Containers that already were.
    pub already: usize,
}

/// The names a container answers to on its user's network, besides its container name.
///
/// The primary of a plain instance, or the endpoint of a highly available cluster, answers to
/// the instance's name; any other container to `{role}.{name}`. The members of a highly
/// available cluster also answer, all together, to the alias the endpoint finds them by.
pub(crate) fn aliases(instance: &Instance, role: &str) -> Vec<String> {
    if role == PRIMARY || role == ENDPOINT {
        return vec![instance.name.to_string()];
    }
    let mut aliases = vec![format!("{role}.{}", instance.name)];
    if role.starts_with(MEMBER_PREFIX) {
        aliases.push(crate::plan_ha::members_alias(instance));
    }
    aliases
}

/// The host interface of `owner`'s network: [`BRIDGE_PREFIX`] and the first 10 hex digits of
/// the owner id (an interface name has at most 15 characters).
pub fn bridge_name(owner: UserId) -> String {
    let hex: String = owner.to_string().chars().filter(char::is_ascii_hexdigit).take(10).collect();
    format!("{BRIDGE_PREFIX}{hex}")
}

/// The prefix of every user network's host interface, so one firewall rule can name them all
/// (`-i iaasu+`, see [`crate::firewall`]).
pub const BRIDGE_PREFIX: &str = "iaasu";

/// Whether `err` says the network is still used by containers (the engine answers 403 or 409).
fn in_use(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 403 | 409, .. })
}

/// Whether a network create was refused because the name or the bridge name is taken.
fn already_made(err: &bollard::errors::Error) -> bool {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            *status_code == 409 || message.contains("same bridge name")
        }
        _ => false,
    }
}

fn not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerRuntime {
    /// The network of `owner`'s containers.
    pub fn user_network(&self, owner: UserId) -> String {
        format!("{}-user-{owner}", self.config.name_prefix)
    }

    /// The network one instance had to itself before networks were per user.
    pub(crate) fn instance_network(&self, instance: InstanceId) -> String {
        format!("{}-{instance}", self.config.name_prefix)
    }

    /// Creates `owner`'s network unless it exists; returns its name.
    pub(crate) async fn ensure_user_network(&self, owner: UserId) -> Result<String, RuntimeError> {
        let name = self.user_network(owner);
        match self.client()?.inspect_network(&name, None::<InspectNetworkOptions>).await {
            Ok(_) => return Ok(name),
            Err(err) if not_found(&err) => {}
            Err(err) => {
                return Err(from_bollard(format!("inspecting network {name}"), err));
            }
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_OWNER.to_owned(), owner.to_string()),
            (LABEL_ROLE.to_owned(), "network".to_owned()),
        ]);
        let created = self
            .client()?
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                labels: Some(labels),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.name".to_owned(),
                    bridge_name(owner),
                )])),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => Ok(name),
            // Made by a concurrent call: engines before API 1.44 do not refuse a second
            // network of the same name, but the bridge name is unique, so they refuse that.
            // The bridge name could also be another user's (40 bits of the owner id): the
            // network must then exist under this user's name, or the refusal stands.
            Err(err) if already_made(&err) => {
                match self.client()?.inspect_network(&name, None::<InspectNetworkOptions>).await {
                    Ok(_) => Ok(name),
                    Err(_) => Err(from_bollard(format!("creating network {name}"), err)),
                }
            }
            Err(err) => Err(from_bollard(format!("creating network {name}"), err)),
        }
    }

    /// After an instance's containers are gone: removes its own network (left by an older
    /// release), and its owner's network unless other containers still use it. The first
    /// failure is returned after both were tried.
    pub(crate) async fn release_networks(
        &self,
        instance: InstanceId,
        owner: Option<UserId>,
    ) -> Result<(), RuntimeError> {
        let mut first_error = None;
        let mut networks = vec![self.instance_network(instance)];
        if let Some(owner) = owner {
            // The engine refuses to remove a network only while a *running* container uses
            // it; a stopped one would lose its network and never start again. So the user's
            // network goes only when no container of theirs is left at all. A provisioning
            // that made the network just before this removes it again recreates it (see
            // `create_one`).
            match owner_has_containers(&self.engine, owner).await {
                Ok(true) => {}
                Ok(false) => networks.push(self.user_network(owner)),
                Err(err) => first_error = Some(err),
            }
        }
        for network in networks {
            if let Err(err) = remove(&self.engine, &network).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Connects every container of `instances` that is not on its owner's network yet to it,
    /// with the aliases new containers get. Idempotent; meant for the start of a platform
    /// whose instances may come from a release with one network per instance.
    pub async fn join_user_networks(
        &self,
        instances: &[Instance],
    ) -> Result<NetworkMigration, RuntimeError> {
        let mut report = NetworkMigration::default();
        let by_id: HashMap<InstanceId, &Instance> =
            instances.iter().map(|instance| (instance.id, instance)).collect();
        // One listing of every managed container, not one per instance: this runs at each start.
        let label = format!("{LABEL_MANAGED}=true");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = self
            .client()?
            .list_containers(Some(options))
            .await
            .map_err(|err| from_bollard("listing managed containers", err))?;
        let mut ensured = std::collections::HashSet::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            let instance = labels
                .get(LABEL_INSTANCE)
                .and_then(|id| id.parse::<InstanceId>().ok())
                .and_then(|id| by_id.get(&id).copied());
            let (Some(instance), Some(id)) = (instance, container.id) else { continue };
            let network = self.user_network(instance.owner);
            let attached = container
                .network_settings
                .and_then(|settings| settings.networks)
                .is_some_and(|networks| networks.contains_key(&network));
            if attached {
                report.already += 1;
                continue;
            }
            if ensured.insert(instance.owner) {
                self.ensure_user_network(instance.owner).await?;
            }
            let role = labels.get(LABEL_ROLE).map_or(PRIMARY, String::as_str);
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases(instance, role)),
                    ..Default::default()
                }),
            };
            // A container provisioned since the listing may be on the network by now, or gone.
            match self.client()?.connect_network(&network, request).await {
                Ok(()) => report.joined += 1,
                Err(err) if is_already_connected(&err) => report.already += 1,
                Err(err) if is_container_gone(&err) => {}
                Err(err) => {
                    return Err(from_bollard(
                        format!("connecting container {id} to network {network}"),
                        err,
                    ));
                }
            }
        }
        Ok(report)
    }
}

/// Whether any container of `owner`'s, running or not, exists on `engine`.
async fn owner_has_containers(
    engine: &EngineConnection,
    owner: UserId,
) -> Result<bool, RuntimeError> {
    let label = format!("{LABEL_OWNER}={owner}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::new().all(true).limit(1).filters(&filters);
    let found = engine
        .client()?
        .list_containers(Some(options.build()))
        .await
        .map_err(|err| from_bollard(format!("listing the containers of user {owner}"), err))?;
    Ok(!found.is_empty())
}

/// The user networks on `engine` whose owner has no container left, running or not, with
/// their owners (see `RuntimeWatch::unused_networks`); owners in `busy` are not asked about.
pub(crate) async fn unused(
    engine: &EngineConnection,
    busy: &std::collections::HashSet<UserId>,
) -> Result<Vec<(UserId, String)>, RuntimeError> {
    let managed = format!("{LABEL_MANAGED}=true");
    let role = format!("{LABEL_ROLE}=network");
    let filters = HashMap::from([("label", vec![managed.as_str(), role.as_str()])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let networks = engine
        .client()?
        .list_networks(Some(options))
        .await
        .map_err(|err| from_bollard("listing the user networks", err))?;
    let mut unused = Vec::new();
    for network in networks {
        let owner = network
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_OWNER))
            .and_then(|owner| owner.parse::<UserId>().ok());
        let (Some(owner), Some(name)) = (owner, network.name) else { continue };
        if !busy.contains(&owner) && !owner_has_containers(engine, owner).await? {
            unused.push((owner, name));
        }
    }
    Ok(unused)
}

/// Removes the network `name` from `engine`; `Ok(false)` when it was gone or is in use.
pub(crate) async fn remove(engine: &EngineConnection, name: &str) -> Result<bool, RuntimeError> {
    match engine.client()?.remove_network(name).await {
        Ok(()) => Ok(true),
        Err(err) if not_found(&err) || in_use(&err) => Ok(false),
        Err(err) => Err(from_bollard(format!("removing network {name}"), err)),
    }
}

/// The engine's answer to connecting a container removed meanwhile (a missing network is a
/// 404 too, and an error).
fn is_container_gone(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message }
            if message.contains("No such container")
    )
}

/// The engine's answer to connecting a container that already is on the network.
fn is_already_connected(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { message, .. }
            if message.contains("already exists in network")
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::{InstanceName, InstanceSpec, PostgresSpec, Resources};

    use super::*;

    #[test]
    fn a_container_already_on_the_network_or_gone_is_told_from_other_refusals() {
        let refusal =
            |status_code, message: &str| bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.to_owned(),
            };
        assert!(is_already_connected(&refusal(
            403,
            "endpoint with name iaas-x-primary already exists in network iaas-user-y"
        )));
        assert!(!is_already_connected(&refusal(404, "No such container: abc")));
        assert!(!is_already_connected(&refusal(404, "network iaas-user-y not found")));
        assert!(is_container_gone(&refusal(404, "No such container: abc")));
        assert!(!is_container_gone(&refusal(404, "network iaas-user-y not found")));
    }

    #[test]
    fn a_replica_alias_can_never_be_an_instance_name() {
        let orders = Instance::new(
            UserId::new_random(),
            InstanceName::new("orders").unwrap(),
            InstanceSpec::Postgres(PostgresSpec::new("app", 1)),
            Resources::default(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(aliases(&orders, PRIMARY), ["orders"]);
        let replica = aliases(&orders, "replica-1");
        assert_eq!(replica, ["replica-1.orders"]);
        assert!(InstanceName::new(replica[0].clone()).is_err());
    }

    #[test]
    fn a_bridge_name_fits_an_interface_name() {
        let name = bridge_name(UserId::new_random());
        assert!(name.starts_with(BRIDGE_PREFIX) && name.len() == 15, "{name}");
    }
}
