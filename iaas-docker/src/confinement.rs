//! What a container may do on the host: the same confinement for every container of every
//! instance, widened only by the capabilities its kind's image needs to start.
//!
//! Every container is created with:
//! - `CapDrop: ALL`, then only the capabilities of [`capabilities`] added back: a tenant's
//!   process, even as root in its container, cannot open raw sockets, mount file systems,
//!   change the owner of files it does not own, load modules or trace other processes;
//! - `no-new-privileges`: a setuid or file-capability binary does not raise the privileges of
//!   whoever runs it;
//! - a limit on processes (a fork bomb stays inside its container), and memory (with no swap
//!   beyond it) and CPU always set from the instance's resources;
//! - ICMP datagram sockets turned off (`net.ipv4.ping_group_range = 1 0`), so without
//!   `NET_RAW` no ICMP of any kind leaves the container;
//! - never privileged, no host mounts, no devices, never the host's network, PID or IPC
//!   namespace, and so no way to reach the engine's socket.
//!
//! A generic Docker image gets no capability at all: the spec has no field to ask for one,
//! and an image that must start as root and switch users (as some official images do) needs
//! a variant that starts as its own user instead.

use iaas_core::InstanceKind;

/// The capabilities added back for one container, after `ALL` is dropped.
///
/// | kind | role | capabilities | why |
/// |---|---|---|---|
/// | `postgres` | primary | `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `SETGID`, `SETUID` | the image's entrypoint starts as root, hands the data directory to the `postgres` user and switches to it; the server then runs with none |
/// | `postgres` | replica | none | runs as the `postgres` user from the start |
/// | `nginx` | primary | `CHOWN`, `SETGID`, `SETUID`, `NET_BIND_SERVICE` | the master binds port 80 as root and starts its workers as an unprivileged user |
/// | `docker` | primary | none | a tenant's own image |
pub fn capabilities(kind: InstanceKind, primary: bool) -> &'static [&'static str] {
    match kind {
        InstanceKind::Postgres if primary => {
            &["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
        }
        InstanceKind::Nginx => &["CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"],
        InstanceKind::Postgres | InstanceKind::Docker | InstanceKind::K8s => &[],
    }
}

/// The engine's security options for every container.
pub const SECURITY_OPTIONS: &[&str] = &["no-new-privileges:true"];

/// The kernel settings of every container: no unprivileged ICMP sockets.
pub const SYSCTLS: &[(&str, &str)] = &[("net.ipv4.ping_group_range", "1 0")];

/// The default limit on processes per container.
pub const DEFAULT_PIDS_LIMIT: i64 = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_own_images_and_replicas_get_no_capability() {
        assert!(capabilities(InstanceKind::Docker, true).is_empty());
        assert!(capabilities(InstanceKind::Postgres, false).is_empty());
        assert!(!capabilities(InstanceKind::Postgres, true).contains(&"SYS_ADMIN"));
        for kind in InstanceKind::ALL {
            for primary in [true, false] {
                for forbidden in ["SYS_ADMIN", "NET_RAW", "NET_ADMIN", "SYS_PTRACE", "ALL"] {
                    assert!(
                        !capabilities(kind, primary).contains(&forbidden),
                        "{kind} {forbidden}"
                    );
                }
            }
        }
    }
}
