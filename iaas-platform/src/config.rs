//! Configuration from the environment, validated before anything starts: a bad value stops the
//! start with an error naming the variable and the value.

use std::net::SocketAddr;
use std::time::Duration;

/// Variable naming the address to listen on.
pub const LISTEN_VAR: &str = "IAAS_LISTEN";
/// Variable giving the seconds in-flight requests get to finish on shutdown.
pub const SHUTDOWN_GRACE_VAR: &str = "IAAS_SHUTDOWN_GRACE_SECS";

/// How the platform runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Address of the HTTP listener (`IAAS_LISTEN`, default `127.0.0.1:8080`: loopback, so a
    /// first run exposes nothing to the network).
    pub listen: SocketAddr,
    /// Time in-flight requests get to finish after SIGINT/SIGTERM (`IAAS_SHUTDOWN_GRACE_SECS`,
    /// default 10 s); connections still open after it are closed.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The variable is set to something unusable.
    #[error("invalid {key}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        reason: String,
    },
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Config::default();
        let listen = match lookup(LISTEN_VAR) {
            None => defaults.listen,
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                key: LISTEN_VAR,
                reason: "expected an address and port such as 127.0.0.1:8080".into(),
                value,
            })?,
        };
        let shutdown_grace = match lookup(SHUTDOWN_GRACE_VAR) {
            None => defaults.shutdown_grace,
            Some(value) => match value.parse::<u64>() {
                Ok(secs) if secs <= 3600 => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: SHUTDOWN_GRACE_VAR,
                        reason: "expected whole seconds between 0 and 3600".into(),
                        value,
                    });
                }
            },
        };
        Ok(Self { listen, shutdown_grace })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let config = from(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.listen.ip().is_loopback());
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = from(&[(LISTEN_VAR, "0.0.0.0:9000"), (SHUTDOWN_GRACE_VAR, "3")]).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_value() {
        let err = from(&[(LISTEN_VAR, "localhost")]).unwrap_err();
        assert!(err.to_string().contains("IAAS_LISTEN=\"localhost\""), "{err}");
        let err = from(&[(SHUTDOWN_GRACE_VAR, "-1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: SHUTDOWN_GRACE_VAR, .. }));
    }
}
