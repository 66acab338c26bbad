use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::error::TestkitError;
use crate::isolation::database_name;
use crate::service::{ContainerRecipe, Service, env_var};
use crate::wait::eventually;

/// Names a running PostgreSQL as a URL whose user may create databases
/// (`postgres://iaas:iaas@127.0.0.1:5432/iaas`).
pub const POSTGRES_URL_VAR: &str = "IAAS_TEST_POSTGRES_URL";
/// Image started when [`POSTGRES_URL_VAR`] is unset (default `postgres:16`).
pub const POSTGRES_IMAGE_VAR: &str = "IAAS_TEST_POSTGRES_IMAGE";
const DEFAULT_IMAGE: &str = "postgres:16";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server that accepts connections: the one named by `IAAS_TEST_POSTGRES_URL`, or
/// a new container.
pub async fn postgres() -> Result<Service, TestkitError> {
    let service = match env_var(POSTGRES_URL_VAR) {
        Some(url) => Service::from_env(POSTGRES_URL_VAR, url),
        None => start_postgres_container().await?,
    };
    wait_until_ready(&service).await?;
    Ok(service)
}

/// Starts a PostgreSQL container from `IAAS_TEST_POSTGRES_IMAGE` (default `postgres:16`) with
/// the official image's environment contract (`POSTGRES_USER`, `POSTGRES_PASSWORD`,
/// `POSTGRES_DB`).
pub async fn start_postgres_container() -> Result<Service, TestkitError> {
    let mut recipe =
        ContainerRecipe::new(POSTGRES_URL_VAR, POSTGRES_IMAGE_VAR, DEFAULT_IMAGE, 5432);
    recipe.env = vec![
        ("POSTGRES_USER".into(), "iaas".into()),
        ("POSTGRES_PASSWORD".into(), "iaas".into()),
        ("POSTGRES_DB".into(), "iaas".into()),
    ];
    // The official image logs its ready line twice (a setup server, then the real one), so
    // readiness is decided by connecting, in `wait_until_ready`.
    let image = recipe.image.clone();
    let (container, port) = recipe.start().await?;
    Ok(Service::from_container(
        image,
        format!("postgres://iaas:iaas@127.0.0.1:{port}/iaas"),
        container,
    ))
}

async fn wait_until_ready(service: &Service) -> Result<(), TestkitError> {
    eventually(READY_TIMEOUT, || async {
        let mut conn = PgConnection::connect(service.url()).await?;
        conn.execute("SELECT 1").await?;
        conn.close().await
    })
    .await
    .map_err(|reason| TestkitError::NotReachable {
        service: "postgres",
        var: POSTGRES_URL_VAR,
        url: service.url().to_owned(),
        waited_secs: READY_TIMEOUT.as_secs(),
        reason,
    })
}

/// A database created for one test on a shared server.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database named after `test` on `server`.
    pub async fn create(server: &Service, test: &str) -> Result<Self, TestkitError> {
        let name = database_name(test);
        let failed = |err: sqlx::Error| TestkitError::NotReachable {
            service: "postgres",
            var: POSTGRES_URL_VAR,
            url: server.url().to_owned(),
            waited_secs: 0,
            reason: format!("creating database {name}: {err}"),
        };
        let mut conn = PgConnection::connect(server.url()).await.map_err(failed)?;
        // The name comes from `database_name`: lowercase letters, digits and `_` only.
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.map_err(failed)?;
        conn.close().await.map_err(failed)?;
        let url = with_database(server.url(), &name);
        Ok(Self { name, url, admin_url: server.url().to_owned() })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL connecting to it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (closing other sessions on it first).
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        conn.execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .await?;
        conn.close().await
    }
}

/// Replaces the database path of a `postgres://` URL, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u:p@h:5432/iaas", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(with_database("postgres://u:p@h:5432", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(
            with_database("postgres://u:p@h/iaas?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
    }
}
