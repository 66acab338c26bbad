//! Which host ports a tenant may publish on.
//!
//! A chosen host port is bound by the engine, which runs as root, on the publish address the
//! platform's own backends often share (loopback). Without a policy a tenant could take a port
//! the platform itself connects to while that backend restarts (a forged Redis on 6379 answering
//! session lookups) or squat on the port a listener is about to bind. So a chosen port must lie
//! in one configured range, and the ports of the platform's own listeners and backends are
//! refused even inside it. Ports the engine picks itself (no `host` in the spec) come from the
//! kernel's ephemeral range and are always allowed.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use crate::error::{Error, Result};
use crate::instance::{InstanceSpec, PortMapping};

/// The host ports a spec may choose: a range, minus ports reserved for the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortPolicy {
    range: RangeInclusive<u16>,
    reserved: BTreeSet<u16>,
}

impl HostPortPolicy {
    /// The default range: above the ports services usually listen on (5432, 6379, 8080-8084,
    /// 9092, 9200, ...) and below the kernel's ephemeral range (32768 and up), so neither a
    /// backend nor a port the engine picks collides with it.
    pub const DEFAULT_RANGE: RangeInclusive<u16> = 20_000..=29_999;

    /// Ports every policy refuses: the defaults of the backends and listeners the platform
    /// is built on (PostgreSQL, Redis, Kafka, Elasticsearch, the platform's own HTTP ports),
    /// whatever the configured range says.
    pub const WELL_KNOWN_RESERVED: [u16; 9] =
        [5432, 6379, 8080, 8081, 8082, 8083, 8084, 9092, 9200];

    /// A policy allowing `range`, which must start at [`PortMapping::MIN_HOST_PORT`] or above.
    /// The [`WELL_KNOWN_RESERVED`](Self::WELL_KNOWN_RESERVED) ports are refused from the start.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self> {
        if range.is_empty() {
            return Err(Error::invalid(
                "host_port_range",
                format!("{}-{} is empty", range.start(), range.end()),
            ));
        }
        if *range.start() < PortMapping::MIN_HOST_PORT {
            return Err(Error::invalid(
                "host_port_range",
                format!(
                    "{}-{} reaches below {}: privileged ports belong to the host",
                    range.start(),
                    range.end(),
                    PortMapping::MIN_HOST_PORT
                ),
            ));
        }
        Ok(Self { range, reserved: Self::WELL_KNOWN_RESERVED.into_iter().collect() })
    }

    /// Also refuses `ports` (the platform's configured listeners and backends).
    #[must_use]
    pub fn reserving(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.reserved.extend(ports);
        self
    }

    /// The allowed range.
    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    /// Every refused port, in order.
    pub fn reserved(&self) -> impl Iterator<Item = u16> + '_ {
        self.reserved.iter().copied()
    }

    /// Whether a spec may choose host port `port`; [`Error::PortNotAllowed`] says why not.
    pub fn check_port(&self, port: u16) -> Result<()> {
        let refuse = |reason: String| Err(Error::PortNotAllowed { port, reason });
        if self.reserved.contains(&port) {
            return refuse(format!(
                "host port {port} is reserved for the platform's own services; choose one from {}-{}, or omit \"host\"",
                self.range.start(),
                self.range.end()
            ));
        }
        if !self.range.contains(&port) {
            return refuse(format!(
                "host port {port} is outside the allowed range {}-{}; choose one from it, or omit \"host\"",
                self.range.start(),
                self.range.end()
            ));
        }
        Ok(())
    }

    /// Checks every host port `spec` chooses (only Docker specs choose any).
    pub fn check(&self, spec: &InstanceSpec) -> Result<()> {
        let InstanceSpec::Docker(docker) = spec else { return Ok(()) };
        docker.ports.iter().filter_map(|port| port.host).try_for_each(|port| self.check_port(port))
    }
}

impl Default for HostPortPolicy {
    /// [`DEFAULT_RANGE`](Self::DEFAULT_RANGE) with the well-known ports reserved.
    fn default() -> Self {
        Self {
            range: Self::DEFAULT_RANGE,
            reserved: Self::WELL_KNOWN_RESERVED.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::instance::DockerSpec;

    fn spec(ports: Vec<PortMapping>) -> InstanceSpec {
        InstanceSpec::Docker(DockerSpec {
            image: "web:1".into(),
            env: BTreeMap::new(),
            ports,
            command: None,
        })
    }

    fn refused(policy: &HostPortPolicy, port: u16) -> String {
        match policy.check(&spec(vec![PortMapping::on_host(80, port)])) {
            Err(Error::PortNotAllowed { port: got, reason }) => {
                assert_eq!(got, port);
                reason
            }
            other => panic!("port {port}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_default_range_allows_its_ports_and_engine_picked_ones() {
        let policy = HostPortPolicy::default();
        for port in [20_000, 25_000, 29_999] {
            assert!(policy.check_port(port).is_ok(), "{port}");
        }
        assert!(policy.check(&spec(vec![80.into(), 443.into()])).is_ok(), "ephemeral ports");
        assert!(refused(&policy, 19_999).contains("outside the allowed range 20000-29999"));
        assert!(refused(&policy, 30_000).contains("outside"));
    }

    #[test]
    fn the_platforms_own_ports_are_refused_whatever_the_range_says() {
        let policy = HostPortPolicy::new(1024..=65_535).unwrap().reserving([8443, 7000]);
        for port in [5432, 6379, 9092, 9200, 8080, 8083, 8443, 7000] {
            assert!(refused(&policy, port).contains("reserved for the platform"), "{port}");
        }
        assert!(policy.check_port(18_080).is_ok());
        assert_eq!(policy.reserved().filter(|p| *p == 7000).count(), 1);
    }

    #[test]
    fn a_range_must_be_unprivileged_and_not_empty() {
        assert!(HostPortPolicy::new(80..=1000).is_err());
        assert!(HostPortPolicy::new(1023..=2000).is_err());
        #[allow(clippy::reversed_empty_ranges, reason = "the empty range is the case under test")]
        let empty = 3000..=2000;
        assert!(HostPortPolicy::new(empty).is_err());
        assert!(HostPortPolicy::new(1024..=1024).is_ok());
    }
}
