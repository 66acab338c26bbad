//! The Docker engine's errors read as the runtime port's: what bollard reports, classified
//! into [`RuntimeError`] so provisioning answers the same whichever engine runs the instances.

use iaas_core::RuntimeError;

/// Classifies a bollard error for `operation`.
pub(crate) fn from_bollard(
    operation: impl Into<String>,
    err: bollard::errors::Error,
) -> RuntimeError {
    use bollard::errors::Error as B;
    let operation = operation.into();
    match &err {
        B::DockerResponseServerError { status_code, message } => {
            let lower = message.to_ascii_lowercase();
            if *status_code == 404 && lower.contains("image") {
                RuntimeError::ImageNotFound { image: image_in(message) }
            } else if lower.contains("port is already allocated")
                || lower.contains("address already in use")
            {
                RuntimeError::PortTaken { port: port_in(message).unwrap_or(0) }
            } else if *status_code == 409 && lower.contains("is not running") {
                RuntimeError::NotRunning { operation }
            } else if *status_code >= 500 && !lower.contains("driver failed") {
                RuntimeError::Unavailable { operation, source: Box::new(err) }
            } else {
                RuntimeError::Engine { operation, message: message.clone() }
            }
        }
        _ => RuntimeError::Unavailable { operation, source: Box::new(err) },
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
        let err = from_bollard(
            "creating",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such image: nosuch/image:1".into(),
            },
        );
        assert!(
            matches!(err, RuntimeError::ImageNotFound { ref image } if image == "nosuch/image:1"),
            "{err}"
        );

        let err = from_bollard(
            "starting",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "driver failed programming external connectivity on endpoint x: Bind for 127.0.0.1:5432 failed: port is already allocated".into(),
            },
        );
        assert!(matches!(err, RuntimeError::PortTaken { port: 5432 }), "{err}");

        // What dockerd 20.10 says when something outside the engine holds the port.
        let err = from_bollard(
            "starting",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "driver failed programming external connectivity on endpoint iaas-x-primary (f496d9b9): Error starting userland proxy: listen tcp4 127.0.0.1:34263: bind: address already in use".into(),
            },
        );
        assert!(matches!(err, RuntimeError::PortTaken { port: 34263 }), "{err}");

        // An exec into a container that stopped after it was listed: a conflict the API
        // answers 409 `not_running`, not a 500.
        let err = from_bollard(
            "running a command in container f4e4",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "Container f4e4 is not running".into(),
            },
        );
        assert!(matches!(err, RuntimeError::NotRunning { .. }), "{err}");
        assert!(matches!(iaas_core::Error::from(err), iaas_core::Error::Conflict { .. }));
    }
}
