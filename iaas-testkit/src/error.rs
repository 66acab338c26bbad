/// Why a test could not get a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The variable was unset and starting a container failed.
    #[error(
        "{var} is not set and starting {image} with testcontainers failed: {reason}. \
         Set {var} to a running service (scripts/test.sh does), or {image_var} to an image \
         available to the local Docker engine"
    )]
    ContainerFailed {
        /// The variable that would have named a running service.
        var: &'static str,
        /// The variable that chooses the image.
        image_var: &'static str,
        /// The image that was tried.
        image: String,
        /// What went wrong.
        reason: String,
    },
    /// A container the test controls itself (to kill and start it again) could not be made.
    #[error(
        "starting a private {service} container from {image} failed: {reason}. Set {image_var} \
         to an image available to the local Docker engine"
    )]
    PrivateContainerFailed {
        /// Which service.
        service: &'static str,
        /// The variable that chooses the image.
        image_var: &'static str,
        /// The image that was tried.
        image: String,
        /// What went wrong.
        reason: String,
    },
    /// The service named by the variable (or started in a container) did not answer.
    #[error("{service} at {url} (from {var}) did not answer within {waited_secs} s: {reason}")]
    NotReachable {
        /// Which service.
        service: &'static str,
        /// The variable the address came from.
        var: &'static str,
        /// The address.
        url: String,
        /// How long it was tried.
        waited_secs: u64,
        /// The last error seen.
        reason: String,
    },
    /// The variable is set but unusable.
    #[error("{var}={value:?} is not usable: {reason}")]
    BadVariable {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A server binary under test could not be started or stopped.
    #[error("{program}: {reason}")]
    Process {
        /// The program.
        program: String,
        /// What went wrong, with its log when it exited.
        reason: String,
    },
    /// An HTTP exchange with a server under test failed.
    #[error("{request} to {addr} failed: {reason}")]
    Http {
        /// The server's address.
        addr: String,
        /// The request line.
        request: String,
        /// What went wrong.
        reason: String,
    },
}
