use std::collections::HashMap;
use std::env;
use std::fmt;
use std::time::Duration;

use bollard::models::PortBinding;
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::error::TestkitError;
use crate::isolation::{RUN_LABEL, run_id};

/// A running service a test talks to.
///
/// Keep it alive for as long as the test uses the service: when it came from a container,
/// dropping it removes the container.
pub struct Service {
    url: String,
    source: Source,
    _container: Option<ContainerAsync<GenericImage>>,
}

/// Where a [`Service`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A running service named by this environment variable.
    Env(&'static str),
    /// A container started from this image for this test.
    Container(String),
}

impl Service {
    pub(crate) fn from_env(var: &'static str, url: String) -> Self {
        Self { url, source: Source::Env(var), _container: None }
    }

    pub(crate) fn from_container(
        image: String,
        url: String,
        container: ContainerAsync<GenericImage>,
    ) -> Self {
        Self { url, source: Source::Container(image), _container: Some(container) }
    }

    /// The address to connect to (a URL, or `host:port` for Kafka brokers).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the service came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The container, when the service runs in one started for this test (to stop or restart
    /// it in fault tests).
    pub fn container(&self) -> Option<&ContainerAsync<GenericImage>> {
        self._container.as_ref()
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").field("url", &self.url).field("source", &self.source).finish()
    }
}

/// The value of `var`, if set and not empty.
pub(crate) fn env_var(var: &str) -> Option<String> {
    env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Splits `repository[:tag]` (a registry port such as `host:5000/x` is not mistaken for a tag).
pub(crate) fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// What to start when no variable names a running service.
pub(crate) struct ContainerRecipe {
    pub(crate) url_var: &'static str,
    pub(crate) image_var: &'static str,
    pub(crate) image: String,
    pub(crate) port: u16,
    /// Fixed host port, for services that must advertise their own address (Kafka).
    pub(crate) host_port: Option<u16>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cmd: Option<Vec<String>>,
    pub(crate) ready_line: Option<WaitFor>,
    pub(crate) startup_timeout: Duration,
}

impl ContainerRecipe {
    pub(crate) fn new(
        url_var: &'static str,
        image_var: &'static str,
        default_image: &str,
        port: u16,
    ) -> Self {
        Self {
            url_var,
            image_var,
            image: env_var(image_var).unwrap_or_else(|| default_image.to_owned()),
            port,
            host_port: None,
            env: Vec::new(),
            cmd: None,
            ready_line: None,
            startup_timeout: Duration::from_secs(120),
        }
    }

    fn failed(&self, reason: impl fmt::Display) -> TestkitError {
        TestkitError::ContainerFailed {
            var: self.url_var,
            image_var: self.image_var,
            image: self.image.clone(),
            reason: reason.to_string(),
        }
    }

    /// Starts the container with its port published on 127.0.0.1 only, and returns it with the
    /// host port.
    pub(crate) async fn start(self) -> Result<(ContainerAsync<GenericImage>, u16), TestkitError> {
        let (repo, tag) = split_image(&self.image);
        let mut image =
            GenericImage::new(repo, tag).with_exposed_port(ContainerPort::Tcp(self.port));
        if let Some(ready) = self.ready_line.clone() {
            image = image.with_wait_for(ready);
        }
        let port_key = format!("{}/tcp", self.port);
        let host_port = self.host_port.map(|p| p.to_string());
        let mut request = image
            .with_label(RUN_LABEL, run_id())
            .with_startup_timeout(self.startup_timeout)
            // Published on loopback only: nothing outside this machine may reach test services.
            .with_host_config_modifier(move |host| {
                host.publish_all_ports = Some(false);
                host.port_bindings = Some(HashMap::from([(
                    port_key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: host_port.clone(),
                    }]),
                )]));
            });
        for (key, value) in &self.env {
            request = request.with_env_var(key, value);
        }
        if let Some(cmd) = &self.cmd {
            request = request.with_cmd(cmd);
        }
        let container = request.start().await.map_err(|err| self.failed(err))?;
        let port = container.get_host_port_ipv4(self.port).await.map_err(|err| self.failed(err))?;
        Ok((container, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_image("redis:7"), ("redis".into(), "7".into()));
        assert_eq!(
            split_image("iaas-local/postgres:15"),
            ("iaas-local/postgres".into(), "15".into())
        );
        assert_eq!(split_image("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split_image("registry:5000/redis"),
            ("registry:5000/redis".into(), "latest".into())
        );
    }
}
