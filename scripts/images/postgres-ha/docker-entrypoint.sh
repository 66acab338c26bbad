#!/usr/bin/env bash
# Entrypoint of iaas-local/postgres-ha:15 (built by scripts/services.sh from Debian packages).
#
# One image, one role per container, named by the first argument:
#
#   patroni   a PostgreSQL member run by Patroni. Patroni elects the primary through etcd,
#             promotes a replica when the primary is lost, rewinds a former primary so it can
#             follow, and archives WAL with pgBackRest. Environment:
#               IAAS_SCOPE              cluster name (also the pgBackRest stanza)
#               IAAS_MEMBER             member name, unique in the cluster
#               IAAS_MEMBER_HOST        the name the other members and HAProxy reach it by
#               IAAS_ETCD_HOSTS         etcd client endpoints, host:port[,host:port...]
#               IAAS_SUPERUSER_PASSWORD, IAAS_REPLICATION_PASSWORD, IAAS_REWIND_PASSWORD,
#               IAAS_RESTAPI_PASSWORD   the platform's own secrets
#               IAAS_APP_USER, IAAS_APP_PASSWORD, IAAS_APP_DB   the tenant's role and database
#               IAAS_SYNCHRONOUS        on: a commit waits for one replica (RPO 0); default off
#               IAAS_BACKUP_RETENTION   full backups kept (default 2)
#               IAAS_S3_ENDPOINT, IAAS_S3_BUCKET, IAAS_S3_REGION, IAAS_S3_KEY, IAAS_S3_SECRET,
#               IAAS_S3_PORT (default 443), IAAS_S3_VERIFY_TLS (default y), IAAS_S3_PATH
#               (default /)             back up to an S3 bucket instead of /var/lib/pgbackrest.
#                                       The endpoint is a host name (path-style requests, over
#                                       HTTPS: pgBackRest speaks no plain HTTP).
#               IAAS_S3_CA_PEM          the CA certificate(s) (PEM text) the endpoint's certificate
#                                       is verified against, written to $PG_HOME/s3-ca.pem: the
#                                       platform mounts no files. Or IAAS_S3_CA_FILE, a path
#                                       inside the container. Neither: the system's CAs.
#               IAAS_RESTORE_STANZA     bootstrap by restoring this stanza's backup instead of
#                                       initdb, from the repository mounted at
#               IAAS_RESTORE_REPO       (a directory) or, with IAAS_S3_ENDPOINT, from the bucket
#               IAAS_RESTORE_S3_BUCKET, IAAS_RESTORE_S3_PATH  (default: IAAS_S3_BUCKET and
#                                       IAAS_S3_PATH; same endpoint, keys and CA). The copy backs
#                                       up to its own stanza (IAAS_SCOPE), which must differ from
#                                       the source's when both are in the same bucket and path.
#               IAAS_RESTORE_TARGET_TIME  ... replaying WAL up to this time (PITR); latest if unset
#   etcd      a single-member etcd serving Patroni's elections. IAAS_ETCD_NAME, IAAS_ETCD_HOST,
#             IAAS_ETCD_PASSWORD: with it, authentication is turned on at the first start (user
#             root), so the tenant's other containers on the network can neither read nor write
#             the election; the members get the same IAAS_ETCD_PASSWORD.
#   haproxy   the cluster's stable endpoints: 5432 always reaches the primary, 5433 the running
#             replicas. It asks each member's Patroni (port 8008) what it is, every second (with
#             OPTIONS, which Patroni answers without a body, so the check's early close does not
#             log a reset connection on every member), and
#             finds the members through the DNS name IAAS_MEMBERS_HOST (a network alias every
#             member carries), so members may come, go and change address without a reload.
#   post-bootstrap  (run by Patroni on the new primary) the tenant's role and database, and the
#             backup stanza.
#
# Any other command is run as given. Run as root, a role drops to its own user (postgres, etcd,
# haproxy) before anything else; the platform starts the containers as those users already.
set -Eeo pipefail

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
need() { [ -n "${!1:-}" ] || die "$1 is required"; }

# as_user USER: re-run this script as USER when started as root.
as_user() {
	if [ "$(id -u)" = 0 ]; then
		exec setpriv --reuid="$1" --regid="$1" --init-groups --inh-caps=-all "$0" "${ARGS[@]}"
	fi
}

# yaml_str VALUE: VALUE as a single-quoted YAML scalar (quotes doubled), so no password or name
# can change the document's structure.
yaml_str() { printf "'%s'" "${1//\'/\'\'}"; }

readonly PG_HOME=/var/lib/postgresql
readonly PATRONI_CONFIG="$PG_HOME/patroni.yml"
readonly PGBACKREST_CONFIG_FILE="$PG_HOME/pgbackrest.conf"
readonly S3_CA_FILE="$PG_HOME/s3-ca.pem"

# write_s3_ca: IAAS_S3_CA_PEM into S3_CA_FILE, the file repo1-storage-ca-file names.
write_s3_ca() {
	[ -n "${IAAS_S3_CA_PEM:-}" ] || return 0
	[ -z "${IAAS_S3_CA_FILE:-}" ] || die "IAAS_S3_CA_PEM and IAAS_S3_CA_FILE exclude each other"
	[[ "$IAAS_S3_CA_PEM" == *"-----BEGIN CERTIFICATE-----"* ]] ||
		die "IAAS_S3_CA_PEM holds no PEM certificate"
	umask 077
	printf '%s\n' "$IAAS_S3_CA_PEM" >"$S3_CA_FILE"
}

write_pgbackrest_config() {
	local retention="${IAAS_BACKUP_RETENTION:-2}"
	[[ "$retention" =~ ^[1-9][0-9]{0,2}$ ]] || die "IAAS_BACKUP_RETENTION must be 1-999"
	umask 077
	{
		printf '[global]\n'
		if [ -n "${IAAS_S3_ENDPOINT:-}" ]; then
			need IAAS_S3_BUCKET
			need IAAS_S3_KEY
			need IAAS_S3_SECRET
			printf 'repo1-type=s3\nrepo1-path=%s\n' "${IAAS_S3_PATH:-/}"
			printf 'repo1-s3-endpoint=%s\nrepo1-s3-bucket=%s\nrepo1-s3-region=%s\n' \
				"$IAAS_S3_ENDPOINT" "$IAAS_S3_BUCKET" "${IAAS_S3_REGION:-us-east-1}"
			printf 'repo1-s3-key=%s\nrepo1-s3-key-secret=%s\nrepo1-s3-uri-style=path\n' \
				"$IAAS_S3_KEY" "$IAAS_S3_SECRET"
			if [ -n "${IAAS_S3_PORT:-}" ]; then
				[[ "$IAAS_S3_PORT" =~ ^[1-9][0-9]{0,4}$ ]] || die "IAAS_S3_PORT must be a port number"
				printf 'repo1-storage-port=%s\n' "$IAAS_S3_PORT"
			fi
			printf 'repo1-storage-verify-tls=%s\n' "${IAAS_S3_VERIFY_TLS:-y}"
			if [ -n "${IAAS_S3_CA_PEM:-}" ]; then
				printf 'repo1-storage-ca-file=%s\n' "$S3_CA_FILE"
			elif [ -n "${IAAS_S3_CA_FILE:-}" ]; then
				printf 'repo1-storage-ca-file=%s\n' "$IAAS_S3_CA_FILE"
			fi
		else
			printf 'repo1-path=/var/lib/pgbackrest\n'
		fi
		printf 'repo1-retention-full=%s\n' "$retention"
		printf 'start-fast=y\ndelta=y\nlog-level-console=warn\nlog-level-stderr=off\nlog-level-file=off\n'
		printf 'lock-path=/tmp/pgbackrest\nspool-path=/var/spool/pgbackrest\n'
		printf '\n[%s]\npg1-path=%s\npg1-socket-path=/var/run/postgresql\n' "$IAAS_SCOPE" "$PGDATA"
		if [ -n "${IAAS_RESTORE_STANZA:-}" ]; then
			# The source's repository, read by the restore and by archive-get while the copy
			# replays WAL; the copy archives into its own stanza above.
			printf '\n[%s]\npg1-path=%s\npg1-socket-path=/var/run/postgresql\n' \
				"$IAAS_RESTORE_STANZA" "$PGDATA"
		fi
	} >"$PGBACKREST_CONFIG_FILE"
}

# set_restore_repo_options: RESTORE_REPO_OPTIONS, the options that point repo1 at the source's
# repository, for the restore and for archive-get while the copy replays WAL. They end up in a
# command line Patroni splits and in restore_command, which a shell runs, hence the strict checks.
set_restore_repo_options() {
	[[ "$IAAS_RESTORE_STANZA" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] ||
		die "IAAS_RESTORE_STANZA must be a lower-case DNS label"
	if [ -z "${IAAS_S3_ENDPOINT:-}" ]; then
		need IAAS_RESTORE_REPO
		[[ "$IAAS_RESTORE_REPO" =~ ^/[A-Za-z0-9._/-]*$ ]] || die "IAAS_RESTORE_REPO must be an absolute path"
		RESTORE_REPO_OPTIONS="--repo1-path=$IAAS_RESTORE_REPO"
		return
	fi
	local bucket="${IAAS_RESTORE_S3_BUCKET:-$IAAS_S3_BUCKET}" path="${IAAS_RESTORE_S3_PATH:-${IAAS_S3_PATH:-/}}"
	local own_path="${IAAS_S3_PATH:-/}"
	[[ "$bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "IAAS_RESTORE_S3_BUCKET is not a bucket name"
	[[ "$path" =~ ^/[A-Za-z0-9._/-]*$ ]] || die "IAAS_RESTORE_S3_PATH must be an absolute path"
	# The copy starts with the source's system identifier: archiving into the source's own
	# stanza would mix two histories in one archive.
	if [ "$bucket" = "$IAAS_S3_BUCKET" ] && [ "${path%/}" = "${own_path%/}" ] &&
		[ "$IAAS_RESTORE_STANZA" = "$IAAS_SCOPE" ]; then
		die "IAAS_RESTORE_STANZA is IAAS_SCOPE in the same bucket and path: the copy needs a stanza of its own"
	fi
	RESTORE_REPO_OPTIONS="--repo1-s3-bucket=$bucket --repo1-path=$path"
}

write_patroni_config() {
	local sync=false restore_cmd=""
	case "${IAAS_SYNCHRONOUS:-off}" in
	on) sync=true ;;
	off) ;;
	*) die "IAAS_SYNCHRONOUS must be on or off" ;;
	esac
	local etcd_hosts
	etcd_hosts="$(printf '%s' "$IAAS_ETCD_HOSTS" | tr ',' '\n' | sed "s/.*/    - '&'/")"
	local pgbr="pgbackrest --config=$PGBACKREST_CONFIG_FILE" etcd_auth=""
	if [ -n "${IAAS_ETCD_PASSWORD:-}" ]; then
		etcd_auth="$(printf '  username: root\n  password: %s' "$(yaml_str "$IAAS_ETCD_PASSWORD")")"
	fi
	umask 077
	cat >"$PATRONI_CONFIG" <<-YAML
		scope: $(yaml_str "$IAAS_SCOPE")
		name: $(yaml_str "$IAAS_MEMBER")
		log:
		  level: INFO
		  format: '%(asctime)s %(levelname)s: %(message)s'
		restapi:
		  listen: '0.0.0.0:8008'
		  connect_address: $(yaml_str "$IAAS_MEMBER_HOST:8008")
		  authentication:
		    username: patroni
		    password: $(yaml_str "$IAAS_RESTAPI_PASSWORD")
		ctl:
		  authentication:
		    username: patroni
		    password: $(yaml_str "$IAAS_RESTAPI_PASSWORD")
		etcd3:
		  hosts:
		$etcd_hosts
		$etcd_auth
		bootstrap:
		  dcs:
		    ttl: 10
		    loop_wait: 2
		    retry_timeout: 4
		    maximum_lag_on_failover: 1048576
		    failsafe_mode: true
		    synchronous_mode: $sync
		    postgresql:
		      use_pg_rewind: true
		      use_slots: true
		      parameters:
		        wal_level: replica
		        hot_standby: 'on'
		        wal_log_hints: 'on'
		        max_wal_senders: 10
		        max_replication_slots: 10
		        max_connections: 100
		        wal_retrieve_retry_interval: 1000
		        archive_mode: 'on'
		        archive_timeout: 60
		        archive_command: '$pgbr --stanza=$IAAS_SCOPE archive-push %p'
		  initdb:
		    - encoding: UTF8
		    - data-checksums
		  post_bootstrap: /usr/local/bin/docker-entrypoint.sh post-bootstrap
	YAML
	if [ -n "${IAAS_RESTORE_STANZA:-}" ]; then
		local target_line="      recovery_target_timeline: latest"
		if [ -n "${IAAS_RESTORE_TARGET_TIME:-}" ]; then
			target_line="      recovery_target_time: $(yaml_str "$IAAS_RESTORE_TARGET_TIME")"
		fi
		set_restore_repo_options
		restore_cmd="$pgbr --stanza=$IAAS_RESTORE_STANZA $RESTORE_REPO_OPTIONS"
		cat >>"$PATRONI_CONFIG" <<-YAML
			  method: iaas_restore
			  iaas_restore:
			    command: '$restore_cmd --type=none restore'
			    no_params: true
			    keep_existing_recovery_conf: false
			    recovery_conf:
			      restore_command: '$restore_cmd archive-get %f "%p"'
			      recovery_target_action: promote
			$target_line
		YAML
	fi
	cat >>"$PATRONI_CONFIG" <<-YAML
		postgresql:
		  listen: '0.0.0.0:5432'
		  connect_address: $(yaml_str "$IAAS_MEMBER_HOST:5432")
		  data_dir: $(yaml_str "$PGDATA")
		  bin_dir: /usr/lib/postgresql/15/bin
		  pgpass: $PG_HOME/.pgpass-patroni
		  use_unix_socket: true
		  authentication:
		    superuser:
		      username: postgres
		      password: $(yaml_str "$IAAS_SUPERUSER_PASSWORD")
		    replication:
		      username: replicator
		      password: $(yaml_str "$IAAS_REPLICATION_PASSWORD")
		    rewind:
		      username: rewinder
		      password: $(yaml_str "$IAAS_REWIND_PASSWORD")
		  parameters:
		    unix_socket_directories: /var/run/postgresql
		  pg_hba:
		    - local all postgres peer
		    - local all all scram-sha-256
		    - host replication replicator all scram-sha-256
		    - host all postgres all reject
		    - host all all all scram-sha-256
		  create_replica_methods:
		    - basebackup
		  basebackup:
		    - checkpoint: fast
		tags:
		  nofailover: false
		  noloadbalance: false
		  clonefrom: false
	YAML
}

run_patroni() {
	local var
	for var in IAAS_SCOPE IAAS_MEMBER IAAS_MEMBER_HOST IAAS_ETCD_HOSTS IAAS_SUPERUSER_PASSWORD \
		IAAS_REPLICATION_PASSWORD IAAS_REWIND_PASSWORD IAAS_RESTAPI_PASSWORD IAAS_APP_USER \
		IAAS_APP_PASSWORD IAAS_APP_DB; do
		need "$var"
	done
	[[ "$IAAS_SCOPE" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "IAAS_SCOPE must be a lower-case DNS label"
	mkdir -p "$PGDATA" /tmp/pgbackrest
	chmod 700 "$PGDATA"
	# A container killed and started again keeps its file system: the socket lock of the
	# server it ran would make the new one refuse to start ("lock file already exists"), and a
	# former primary that cannot start gives up its leadership. No server of this container
	# runs yet, so the lock is stale.
	rm -f /var/run/postgresql/.s.PGSQL.*
	write_s3_ca
	write_pgbackrest_config
	write_patroni_config
	exec patroni "$PATRONI_CONFIG"
}

# Patroni runs this on the new primary once the cluster exists (after initdb or a restore), with
# the superuser's connection string as the argument (not used: the postgres OS user reaches the
# server through the socket). psql variables carry names and passwords, so nothing is spliced
# into SQL or interpolated by the shell.
post_bootstrap() {
	psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -U postgres -d postgres \
		-v app="$IAAS_APP_USER" -v pw="$IAAS_APP_PASSWORD" -v db="$IAAS_APP_DB" <<-'SQL'
		SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') AS create_role \gset
		\if :create_role
		CREATE ROLE :"app" LOGIN PASSWORD :'pw';
		\else
		ALTER ROLE :"app" LOGIN PASSWORD :'pw';
		\endif
		SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS create_db \gset
		\if :create_db
		CREATE DATABASE :"db" OWNER :"app";
		\endif
	SQL
	pgbackrest --config="$PGBACKREST_CONFIG_FILE" --stanza="$IAAS_SCOPE" stanza-create
}

run_etcd() {
	local name="${IAAS_ETCD_NAME:-etcd}" host="${IAAS_ETCD_HOST:-$(hostname)}" pid
	local -a etcd=(etcd --name "$name" --data-dir /var/lib/iaas-etcd/data
		--listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$host:2379"
		--listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls "http://$host:2380"
		--initial-cluster "$name=http://$host:2380" --initial-cluster-state new
		--auto-compaction-retention 1 --quota-backend-bytes 268435456)
	if [ -z "${IAAS_ETCD_PASSWORD:-}" ]; then
		exec "${etcd[@]}"
	fi
	"${etcd[@]}" &
	pid=$!
	trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
	local -a ctl=(etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s)
	for _ in $(seq 1 150); do
		"${ctl[@]}" endpoint health >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || die "etcd exited while starting"
		sleep 0.2
	done
	# Without authentication anyone may list users: that is how a first start is told from a
	# later one (whose data directory has authentication on already).
	if "${ctl[@]}" user list >/dev/null 2>&1; then
		"${ctl[@]}" user add "root:$IAAS_ETCD_PASSWORD" >/dev/null || die "cannot add etcd's root user"
		"${ctl[@]}" auth enable >/dev/null || die "cannot turn etcd's authentication on"
	fi
	# The first wait returns when a signal arrives (the trap forwards it); the second reaps etcd.
	wait "$pid" || true
	wait "$pid"
}

run_haproxy() {
	need IAAS_MEMBERS_HOST
	local slots="${IAAS_MAX_MEMBERS:-8}" config=/tmp/haproxy.cfg
	[[ "$slots" =~ ^[1-9][0-9]?$ ]] || die "IAAS_MAX_MEMBERS must be 1-99"
	cat >"$config" <<-CFG
		global
		  maxconn 2000
		  log stdout format raw local0 notice
		defaults
		  mode tcp
		  log global
		  timeout connect 3s
		  timeout client 1h
		  timeout server 1h
		  timeout check 2s
		  default-server inter 1s fastinter 500ms fall 2 rise 1 on-marked-down shutdown-sessions resolvers docker init-addr none resolve-prefer ipv4
		resolvers docker
		  nameserver dns 127.0.0.11:53
		  hold valid 1s
		  hold obsolete 5s
		  accepted_payload_size 8192
		listen primary
		  bind :5432
		  option httpchk OPTIONS /primary
		  http-check expect status 200
		  server-template member $slots $IAAS_MEMBERS_HOST:5432 check port 8008
		listen replicas
		  bind :5433
		  balance roundrobin
		  option httpchk OPTIONS /replica
		  http-check expect status 200
		  server-template member $slots $IAAS_MEMBERS_HOST:5432 check port 8008
	CFG
	exec haproxy -W -db -f "$config"
}

ARGS=("$@")
case "${1:-patroni}" in
patroni)
	as_user postgres
	run_patroni
	;;
post-bootstrap) post_bootstrap ;;
etcd)
	as_user etcd
	run_etcd
	;;
haproxy)
	as_user haproxy
	run_haproxy
	;;
*) exec "$@" ;;
esac
