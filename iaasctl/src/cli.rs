//! The command line: every command, flag and help text, as clap derive types.
//!
//! Parsing only; [`crate::run`] carries a parsed [`Cli`] out.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::DEFAULT_URL;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the platform refused the request (its message is printed), or the operation failed
  2  usage error (bad arguments)
  3  cannot connect to the platform";

/// `iaasctl`: the command-line client of an iaas-rs platform.
#[derive(Debug, Clone, Parser)]
#[command(name = "iaasctl", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// Base URL of the platform.
    #[arg(long, global = true, env = "IAAS_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an account on the platform.
    Register(CredentialsArgs),
    /// Log in and keep the tokens in ~/.config/iaasctl/credentials (mode 0600).
    Login(CredentialsArgs),
    /// End the session and forget the stored tokens.
    Logout(LogoutArgs),
    /// List, create and operate instances.
    #[command(subcommand)]
    Instances(InstancesCommand),
    /// Search and count the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Show your quota; administrators also show and change other users'.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// List your logins and end one you no longer trust.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Events the bus refused for good (admin only): list, retry or drop them.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

/// `outbox ...` (administrators).
#[derive(Debug, Clone, Subcommand)]
pub enum OutboxCommand {
    /// The parked events, oldest first, with the error that parked them.
    Parked {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a parked event back in line (it reaches the bus after the events that followed it).
    Retry {
        /// The entry's SEQ (from `outbox parked`).
        seq: String,
    },
    /// Drop a parked event for good.
    Drop {
        /// The entry's SEQ (from `outbox parked`).
        seq: String,
    },
}

/// `sessions ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum SessionsCommand {
    /// Your live sessions (one per login), oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End one session by its ID (from `sessions list`); your others stay.
    Revoke {
        /// The session's ID.
        id: String,
    },
}

/// `quota ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum QuotaCommand {
    /// Your limits and what you hold against them (another user's with --user; admin only).
    Show(QuotaShowArgs),
    /// Override some limits for one user (admin only); the others keep the defaults.
    Set(QuotaSetArgs),
    /// Remove a user's override, so the defaults apply again (admin only).
    Reset {
        /// The user.
        username: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `quota show`.
#[derive(Debug, Clone, Args)]
pub struct QuotaShowArgs {
    /// Another user's quota (needs the admin scope).
    #[arg(long, value_name = "USERNAME")]
    pub user: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `quota set`: each limit given replaces the user's current override of it; the
/// override as a whole is replaced, so a limit not given goes back to the default.
#[derive(Debug, Clone, Args)]
pub struct QuotaSetArgs {
    /// The user.
    pub username: String,
    /// Instances (not deleted) the user may hold.
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,
    /// CPU of all the user's containers, thousandths of a core.
    #[arg(long, value_name = "N")]
    pub millicpus: Option<u64>,
    /// Memory of all the user's containers, MiB.
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// CPU one instance may ask for per container, thousandths of a core.
    #[arg(long, value_name = "N")]
    pub instance_millicpus: Option<u32>,
    /// Memory one instance may ask for per container, MiB.
    #[arg(long, value_name = "MIB")]
    pub instance_memory_mib: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `register` and `login`.
#[derive(Debug, Clone, Args)]
pub struct CredentialsArgs {
    /// The user name.
    pub username: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Arguments of `logout`.
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// End every session of the user, on every machine, not only this one.
    #[arg(long)]
    pub all: bool,
}

/// `instances ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum InstancesCommand {
    /// List your instances as a table (id, name, kind, status, age).
    List(ListArgs),
    /// Show one instance.
    Get(GetArgs),
    /// Create an instance and follow its provisioning until it runs.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Start a stopped instance and follow it until it runs.
    Start(ActionArgs),
    /// Stop a running instance and follow it until it stopped.
    Stop(ActionArgs),
    /// Restart an instance and follow it until it runs again.
    Restart(ActionArgs),
    /// Delete an instance and its containers.
    Delete(DeleteArgs),
    /// Show an instance's cluster info (nodes, endpoints, status).
    Info(ViewArgs),
    /// Show an instance's resource usage (CPU, memory, connections).
    Stats(ViewArgs),
    /// Show a replicated PostgreSQL cluster's replication: the primary, and each replica's
    /// state and lag.
    Replication(ViewArgs),
    /// Hand a highly available PostgreSQL cluster's primary role to a replica.
    ///
    /// The primary finishes what it was doing and follows the new one, so no committed
    /// transaction is lost and clients see one short pause. The command returns when it is
    /// done (a few seconds) and prints the old and new primary and how long it took.
    Switchover(SwitchoverArgs),
    /// Change how many replicas a highly available PostgreSQL cluster keeps.
    ///
    /// The platform stores the new count and its supervisor meets it: a new replica copies
    /// the data from the primary, a replica beyond the count is removed with its data (the
    /// primary hands over first when it is one of them). The command follows until the
    /// cluster streams to exactly that many replicas.
    Scale(ScaleArgs),
    /// Give a PostgreSQL instance's application role a new password, made by the platform.
    ///
    /// The old one stops working at once (connections already open stay open); the new one
    /// is printed this once.
    Password(PasswordArgs),
    /// Set or turn off a highly available cluster's backup schedule.
    ///
    /// The platform takes a full backup whenever the newest one is --every-hours old (at once
    /// when there is none) and keeps --keep full backups, scheduled or asked for.
    BackupSchedule(BackupScheduleArgs),
    /// Take a base backup of a highly available PostgreSQL cluster.
    ///
    /// The platform takes it on the primary, into the cluster's repository where WAL is
    /// archived continuously, and answers once it is complete; the command prints it.
    Backup(BackupArgs),
    /// List the backups of a highly available PostgreSQL cluster, oldest first, and the
    /// earliest time it can be restored to.
    Backups(BackupsArgs),
}

/// Arguments of `instances backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The cluster.
    #[command(flatten)]
    pub target: TargetArgs,
    /// What to copy: everything (`full`), what changed since the last full backup (`diff`) or
    /// since the last backup of any kind (`incr`).
    #[arg(long = "type", value_enum, default_value_t = BackupType::Full)]
    pub kind: BackupType,
    /// Seconds to wait for the platform, which answers once the backup is complete.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
    /// Print the platform's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The kind of a base backup, as `--type` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupType {
    /// Every file of the cluster.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any kind.
    Incr,
}

/// Arguments of `instances backups`.
#[derive(Debug, Clone, Args)]
pub struct BackupsArgs {
    /// The cluster.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the platform's answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `instances list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Include deleted instances.
    #[arg(long)]
    pub all: bool,
}

/// An instance named by id or name.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The instance's id or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub target: String,
}

/// Arguments of `instances get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The instance.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How long an action is followed.
#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// Return as soon as the platform accepted the action, without following it.
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
    /// Follow the action until it is done (the default; kept for scripts written before).
    #[arg(long, hide = true)]
    pub wait: bool,
    /// Seconds to follow the action before giving up.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
}

/// Arguments of `instances start|stop|restart`.
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    /// The instance.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Following.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// Arguments of `instances delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// The instance.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also delete the instance's data volumes.
    #[arg(long)]
    pub purge: bool,
    /// Following.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// Arguments of `instances switchover`.
#[derive(Debug, Clone, Args)]
pub struct SwitchoverArgs {
    /// The cluster.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The member to promote (`member-1`, as `instances info` names them); without it the
    /// running replica with the least lag.
    #[arg(long = "target", value_name = "MEMBER")]
    pub member: Option<String>,
    /// Seconds to wait for the platform, which answers once the new primary is in place.
    #[arg(long, default_value_t = 150, value_name = "SECS")]
    pub timeout: u64,
    /// Print the platform's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `instances scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// The cluster.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Replicas beside the primary (1 to 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// Following.
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// Arguments of `instances backup-schedule`.
#[derive(Debug, Clone, Args)]
pub struct BackupScheduleArgs {
    /// The cluster.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Hours between full backups (1 to 720).
    #[arg(long, value_name = "HOURS", required_unless_present = "off", requires = "keep",
          value_parser = clap::value_parser!(u16).range(1..=720))]
    pub every_hours: Option<u16>,
    /// Full backups kept (1 to 30).
    #[arg(long, value_name = "N", requires = "every_hours",
          value_parser = clap::value_parser!(u8).range(1..=30))]
    pub keep: Option<u8>,
    /// No scheduled backups (the kept ones stay).
    #[arg(long, conflicts_with_all = ["every_hours", "keep"])]
    pub off: bool,
}

/// Arguments of `instances password`.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// The PostgreSQL instance.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the platform's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `instances info|stats|replication`.
#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// The instance.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `instances create ...`: one subcommand per kind.
#[derive(Debug, Clone, Subcommand)]
pub enum CreateCommand {
    /// A PostgreSQL database (a primary, and streaming replicas with --replicas), highly
    /// available with --ha, or restored from another cluster's backups with --restore-from.
    Postgres {
        /// Name, limits and waiting.
        #[command(flatten)]
        common: CreateArgs,
        /// Name of the database to create (default: app; with --restore-from, the source's).
        #[arg(long)]
        database: Option<String>,
        /// Streaming replicas beside the primary, 0 to 5 (default: 0; with --restore-from,
        /// as many as the source has).
        #[arg(long, value_name = "N")]
        replicas: Option<u8>,
        /// Highly available: the members elect their primary, a replica is promoted when the
        /// primary is lost, a lost member is made again, and clients connect through
        /// read-write and read-only endpoints that follow the primary. Needs --replicas 1 or
        /// more.
        #[arg(long)]
        ha: bool,
        /// With --ha: a commit returns only once a replica has it too, so a failover loses no
        /// acknowledged transaction, at the cost of a round trip per commit.
        #[arg(long)]
        synchronous: bool,
        /// Start from this highly available cluster's backups and archived WAL instead of an
        /// empty database (point-in-time restore); the source keeps running. The copy is
        /// highly available, like its source.
        #[arg(long, value_name = "ID_OR_NAME")]
        restore_from: Option<String>,
        /// With --restore-from: the moment to restore, an RFC 3339 time or an age such as 15m
        /// (default: the latest the archive holds). A backup must have ended before it.
        #[arg(long, value_name = "TIME", requires = "restore_from")]
        at: Option<String>,
        /// With --ha: the platform takes a full backup whenever the newest is this many hours
        /// old (1 to 720), the first at once.
        #[arg(long, value_name = "HOURS", requires = "backup_keep",
              value_parser = clap::value_parser!(u16).range(1..=720))]
        backup_every_hours: Option<u16>,
        /// With --backup-every-hours: full backups kept (1 to 30).
        #[arg(long, value_name = "N", requires = "backup_every_hours",
              value_parser = clap::value_parser!(u8).range(1..=30))]
        backup_keep: Option<u8>,
    },
    /// An Nginx server.
    Nginx {
        /// Name, limits and waiting.
        #[command(flatten)]
        common: CreateArgs,
        /// A file holding a `server { ... }` block to serve (default: the image's page).
        #[arg(long, value_name = "FILE")]
        site_config: Option<PathBuf>,
    },
    /// Any Docker image; put the command after `--`.
    Docker {
        /// Name, limits and waiting.
        #[command(flatten)]
        common: CreateArgs,
        /// The image (`repository:tag`).
        #[arg(long)]
        image: String,
        /// An environment variable (repeatable).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// A container port to publish on 127.0.0.1, on a free host port or on HOST_PORT
        /// (repeatable; a chosen one must be in the platform's range, 20000-29999 by default).
        #[arg(long = "port", short = 'p', value_name = "[HOST_PORT:]PORT")]
        ports: Vec<String>,
        /// The command overriding the image's default, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// What every `instances create` takes.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The instance's name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// CPU limit in thousandths of a core (default 500).
    #[arg(long, value_name = "N")]
    pub millicpus: Option<u32>,
    /// Memory limit in MiB (default 256).
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u32>,
    /// Return as soon as the platform accepted the instance.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the instance to run.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    /// Print the platform's answer as JSON (progress then goes to standard error).
    #[arg(long)]
    pub json: bool,
}

/// `events ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Search your event log, newest first.
    Search(SearchArgs),
    /// Count your events per time bucket, action and type.
    Stats(StatsArgs),
}

/// Arguments of `events search`.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Only events of this instance (id or name).
    #[arg(long, value_name = "ID_OR_NAME")]
    pub instance: Option<String>,
    /// Only events of this instance type (postgres, nginx, docker, k8s).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only this action (created, started, stopped, failed, deleted, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events at or after this time: RFC 3339, or an age such as 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this time: RFC 3339, or an age such as 15m.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Full-text search in messages and metadata.
    #[arg(long)]
    pub text: Option<String>,
    /// Entries per page (1 to 500).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursor through every page.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `events stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Start: RFC 3339, or an age such as 24h (default: 24 hours ago).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// End: RFC 3339, or an age (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Bucket width in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub bucket: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_docker_command_goes_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "iaasctl",
            "instances",
            "create",
            "docker",
            "worker",
            "--image",
            "busybox",
            "-e",
            "A=1",
            "-p",
            "80",
            "--",
            "sh",
            "-c",
            "sleep 1",
        ])
        .unwrap();
        let Command::Instances(InstancesCommand::Create(CreateCommand::Docker {
            common,
            image,
            env,
            ports,
            command,
        })) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(common.name, "worker");
        assert_eq!(
            (image.as_str(), env, ports),
            ("busybox", vec!["A=1".to_owned()], vec!["80".to_owned()])
        );
        assert_eq!(command, ["sh", "-c", "sleep 1"]);
    }

    fn instances(args: &[&str]) -> InstancesCommand {
        let cli = Cli::try_parse_from(["iaasctl", "instances"].iter().chain(args)).unwrap();
        let Command::Instances(command) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        command
    }

    #[test]
    fn a_postgres_cluster_is_made_highly_available_with_ha_and_synchronous() {
        let create = ["create", "postgres", "db", "--replicas", "2", "--ha", "--synchronous"];
        let InstancesCommand::Create(CreateCommand::Postgres { replicas, ha, synchronous, .. }) =
            instances(&create)
        else {
            panic!("not a postgres create");
        };
        assert_eq!((replicas, ha, synchronous), (Some(2), true, true));
        let InstancesCommand::Create(CreateCommand::Postgres { ha, synchronous, .. }) =
            instances(&["create", "postgres", "db"])
        else {
            panic!("not a postgres create");
        };
        assert_eq!((ha, synchronous), (false, false), "a plain cluster by default");
    }

    #[test]
    fn ha_flags_belong_to_postgres_only() {
        for kind in [&["nginx", "web"][..], &["docker", "w", "--image", "busybox"]] {
            let args: Vec<&str> = ["iaasctl", "instances", "create"]
                .into_iter()
                .chain(kind.iter().copied())
                .chain(["--ha"])
                .collect();
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument, "{kind:?}");
        }
    }

    #[test]
    fn a_backup_schedule_is_an_interval_and_a_count_or_off() {
        let InstancesCommand::BackupSchedule(args) =
            instances(&["backup-schedule", "orders", "--every-hours", "24", "--keep", "7"])
        else {
            panic!("not a backup schedule");
        };
        assert_eq!((args.every_hours, args.keep, args.off), (Some(24), Some(7), false));
        let InstancesCommand::BackupSchedule(args) =
            instances(&["backup-schedule", "orders", "--off"])
        else {
            panic!("not a backup schedule");
        };
        assert!(args.off);
        for bad in [
            &["backup-schedule", "orders"][..],
            &["backup-schedule", "orders", "--every-hours", "24"],
            &["backup-schedule", "orders", "--every-hours", "0", "--keep", "1"],
            &["backup-schedule", "orders", "--every-hours", "1", "--keep", "31"],
            &["backup-schedule", "orders", "--off", "--keep", "2"],
        ] {
            let args = [&["iaasctl", "instances"][..], bad].concat();
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_scale_names_the_cluster_and_a_replica_count_in_range() {
        let InstancesCommand::Scale(args) = instances(&["scale", "orders", "--replicas", "3"])
        else {
            panic!("not a scale");
        };
        assert_eq!((args.target.target.as_str(), args.replicas), ("orders", 3));
        assert!(!args.follow.no_wait);
        for bad in ["0", "6", "x"] {
            let parsed =
                Cli::try_parse_from(["iaasctl", "instances", "scale", "orders", "--replicas", bad]);
            assert!(parsed.is_err(), "--replicas {bad} was accepted");
        }
        assert!(Cli::try_parse_from(["iaasctl", "instances", "scale", "orders"]).is_err());
    }

    #[test]
    fn a_switchover_names_the_cluster_and_optionally_the_member_to_promote() {
        let InstancesCommand::Switchover(args) = instances(&["switchover", "orders"]) else {
            panic!("not a switchover");
        };
        assert_eq!((args.target.target.as_str(), args.member, args.json), ("orders", None, false));
        let InstancesCommand::Switchover(args) =
            instances(&["switchover", "orders", "--target", "member-2", "--json"])
        else {
            panic!("not a switchover");
        };
        assert_eq!(args.target.target, "orders");
        assert_eq!((args.member.as_deref(), args.json), (Some("member-2"), true));
        let err = Cli::try_parse_from(["iaasctl", "instances", "switchover"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn a_backup_is_full_unless_a_type_is_given() {
        let InstancesCommand::Backup(args) = instances(&["backup", "orders"]) else {
            panic!("not a backup");
        };
        assert_eq!(
            (args.target.target.as_str(), args.kind, args.json),
            ("orders", BackupType::Full, false)
        );
        let InstancesCommand::Backup(args) =
            instances(&["backup", "orders", "--type", "incr", "--json"])
        else {
            panic!("not a backup");
        };
        assert_eq!((args.kind, args.json), (BackupType::Incr, true));
        let err =
            Cli::try_parse_from(["iaasctl", "instances", "backup", "orders", "--type", "weekly"])
                .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let InstancesCommand::Backups(args) = instances(&["backups", "orders", "--json"]) else {
            panic!("not a backup list");
        };
        assert_eq!((args.target.target.as_str(), args.json), ("orders", true));
    }

    #[test]
    fn url_is_global() {
        let cli =
            Cli::try_parse_from(["iaasctl", "events", "stats", "--url", "http://h:1"]).unwrap();
        assert_eq!(cli.url, "http://h:1");
    }
}
