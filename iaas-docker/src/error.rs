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
    /// Nothing of this instance exists on the engine.
    #[error("instance {instance} has no containers")]
    NotFound {
        /// The instance id.
        instance: String,
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
    /// The engine refused the request.
    #[error("Docker engine refused {operation}: {message}")]
    Engine {
        /// What was being done.
        operation: String,
        /// The engine's message.
        message: String,
    },
}

impl DockerError {
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
    }
}
