//! Errors of the container runtime port.

use crate::BoxError;

/// What went wrong talking to the container engine.
///
/// Every runtime speaks these words, so the API answers the same status and code whichever
/// engine runs the instances. The engine client's own error, where there is one, is kept as
/// the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The image is not available to the engine (and pulling is not enabled or failed).
    #[error("image {image} is not available to the engine")]
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
    /// The instance cannot do that in the state it is in now (a switchover to a replica that
    /// is not running, say): the request was understood, and may succeed later.
    #[error("instance {instance}: {reason}")]
    Refused {
        /// The instance id.
        instance: String,
        /// Why.
        reason: String,
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
    #[error("engine unavailable while {operation}")]
    Unavailable {
        /// What was being done.
        operation: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// No engine at the configured address yet (its socket does not exist): start the engine,
    /// or point the platform at a running one; it is used as soon as it appears.
    #[error("no engine at {address}")]
    NoEngine {
        /// Where the engine was looked for.
        address: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The engine refused the request.
    #[error("engine refused {operation}: {message}")]
    Engine {
        /// What was being done.
        operation: String,
        /// The engine's message.
        message: String,
    },
}

impl From<RuntimeError> for crate::Error {
    /// Callers of the ports see the core error: a missing instance is `NotFound`, input the
    /// engine cannot run is `Invalid` or `Unsupported`, a name or port in use is a `Conflict`,
    /// an engine that does not answer is `Unavailable` (retry later), anything else `Internal`.
    fn from(err: RuntimeError) -> Self {
        use crate::Error;
        match err {
            RuntimeError::ImageNotFound { image } => Error::invalid(
                "spec.image",
                format!("image {image} is not available to the engine"),
            ),
            RuntimeError::PortTaken { port } => {
                Error::conflict("port", port, "the host port is already in use")
            }
            RuntimeError::PortNotAllowed { port, reason } => Error::PortNotAllowed { port, reason },
            RuntimeError::NameConflict { what, name } => {
                Error::conflict(what, name, "it already exists and belongs to something else")
            }
            RuntimeError::InvalidSpec { reason } => Error::invalid("spec", reason),
            RuntimeError::Unsupported { what } => Error::Unsupported { what },
            RuntimeError::NotFound { instance } => Error::not_found("instance", instance),
            RuntimeError::Refused { instance, reason } => {
                Error::conflict("instance", instance, reason)
            }
            RuntimeError::NotRunning { operation } => {
                Error::conflict("container", operation, "the container is not running")
            }
            RuntimeError::Unavailable { operation, source } => {
                Error::unavailable("engine", operation, source)
            }
            RuntimeError::NoEngine { address, source } => {
                Error::unavailable("engine", format!("connecting to {address}"), source)
            }
            RuntimeError::Engine { operation, message } => {
                Error::Internal { operation, source: message.into() }
            }
        }
    }
}

impl RuntimeError {
    /// Whether the engine was not there or did not answer, so the same call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::NoEngine { .. } | RuntimeError::Unavailable { .. })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_become_the_core_errors_callers_expect() {
        use crate::Error;
        let core = |err: RuntimeError| Error::from(err);
        assert!(matches!(
            core(RuntimeError::NotFound { instance: "i1".into() }),
            Error::NotFound { entity: "instance", ref id } if id == "i1"
        ));
        assert!(matches!(
            core(RuntimeError::ImageNotFound { image: "x:1".into() }),
            Error::Invalid { field: "spec.image", ref reason } if reason.contains("x:1")
        ));
        assert!(matches!(
            core(RuntimeError::PortTaken { port: 8080 }),
            Error::Conflict { entity: "port", ref id, .. } if id == "8080"
        ));
        assert!(matches!(
            core(RuntimeError::NameConflict { what: "container", name: "iaas-a".into() }),
            Error::Conflict { entity: "container", ref id, .. } if id == "iaas-a"
        ));
        assert!(matches!(
            core(RuntimeError::InvalidSpec { reason: "no password".into() }),
            Error::Invalid { field: "spec", .. }
        ));
        assert!(matches!(
            core(RuntimeError::Unsupported { what: "k8s".into() }),
            Error::Unsupported { ref what } if what == "k8s"
        ));
        let unavailable = core(RuntimeError::Unavailable {
            operation: "listing".into(),
            source: "timed out".into(),
        });
        assert!(matches!(unavailable, Error::Unavailable { backend: "engine", .. }));
        assert!(unavailable.is_transient());
        assert!(matches!(
            core(RuntimeError::Engine { operation: "exec".into(), message: "boom".into() }),
            Error::Internal { ref operation, .. } if operation == "exec"
        ));
    }
}
