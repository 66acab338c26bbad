//! Keeping tenants' containers away from the host's own services.
//!
//! A container on a user network reaches the host at its network's gateway address, so a
//! service the host runs on all interfaces (`0.0.0.0`: a database, a metrics agent, the
//! platform itself if so configured) would answer tenants. One rule in the host's `INPUT`
//! chain drops everything arriving from any user network's bridge (they all start with
//! [`BRIDGE_PREFIX`]) unless it answers a connection the host
//! opened:
//!
//! ```text
//! iptables  -I INPUT -i iaasu+ -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP
//! ip6tables -I INPUT -i iaasu+ -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP
//! ```
//!
//! Ports an instance publishes keep working: from the host, the engine's proxy opens the
//! connection to the container (its answers are `ESTABLISHED`), and from other containers the
//! engine forwards them before `INPUT` is reached. Name resolution on a user network is
//! answered inside each container's own network namespace, so it keeps working too.
//! [`isolate_host`] adds the rule unless it is there; it needs `CAP_NET_ADMIN` on the engine's
//! host (the platform on the same host as root, as `scripts/test.sh` runs it).

use crate::network::BRIDGE_PREFIX;

/// Why the host could not be isolated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirewallError {
    /// The command could not be run (not installed, say).
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed (no permission, say).
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
}

/// The rule's match and target, after the chain.
fn rule() -> Vec<String> {
    let prefix = format!("{BRIDGE_PREFIX}+");
    ["-i", &prefix, "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"]
        .map(str::to_owned)
        .to_vec()
}

/// Adds the `INPUT` rule that drops traffic from user networks to the host, for IPv4 and IPv6,
/// unless it is already there. IPv6 is skipped when `ip6tables` is not installed.
pub async fn isolate_host() -> Result<(), FirewallError> {
    for (tool, required) in [("iptables", true), ("ip6tables", false)] {
        match ensure_rule(tool).await {
            Ok(()) => {}
            Err(FirewallError::Spawn { .. }) if !required => {
                tracing::debug!(tool, "not installed; IPv6 traffic is not filtered");
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

async fn ensure_rule(tool: &str) -> Result<(), FirewallError> {
    // `-C` answers 0 when the rule exists, 1 when it does not; anything else is an error.
    let check = run(tool, "-C").await?;
    if check.status.success() {
        return Ok(());
    }
    let added = run(tool, "-I").await?;
    if added.status.success() {
        tracing::info!(tool, rule = %rule().join(" "), "added the host isolation rule to INPUT");
        return Ok(());
    }
    Err(FirewallError::Failed {
        command: format!("{tool} -I INPUT {}", rule().join(" ")),
        status: added.status.to_string(),
        stderr: String::from_utf8_lossy(&added.stderr).trim().to_owned(),
    })
}

async fn run(tool: &str, verb: &str) -> Result<std::process::Output, FirewallError> {
    let mut command = tokio::process::Command::new(tool);
    // `-w` waits for the xtables lock instead of failing while the engine edits its chains.
    command.arg("-w").arg(verb).arg("INPUT").args(rule());
    command.kill_on_drop(true).output().await.map_err(|source| FirewallError::Spawn {
        command: format!("{tool} {verb} INPUT {}", rule().join(" ")),
        source,
    })
}
