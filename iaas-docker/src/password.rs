//! A new password for a PostgreSQL instance's role, set on its primary (a highly available
//! cluster's elected one): the replicas have it through replication.

use iaas_core::runtime::{MEMBER_PREFIX, PRIMARY};
use iaas_core::{InstanceId, RuntimeError};

use crate::engine::DockerRuntime;

/// Sets the role's password as the superuser over the primary's socket. psql reads the role
/// and the password from the environment (`\getenv`), so neither appears on a command line,
/// in the shell or spliced into SQL; the server hashes it with its `password_encryption`. The
/// statement carries the password to the server, so the session first keeps statements out of
/// the server's log, a failed one included (a primary that became a replica meanwhile refuses
/// it, and the server would log the statement with its error).
const CHANGE_PASSWORD: &str = r#"printf '%s\n' "SET log_statement = 'none';" "SET log_min_error_statement = 'panic';" "SET log_min_duration_statement = -1;" '\getenv role IAAS_ROLE' '\getenv pw IAAS_NEW_PASSWORD' "ALTER ROLE :\"role\" PASSWORD :'pw';" | psql -X -q -v ON_ERROR_STOP=1 --no-password -U "$POSTGRES_USER" -d postgres"#;

impl DockerRuntime {
    /// Gives `role` of the PostgreSQL instance `instance` the password `password`.
    pub(crate) async fn change_password(
        &self,
        instance: InstanceId,
        role: &str,
        password: &str,
    ) -> Result<(), RuntimeError> {
        let containers = self.containers_of(instance).await?;
        if containers.is_empty() {
            return Err(RuntimeError::NotFound { instance: instance.to_string() });
        }
        let role_of = |c: &bollard::models::ContainerSummary| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(iaas_core::runtime::LABEL_ROLE))
                .cloned()
                .unwrap_or_default()
        };
        let container = if containers.iter().any(|c| role_of(c).starts_with(MEMBER_PREFIX)) {
            self.leader_container(instance).await?
        } else {
            let primary = containers.iter().find(|c| role_of(c) == PRIMARY).ok_or_else(|| {
                RuntimeError::Unsupported { what: format!("passwords of instance {instance}") }
            })?;
            if primary.state.as_ref().is_none_or(|s| s.to_string() != "running") {
                return Err(RuntimeError::NotRunning {
                    operation: format!("changing a password of instance {instance}"),
                });
            }
            primary.id.clone().unwrap_or_default()
        };
        let env = vec![format!("IAAS_ROLE={role}"), format!("IAAS_NEW_PASSWORD={password}")];
        let mut output = self.postgres_exec(&container, CHANGE_PASSWORD, env).await?;
        // psql may quote the statement it failed on: never the password in an error.
        output.stderr = output.stderr.replace(password, "<redacted>");
        output.success(format!("changing the password of a role of instance {instance}"))?;
        Ok(())
    }
}
