//! Configuration from the environment, validated before anything starts: a bad value stops the
//! start with an error naming the variable and the value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Variable naming the address to listen on.
pub const LISTEN_VAR: &str = "IAAS_LISTEN";
/// Variable giving the seconds in-flight requests get to finish on shutdown.
pub const SHUTDOWN_GRACE_VAR: &str = "IAAS_SHUTDOWN_GRACE_SECS";
/// Variable naming the directory for embedded data (the SQLite file).
pub const DATA_DIR_VAR: &str = "IAAS_DATA_DIR";
/// Variable naming a PostgreSQL database to use instead of the embedded SQLite file.
pub const DATABASE_URL_VAR: &str = "IAAS_DATABASE_URL";
/// Variable naming Kafka brokers to use instead of the in-process bus.
pub const KAFKA_BROKERS_VAR: &str = "IAAS_KAFKA_BROKERS";
/// Variable naming a Redis server for refresh sessions instead of the in-process store.
pub const REDIS_URL_VAR: &str = "IAAS_REDIS_URL";
/// Variable naming the file holding the token signing key and refresh secret.
pub const AUTH_KEY_FILE_VAR: &str = "IAAS_AUTH_KEY_FILE";

/// Where the platform keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// The embedded SQLite file `iaas.db` in this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

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
    /// The store: SQLite in `IAAS_DATA_DIR` (default `./iaas-data`), or PostgreSQL when
    /// `IAAS_DATABASE_URL` is set.
    pub database: Database,
    /// Directory for embedded state (`IAAS_DATA_DIR`, default `./iaas-data`): the SQLite store
    /// unless PostgreSQL is configured, the event log index, the auth key file.
    pub data_dir: PathBuf,
    /// Kafka brokers (`IAAS_KAFKA_BROKERS`); the in-process bus when unset.
    pub kafka_brokers: Option<String>,
    /// Redis for refresh sessions and login throttling (`IAAS_REDIS_URL`); in-process when
    /// unset (sessions then end with the process).
    pub redis_url: Option<String>,
    /// The token signing key and refresh secret (`IAAS_AUTH_KEY_FILE`, default `auth.key` in
    /// the data directory), created with mode 0600 on the first start. Every process of one
    /// platform must share it.
    pub auth_key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            database: Database::Sqlite(PathBuf::from("iaas-data")),
            data_dir: PathBuf::from("iaas-data"),
            kafka_brokers: None,
            redis_url: None,
            auth_key_file: PathBuf::from("iaas-data").join("auth.key"),
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
        /// Its value (passwords removed).
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
        let lookup = |key: &str| lookup(key).filter(|value| !value.trim().is_empty());
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
        let database = match (lookup(DATABASE_URL_VAR), lookup(DATA_DIR_VAR)) {
            (Some(url), _)
                if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                Database::Postgres(url)
            }
            (Some(url), _) => {
                return Err(ConfigError::Invalid {
                    key: DATABASE_URL_VAR,
                    value: url.split('@').next_back().unwrap_or_default().to_owned(),
                    reason:
                        "expected a postgres:// URL (leave it unset for the embedded SQLite file)"
                            .into(),
                });
            }
            (None, Some(dir)) => Database::Sqlite(PathBuf::from(dir)),
            (None, None) => defaults.database,
        };
        let auth_key_file = match (lookup(AUTH_KEY_FILE_VAR), lookup(DATA_DIR_VAR)) {
            (Some(file), _) => PathBuf::from(file),
            (None, Some(dir)) => PathBuf::from(dir).join("auth.key"),
            (None, None) => defaults.auth_key_file,
        };
        let data_dir = lookup(DATA_DIR_VAR).map_or(defaults.data_dir, PathBuf::from);
        Ok(Self {
            listen,
            shutdown_grace,
            database,
            data_dir,
            kafka_brokers: lookup(KAFKA_BROKERS_VAR),
            redis_url: lookup(REDIS_URL_VAR),
            auth_key_file,
        })
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
    fn defaults_listen_on_loopback_with_embedded_backends() {
        let config = from(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.database, Database::Sqlite(PathBuf::from("iaas-data")));
        assert_eq!(config.kafka_brokers, None);
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = from(&[
            (LISTEN_VAR, "0.0.0.0:9000"),
            (SHUTDOWN_GRACE_VAR, "3"),
            (DATABASE_URL_VAR, "postgres://u:p@db/iaas"),
            (KAFKA_BROKERS_VAR, "k1:9092,k2:9092"),
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.database, Database::Postgres("postgres://u:p@db/iaas".into()));
        assert_eq!(config.kafka_brokers.as_deref(), Some("k1:9092,k2:9092"));
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_value() {
        let err = from(&[(LISTEN_VAR, "localhost")]).unwrap_err();
        assert!(err.to_string().contains("IAAS_LISTEN=\"localhost\""), "{err}");
        let err = from(&[(SHUTDOWN_GRACE_VAR, "-1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: SHUTDOWN_GRACE_VAR, .. }));
        let err = from(&[(DATABASE_URL_VAR, "mysql://root:secret@db/x")]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
