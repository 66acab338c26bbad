//! A connection to a Docker engine that may not be there yet.
//!
//! bollard refuses to build a client for a Unix socket that does not exist, so a process that
//! builds its client at start cannot start before its engine (a fresh machine, `dockerd`
//! restarting, a socket mounted late). [`EngineConnection`] builds the client on first use
//! instead, and tries again on every use until it succeeds: until then each call fails with
//! [`RuntimeError::NoEngine`], which names the address and tells the operator what to do, and
//! the engine is used as soon as its socket appears, without a restart. Once built, the client
//! opens a fresh connection per request, so an engine restart needs nothing from here either.

use std::sync::{Arc, OnceLock};

use bollard::Docker;

use crate::error::from_bollard;
use iaas_core::RuntimeError;

/// The address bollard uses when neither a host nor `DOCKER_HOST` names one.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// A cheaply cloneable handle on one Docker engine, connected on first use.
#[derive(Clone)]
pub struct EngineConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured address; `None` means bollard's local default (`DOCKER_HOST`, else the
    /// standard socket).
    host: Option<String>,
    client: OnceLock<Docker>,
}

impl EngineConnection {
    /// The engine at `host` (`unix:///path`, `tcp://host:port`, `http://...`), or with `None`
    /// the local default: `DOCKER_HOST` when it names a Unix socket, else
    /// `/var/run/docker.sock`. Nothing is contacted yet.
    pub fn new(host: Option<String>) -> Self {
        Self { inner: Arc::new(Inner { host, client: OnceLock::new() }) }
    }

    /// The address connected to, for logs and error messages.
    pub fn address(&self) -> String {
        match &self.inner.host {
            Some(host) => host.clone(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|host| host.starts_with("unix://"))
                .unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
        }
    }

    /// The client, built now if this is the first call since the engine's socket appeared.
    /// Building does not contact the engine: a client is no promise that it answers (calls
    /// then fail with [`RuntimeError::Unavailable`]).
    pub fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(client) = self.inner.client.get() {
            return Ok(client.clone());
        }
        let built = match &self.inner.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_local_defaults(),
        };
        match built {
            Ok(client) => Ok(self.inner.client.get_or_init(|| client).clone()),
            Err(source) => {
                Err(RuntimeError::NoEngine { address: self.address(), source: Box::new(source) })
            }
        }
    }

    /// Whether a client has been built (the socket was found once).
    pub fn is_connected(&self) -> bool {
        self.inner.client.get().is_some()
    }

    /// Pings the engine: `Ok` when it answers.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        let client = self.client()?;
        client.ping().await.map(drop).map_err(|err| from_bollard("pinging", err))
    }
}

impl From<Docker> for EngineConnection {
    /// A connection with its client already built.
    fn from(client: Docker) -> Self {
        let connection = Self::new(None);
        let _ = connection.inner.client.set(client);
        connection
    }
}

impl std::fmt::Debug for EngineConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConnection")
            .field("address", &self.address())
            .field("connected", &self.is_connected())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_no_engine_naming_the_address_until_it_appears() {
        let dir = std::env::temp_dir().join(format!("iaas-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let _ = std::fs::remove_file(&socket);
        let address = format!("unix://{}", socket.display());
        let connection = EngineConnection::new(Some(address.clone()));

        let err = connection.client().unwrap_err();
        assert!(
            matches!(&err, RuntimeError::NoEngine { address: a, .. } if *a == address),
            "{err:?}"
        );
        assert!(err.to_string().contains(&address), "{err}");
        assert!(!connection.is_connected());

        // The socket appears (the engine started): the next call builds the client.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        connection.client().unwrap();
        assert!(connection.is_connected());
        // ... and keeps it when the socket goes away again (an engine restart).
        std::fs::remove_file(&socket).unwrap();
        connection.client().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
