//! What Patroni says about a managed PostgreSQL cluster, and what changed between two looks.
//!
//! Patroni (in every member of a highly available cluster) answers `GET /cluster` on its REST
//! port with the members it knows from the store it elects through: each member's name, role
//! (`leader`, `replica`, `sync_standby`, ...), state (`running`, `streaming`, `stopped`,
//! `starting`, ...), timeline and replication lag in bytes. The platform reads that document
//! from inside a running member, so the answer needs no route from the platform's host into a
//! tenant's network, and compares it with the previous one: a new leader on a new timeline is a
//! failover (or the outcome of a switchover the platform asked for), whose data-loss bound is
//! the lag the promoted member had at the last look before it.
//!
//! Nothing here performs I/O: the document comes in as bytes and decisions come out.

use serde::Deserialize;

/// A member's role as Patroni reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatroniRole {
    /// Holds the leader key: the primary, the one read-write member.
    Leader,
    /// Follows the leader with asynchronous streaming replication.
    Replica,
    /// Follows the leader, and commits wait for it (synchronous mode).
    SyncStandby,
    /// Any role this version does not know (`standby_leader` of a standby cluster, say).
    Other(String),
}

impl PatroniRole {
    fn parse(role: &str) -> Self {
        match role {
            "leader" | "master" | "primary" => Self::Leader,
            "replica" => Self::Replica,
            "sync_standby" => Self::SyncStandby,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether the member follows a leader (asynchronously or synchronously).
    pub fn is_replica(&self) -> bool {
        matches!(self, Self::Replica | Self::SyncStandby)
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniMember {
    /// The member's name (unique in its cluster).
    pub name: String,
    /// What it is now.
    pub role: PatroniRole,
    /// Patroni's word for the server's state (`running`, `streaming`, `stopped`, ...).
    pub state: String,
    /// The PostgreSQL timeline it is on, when known.
    pub timeline: Option<u64>,
    /// Bytes of WAL it has not replayed yet, when it is a replica and Patroni knows.
    pub lag_bytes: Option<u64>,
}

impl PatroniMember {
    /// Whether the member's server serves (a leader that runs, a replica that streams or runs).
    pub fn is_up(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }
}

/// The cluster as one member's Patroni sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatroniCluster {
    /// Every member registered in the store, in Patroni's order.
    pub members: Vec<PatroniMember>,
}

/// A document that is not Patroni's `/cluster` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Patroni cluster document: {reason}")]
pub struct ParseError {
    reason: String,
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    timeline: Option<u64>,
    /// A number of bytes, or the string `unknown` while the member's position is not known.
    #[serde(default)]
    lag: Option<serde_json::Value>,
}

impl PatroniCluster {
    /// Reads Patroni's `GET /cluster` answer.
    pub fn parse(document: &[u8]) -> Result<Self, ParseError> {
        let raw: RawCluster = serde_json::from_slice(document)
            .map_err(|err| ParseError { reason: err.to_string() })?;
        let members = raw
            .members
            .into_iter()
            .map(|m| PatroniMember {
                role: PatroniRole::parse(&m.role),
                lag_bytes: m.lag.as_ref().and_then(serde_json::Value::as_u64),
                name: m.name,
                state: m.state,
                timeline: m.timeline,
            })
            .collect();
        Ok(Self { members })
    }

    /// The member holding the leader key, if one does.
    pub fn leader(&self) -> Option<&PatroniMember> {
        self.members.iter().find(|m| m.role == PatroniRole::Leader)
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&PatroniMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The replica a planned switchover should promote when the caller names none: the
    /// running replica with the least lag (synchronous standbys first, as they have lost
    /// nothing), ties broken by name so the choice is stable.
    pub fn switchover_candidate(&self) -> Option<&PatroniMember> {
        self.members.iter().filter(|m| m.role.is_replica() && m.is_up()).min_by(|a, b| {
            let sync = |m: &PatroniMember| m.role != PatroniRole::SyncStandby;
            (sync(a), a.lag_bytes.unwrap_or(u64::MAX), &a.name).cmp(&(
                sync(b),
                b.lag_bytes.unwrap_or(u64::MAX),
                &b.name,
            ))
        })
    }
}

/// A leader that is not the one seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    /// The leader before, when there was one.
    pub old_leader: Option<String>,
    /// The leader now.
    pub new_leader: String,
    /// The new leader's timeline.
    pub timeline: Option<u64>,
    /// At most this many bytes of WAL committed on the old leader are missing on the new
    /// one: the new leader's lag at the last look while it was a replica. `None` when that
    /// look did not know it (the bound is then Patroni's `maximum_lag_on_failover`).
    pub lag_bound_bytes: Option<u64>,
}

/// What changed in leadership between two looks at one cluster: `None` when the leader is the
/// same, or when there is no leader now (an election is under way: the next look tells).
pub fn leader_change(before: &PatroniCluster, now: &PatroniCluster) -> Option<LeaderChange> {
    let new = now.leader()?;
    let old = before.leader();
    if old.is_some_and(|old| old.name == new.name) {
        return None;
    }
    Some(LeaderChange {
        old_leader: old.map(|m| m.name.clone()),
        new_leader: new.name.clone(),
        timeline: new.timeline,
        lag_bound_bytes: before.member(&new.name).and_then(|m| m.lag_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer of Patroni 3.0 (Debian bookworm), as read from a member of a 1+2 cluster.
    const HEALTHY: &str = r#"{"members": [
        {"name": "member-0", "role": "leader", "state": "running", "api_url": "http://m0:8008/patroni", "host": "m0", "port": 5432, "timeline": 1},
        {"name": "member-1", "role": "replica", "state": "running", "api_url": "http://m1:8008/patroni", "host": "m1", "port": 5432, "timeline": 1, "lag": 0},
        {"name": "member-2", "role": "replica", "state": "streaming", "host": "m2", "port": 5432, "timeline": 1, "lag": 4096}
    ]}"#;

    fn cluster(document: &str) -> PatroniCluster {
        match PatroniCluster::parse(document.as_bytes()) {
            Ok(cluster) => cluster,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn reads_roles_states_timelines_and_lag() {
        let c = cluster(HEALTHY);
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.leader().map(|m| m.name.as_str()), Some("member-0"));
        assert_eq!(c.members[2].lag_bytes, Some(4096));
        assert_eq!(c.members[0].lag_bytes, None);
        assert_eq!(c.members[1].timeline, Some(1));
        assert!(c.members.iter().all(PatroniMember::is_up));
    }

    #[test]
    fn an_unknown_lag_and_unknown_roles_are_kept_as_unknown() {
        let c = cluster(
            r#"{"members": [{"name": "a", "role": "standby_leader", "state": "running", "lag": "unknown"}]}"#,
        );
        assert_eq!(c.members[0].role, PatroniRole::Other("standby_leader".into()));
        assert_eq!(c.members[0].lag_bytes, None);
        assert_eq!(c.leader(), None);
    }

    #[test]
    fn a_document_that_is_not_json_is_an_error_not_an_empty_cluster() {
        assert!(PatroniCluster::parse(b"<html>").is_err());
        assert!(PatroniCluster::parse(br#"{"members": [{"role": "leader"}]}"#).is_err());
        assert_eq!(cluster("{}").members, Vec::new());
    }

    #[test]
    fn the_same_leader_is_no_change_and_no_leader_is_not_yet_one() {
        let before = cluster(HEALTHY);
        assert_eq!(leader_change(&before, &before), None);
        let electing = cluster(
            r#"{"members": [{"name": "member-1", "role": "replica", "state": "running", "lag": 0}]}"#,
        );
        assert_eq!(leader_change(&before, &electing), None);
    }

    #[test]
    fn a_new_leader_is_a_change_bounded_by_its_last_known_lag() {
        let before = cluster(HEALTHY);
        let after = cluster(
            r#"{"members": [
            {"name": "member-1", "role": "replica", "state": "running", "timeline": 2, "lag": 0},
            {"name": "member-2", "role": "leader", "state": "running", "timeline": 2}]}"#,
        );
        assert_eq!(
            leader_change(&before, &after),
            Some(LeaderChange {
                old_leader: Some("member-0".into()),
                new_leader: "member-2".into(),
                timeline: Some(2),
                lag_bound_bytes: Some(4096),
            })
        );
        // Seen first with a leader already elected (the platform restarted meanwhile).
        let first = leader_change(&PatroniCluster::default(), &after);
        assert_eq!(first.map(|c| (c.old_leader, c.lag_bound_bytes)), Some((None, None)));
    }

    #[test]
    fn the_switchover_candidate_is_the_up_replica_with_least_lag() {
        let c = cluster(HEALTHY);
        assert_eq!(c.switchover_candidate().map(|m| m.name.as_str()), Some("member-1"));
        let with_sync = cluster(
            r#"{"members": [
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "replica", "state": "running", "lag": 0},
            {"name": "c", "role": "sync_standby", "state": "streaming", "lag": 10},
            {"name": "d", "role": "replica", "state": "stopped", "lag": 0}]}"#,
        );
        assert_eq!(with_sync.switchover_candidate().map(|m| m.name.as_str()), Some("c"));
        let alone =
            cluster(r#"{"members": [{"name": "a", "role": "leader", "state": "running"}]}"#);
        assert_eq!(alone.switchover_candidate(), None);
    }
}
