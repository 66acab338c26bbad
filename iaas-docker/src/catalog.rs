//! Which image runs which kind of instance.
//!
//! The same code runs the official Docker Hub images on a laptop and locally built images where
//! no registry is reachable: only the catalog changes.

use iaas_core::InstanceKind;

/// Images per instance kind (generic Docker services name their own image).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageCatalog {
    /// PostgreSQL image honouring the official image's `POSTGRES_*` variables
    /// (default `postgres:16`).
    pub postgres: String,
    /// Nginx image serving `/etc/nginx/conf.d/*.conf` (default `nginx:1.27`).
    pub nginx: String,
    /// Image of highly available PostgreSQL clusters: PostgreSQL with Patroni, pgBackRest,
    /// etcd and HAProxy, one role per container (default `iaas-local/postgres-ha:15`, built
    /// from Debian's packages by `scripts/services.sh` from `scripts/images/postgres-ha/`: no
    /// registry publishes such an image, so it is always local).
    pub postgres_ha: String,
}

impl Default for ImageCatalog {
    fn default() -> Self {
        Self {
            postgres: "postgres:16".to_owned(),
            nginx: "nginx:1.27".to_owned(),
            postgres_ha: "iaas-local/postgres-ha:15".to_owned(),
        }
    }
}

impl ImageCatalog {
    /// The defaults, with each image overridable by `IAAS_POSTGRES_IMAGE`,
    /// `IAAS_POSTGRES_HA_IMAGE` and `IAAS_NGINX_IMAGE` read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let defaults = Self::default();
        let image = |var: &str, default: String| {
            lookup(var).filter(|v| !v.trim().is_empty()).unwrap_or(default)
        };
        Self {
            postgres: image("IAAS_POSTGRES_IMAGE", defaults.postgres),
            nginx: image("IAAS_NGINX_IMAGE", defaults.nginx),
            postgres_ha: image("IAAS_POSTGRES_HA_IMAGE", defaults.postgres_ha),
        }
    }

    /// The catalog image for `kind`, if the kind has one.
    pub fn image_for(&self, kind: InstanceKind) -> Option<&str> {
        match kind {
            InstanceKind::Postgres => Some(&self.postgres),
            InstanceKind::Nginx => Some(&self.nginx),
            InstanceKind::Docker | InstanceKind::K8s => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let catalog = ImageCatalog::from_lookup(|key| {
            (key == "IAAS_POSTGRES_IMAGE").then(|| "local/pg:15".to_owned())
        });
        assert_eq!(catalog.image_for(InstanceKind::Postgres), Some("local/pg:15"));
        assert_eq!(catalog.image_for(InstanceKind::Nginx), Some("nginx:1.27"));
        assert_eq!(catalog.image_for(InstanceKind::Docker), None);
    }
}
