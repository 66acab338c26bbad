//! The instances the cluster reads of `iaas-load http` need: provisioned through the API at
//! setup, read during the run, deleted at the end.
//!
//! Each is a generic Docker service (by default the local busybox image running a long
//! `sleep`), the cheapest thing the platform runs, so the run measures the read path (auth,
//! store, cluster cache) rather than the container. The owners are the run's first users, in
//! turn; each reader uses an access token from a login of its owner that no worker rotates.

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::{Client, User};

/// How often the setup asks whether an instance is running yet.
const POLL: Duration = Duration::from_millis(250);
/// CPU limit of each instance, in thousandths of a core: a sleeping process needs none.
const MILLICPUS: u32 = 100;
/// Memory limit of each instance in MiB (the platform's minimum).
const MEMORY_MIB: u32 = 32;

/// What to provision.
#[derive(Debug, Clone)]
pub(crate) struct FleetSpec {
    /// How many instances.
    pub(crate) count: usize,
    /// Their image.
    pub(crate) image: String,
    /// Their command.
    pub(crate) command: Vec<String>,
    /// How long to wait for all of them to be running.
    pub(crate) timeout: Duration,
}

/// One instance and a token of its owner to read it with.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    /// The instance id.
    pub(crate) instance: String,
    /// An access token of its owner.
    pub(crate) token: String,
}

/// The provisioned instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fleet {
    readers: Vec<Reader>,
}

impl Fleet {
    /// The instance to read at step `step` of a worker (round robin), if there is any.
    pub(crate) fn pick(&self, step: usize) -> Option<&Reader> {
        if self.readers.is_empty() {
            return None;
        }
        self.readers.get(step % self.readers.len())
    }

    /// How many instances there are.
    pub(crate) fn len(&self) -> usize {
        self.readers.len()
    }

    /// Deletes every instance (purging its volume); failures are printed with the instance id
    /// and do not stop the others.
    pub(crate) async fn delete_all(&self, client: &Client) {
        let mut deleted = 0;
        for reader in &self.readers {
            let path = format!("/v1/instances/{}?purge=true", reader.instance);
            match client.delete(&path, &reader.token).await {
                Ok(_) => deleted += 1,
                Err(error) => {
                    eprintln!("iaas-load: could not delete instance {}: {error}", reader.instance)
                }
            }
        }
        if !self.readers.is_empty() {
            println!("deleted {deleted} of {} instances", self.readers.len());
        }
    }
}

/// The body of `POST /v1/instances` for instance `index` of run `run`.
pub(crate) fn create_body(spec: &FleetSpec, run: &str, index: usize) -> Value {
    json!({
        "name": format!("load-{run}-{index}"),
        "spec": {"kind": "docker", "image": spec.image, "command": spec.command},
        "resources": {"millicpus": MILLICPUS, "memory_mib": MEMORY_MIB},
    })
}

/// Provisions `spec.count` instances owned by `users` in turn and waits until every one is
/// running. Each created instance is added to `fleet` at once, so the caller can delete what
/// was created even when this fails or is interrupted half-way.
pub(crate) async fn provision(
    client: &Client,
    users: &[User],
    spec: &FleetSpec,
    run: &str,
    fleet: &mut Fleet,
) -> Result<(), String> {
    if users.is_empty() {
        return Err("no user to own the instances".to_owned());
    }
    let started = Instant::now();
    for index in 0..spec.count {
        let mut owner = users[index % users.len()].clone();
        // A session of its own: the worker owning this user rotates the other one.
        client.login(&mut owner).await?;
        let created =
            client.post_as("/v1/instances", &owner.access, &create_body(spec, run, index)).await?;
        let id = created.pointer("/instance/id").and_then(Value::as_str).ok_or_else(|| {
            format!("creating an instance answered without instance.id: {created}")
        })?;
        fleet.readers.push(Reader { instance: id.to_owned(), token: owner.access });
    }
    let deadline = started + spec.timeout;
    for reader in &fleet.readers {
        loop {
            let instance =
                client.get(&format!("/v1/instances/{}", reader.instance), &reader.token).await?;
            match instance.get("status").and_then(Value::as_str) {
                Some("running") => break,
                Some(status @ ("failed" | "deleted" | "stopped")) => {
                    return Err(format!("instance {} ended {status}: {instance}", reader.instance));
                }
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "instance {} not running after {:?}: {instance}",
                        reader.instance, spec.timeout
                    ));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
    println!("provisioned {} instances ({}) in {:.1?}", fleet.len(), spec.image, started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_small_docker_services_with_the_chosen_image_and_command() {
        let spec = FleetSpec {
            count: 2,
            image: "iaas-local/busybox:1".to_owned(),
            command: vec!["sleep".to_owned(), "60".to_owned()],
            timeout: Duration::from_secs(1),
        };
        let body = create_body(&spec, "r1", 3);
        assert_eq!(body["name"], "load-r1-3");
        assert_eq!(body["spec"]["kind"], "docker");
        assert_eq!(body["spec"]["image"], "iaas-local/busybox:1");
        assert_eq!(body["spec"]["command"], json!(["sleep", "60"]));
        assert_eq!(body["resources"]["memory_mib"], MEMORY_MIB);
    }

    #[test]
    fn readers_are_picked_round_robin_and_none_without_instances() {
        assert!(Fleet::default().pick(3).is_none());
        let fleet = Fleet {
            readers: ["a", "b"]
                .map(|id| Reader { instance: id.to_owned(), token: String::new() })
                .to_vec(),
        };
        let picked: Vec<&str> =
            (0..4).filter_map(|step| fleet.pick(step)).map(|r| r.instance.as_str()).collect();
        assert_eq!(picked, ["a", "b", "a", "b"]);
    }
}
