//! Errors of the container runtime.

/// What went wrong talking to the Docker engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The image is not available to the engine (and pulling is not enabled or failed).
    #[error("image {image} is not available to the Docker engine")]
    ImageNotFound {
        /// The image reference.
        image: String,
    },
    /// A host port to publish is already in use.
    #[error("host port {port} is already in use")]
    PortTaken {
        /// The port.
        port: u16,
    },
    /// A chosen host port the runtime's host-port policy refuses.
    #[error("host port {port} is not allowed: {reason}")]
    PortNotAllowed {
        /// The port.
        port: u16,
        /// Why, and which ports are allowed.
        reason: String,
    },
    /// A container, volume or network of that name already exists and is not this instance's.
    #[error("{what} {name} already exists")]
    NameConflict {
        /// `"container"`, `"volume"`, `"network"`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The instance cannot be provisioned as specified.
    #[error("cannot provision instance: {reason}")]
    InvalidSpec {
        /// Why.
        reason: String,
    },
    /// The instance kind needs another runtime, or the operation does not apply to it.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// Nothing of this instance exists on the engine.
    #[error("instance {instance} has no containers")]
    NotFound {
        /// The instance id.
        instance: String,
    },
    /// The container stopped before the request reached it (an exec into a container that was
    /// running when it was listed).
    #[error("{operation}: the container is not running")]
    NotRunning {
        /// What was being done.
        operation: String,
    },
    /// The engine did not answer or refused in a way that may pass.
    #[error("Docker engine unavailable while {operation}")]
    Unavailable {
        /// What was being done.
        operation: String,
        /// The client's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// No engine at the configured address yet (its socket does not exist): start the engine,
    /// or point the platform at a running one; it is used as soon as it appears.
    #[error("no Docker engine at {address}")]
    NoEngine {
        /// Where the engine was looked for.
        address: String,
        /// The client's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine refused the request.
    #[error("Docker engine refused {operation}: {message}")]
    Engine {
        /// What was being done.
        operation: String,
        /// The engine's message.
        message: String,
    },
}

impl From<DockerError> for iaas_core::Error {
    /// Callers of the ports see the core error: a missing instance is `NotFound`, input the
    /// engine cannot run is `Invalid` or `Unsupported`, a name or port in use is a `Conflict`,
    /// an engine that does not answer is `Unavailable` (retry later), anything else `Internal`.
    fn from(err: DockerError) -> Self {
        use iaas_core::Error;
        match err {
            DockerError::ImageNotFound { image } => Error::invalid(
                "spec.image",
                format!("image {image} is not available to the Docker engine"),
            ),
            DockerError::PortTaken { port } => {
                Error::conflict("port", port, "the host port is already in use")
            }
            DockerError::PortNotAllowed { port, reason } => Error::PortNotAllowed { port, reason },
            DockerError::NameConflict { what, name } => {
                Error::conflict(what, name, "it already exists and belongs to something else")
            }
            DockerError::InvalidSpec { reason } => Error::invalid("spec", reason),
            DockerError::Unsupported { what } => Error::Unsupported { what },
            DockerError::NotFound { instance } => Error::not_found("instance", instance),
            DockerError::NotRunning { operation } => {
                Error::conflict("container", operation, "the container is not running")
            }
            DockerError::Unavailable { operation, source } => {
                Error::unavailable("docker", operation, source)
            }
            DockerError::NoEngine { address, source } => {
                Error::unavailable("docker", format!("connecting to {address}"), source)
            }
            DockerError::Engine { operation, message } => {
                Error::Internal { operation, source: message.into() }
            }
        }
    }
}

impl DockerError {
    /// Whether the engine was not there or did not answer, so the same call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DockerError::NoEngine { .. } | DockerError::Unavailable { .. })
    }

    /// Classifies a bollard error for `operation`.
    pub(crate) fn from_bollard(operation: impl Into<String>, err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        let operation = operation.into();
        match &err {
            B::DockerResponseServerError { status_code, message } => {
                let lower = message.to_ascii_lowercase();
                if *status_code == 404 && lower.contains("image") {
                    DockerError::ImageNotFound { image: image_in(message) }
                } else if lower.contains("port is already allocated")
                    || lower.contains("address already in use")
                {
                    DockerError::PortTaken { port: port_in(message).unwrap_or(0) }
                } else if *status_code == 409 && lower.contains("is not running") {
                    DockerError::NotRunning { operation }
                } else if *status_code >= 500 && !lower.contains("driver failed") {
                    DockerError::Unavailable { operation, source: err }
                } else {
                    DockerError::Engine { operation, message: message.clone() }
                }
            }
            _ => DockerError::Unavailable { operation, source: err },
        }
    }
}

/// Engine messages read `No such image: NAME`.
fn image_in(message: &str) -> String {
    message
        .rsplit_once(": ")
        .map_or_else(|| message.to_owned(), |(_, image)| image.trim().to_owned())
}

/// Engine messages read `... 127.0.0.1:5432 failed: port is already allocated` or
/// `listen tcp4 127.0.0.1:5432: bind: address already in use`.
fn port_in(message: &str) -> Option<u16> {
    message
        .split(|c: char| c.is_whitespace())
        .filter_map(|word| word.trim_end_matches(':').rsplit_once(':'))
        .find_map(|(_, port)| port.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_are_classified() {
        let err = DockerError::from_bollard(
            "creating",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such image: nosuch/image:1".into(),
            },
        );
        assert!(
            matches!(err, DockerError::ImageNotFound { ref image } if image == "nosuch/image:1"),
            "{err}"
        );

        let err = DockerError::from_bollard(
            "starting",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "driver failed programming external connectivity on endpoint x: Bind for 127.0.0.1:5432 failed: port is already allocated".into(),
            },
        );
        assert!(matches!(err, DockerError::PortTaken { port: 5432 }), "{err}");

        // What dockerd 20.10 says when something outside the engine holds the port.
        let err = DockerError::from_bollard(
            "starting",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "driver failed programming external connectivity on endpoint iaas-x-primary (f496d9b9): Error starting userland proxy: listen tcp4 127.0.0.1:34263: bind: address already in use".into(),
            },
        );
        assert!(matches!(err, DockerError::PortTaken { port: 34263 }), "{err}");

        // An exec into a container that stopped after it was listed: a conflict the API
        // answers 409 `not_running`, not a 500.
        let err = DockerError::from_bollard(
            "running a command in container f4e4",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "Container f4e4 is not running".into(),
            },
        );
        assert!(matches!(err, DockerError::NotRunning { .. }), "{err}");
        assert!(matches!(iaas_core::Error::from(err), iaas_core::Error::Conflict { .. }));
    }

    #[test]
    fn docker_errors_become_the_core_errors_callers_expect() {
        use iaas_core::Error;
        let core = |err: DockerError| Error::from(err);
        assert!(matches!(
            core(DockerError::NotFound { instance: "i1".into() }),
            Error::NotFound { entity: "instance", ref id } if id == "i1"
        ));
        assert!(matches!(
            core(DockerError::ImageNotFound { image: "x:1".into() }),
            Error::Invalid { field: "spec.image", ref reason } if reason.contains("x:1")
        ));
        assert!(matches!(
            core(DockerError::PortTaken { port: 8080 }),
            Error::Conflict { entity: "port", ref id, .. } if id == "8080"
        ));
        assert!(matches!(
            core(DockerError::NameConflict { what: "container", name: "iaas-a".into() }),
            Error::Conflict { entity: "container", ref id, .. } if id == "iaas-a"
        ));
        assert!(matches!(
            core(DockerError::InvalidSpec { reason: "no password".into() }),
            Error::Invalid { field: "spec", .. }
        ));
        assert!(matches!(
            core(DockerError::Unsupported { what: "k8s".into() }),
            Error::Unsupported { ref what } if what == "k8s"
        ));
        let unavailable = core(DockerError::Unavailable {
            operation: "listing".into(),
            source: bollard::errors::Error::RequestTimeoutError,
        });
        assert!(matches!(unavailable, Error::Unavailable { backend: "docker", .. }));
        assert!(unavailable.is_transient());
        assert!(matches!(
            core(DockerError::Engine { operation: "exec".into(), message: "boom".into() }),
            Error::Internal { ref operation, .. } if operation == "exec"
        ));
    }
}
