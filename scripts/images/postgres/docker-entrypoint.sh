#!/usr/bin/env bash
# Entrypoint of iaas-local/postgres:15 (built by scripts/services.sh from Debian packages).
#
# It follows the contract of the official `postgres` image, so tests and provisioning code work
# unchanged against `postgres:15` from Docker Hub and against this local image:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default = user), the *_FILE variants,
#   POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD (default
#   scram-sha-256), PGDATA (default /var/lib/postgresql/data), scripts and SQL files in
#   /docker-entrypoint-initdb.d, and extra server arguments (`postgres -c key=value`, or just
#   `-c key=value`). Any other command (`bash`, `psql ...`) is executed as is.
#
# First start: initdb runs as the postgres OS user with the superuser password from
# POSTGRES_PASSWORD; pg_hba.conf keeps initdb's `local ... trust` lines and gets
# `host all all all $POSTGRES_HOST_AUTH_METHOD`; listen_addresses = '*', port 5432.
# The database and the init scripts are handled by a temporary server that listens on the Unix
# socket only and whose log goes to a file, NOT to the container log.
#
# The line "database system is ready to accept connections" therefore appears only once the final
# server accepts connections: once on stderr (the server's own log line) and once on stdout
# (printed by this script as soon as the final server's postmaster.pid reports "ready"). The
# official image prints the line on stdout from its temporary server (before the final server is
# up) and on stderr from the final server; waiters written for it — testcontainers' postgres
# module waits for the line on stderr AND on stdout, others wait on stdout only — therefore work
# here too, without the race of the official image.
set -Eeo pipefail
shopt -s nullglob

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# file_env VAR [DEFAULT]: take VAR from $VAR or from the file named by $VAR_FILE.
file_env() {
	local var="$1" file_var="${1}_FILE" default="${2:-}" value
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		die "both $var and $file_var are set (but are exclusive)"
	fi
	value="$default"
	if [ -n "${!var:-}" ]; then
		value="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		value="$(<"${!file_var}")"
	fi
	export "$var=$value"
	unset "$file_var"
}

# As root: create the directories and hand them to the postgres user.
prepare_dirs_as_root() {
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA" || :
	chmod 3777 /var/run/postgresql || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
}

# psql against the temporary (socket-only) server.
setup_psql() {
	PGHOST='' PGHOSTADDR='' psql -X -q -v ON_ERROR_STOP=1 --no-password --no-psqlrc \
		--host /var/run/postgresql --port "$SETUP_PORT" --username "$POSTGRES_USER" "$@"
}

run_initdb() {
	local -a extra=()
	if [ -n "${POSTGRES_INITDB_ARGS:-}" ]; then
		eval "extra=($POSTGRES_INITDB_ARGS)"
	fi
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		extra+=(--waldir "$POSTGRES_INITDB_WALDIR")
	fi
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
	else
		initdb --username="$POSTGRES_USER" "${extra[@]}"
	fi
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

start_setup_server() {
	local options=""
	SETUP_LOG="$(mktemp /tmp/postgres-setup-server.XXXXXX.log)"
	# The caller's server arguments apply to the setup server too (as in the official image);
	# it listens on the Unix socket only, and its log goes to $SETUP_LOG.
	if [ "$#" -gt 0 ]; then
		options="$(printf '%q ' "$@")"
	fi
	if ! pg_ctl -D "$PGDATA" -w -t 120 -l "$SETUP_LOG" \
		-o "$options-c listen_addresses='' -p $SETUP_PORT" start >/dev/null; then
		cat "$SETUP_LOG" >&2
		die "the temporary setup server did not start"
	fi
}

stop_setup_server() {
	if ! pg_ctl -D "$PGDATA" -m fast -w -t 120 stop >/dev/null; then
		cat "$SETUP_LOG" >&2
		die "the temporary setup server did not stop"
	fi
	rm -f "$SETUP_LOG"
}

create_database() {
	[ "$POSTGRES_DB" = postgres ] && return 0
	setup_psql --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
		SELECT format('CREATE DATABASE %I', :'db')
		WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
	EOSQL
}

run_init_files() {
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			if [ -x "$f" ]; then
				log "$0: running $f"
				"$f"
			else
				log "$0: sourcing $f"
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql) log "$0: running $f"; setup_psql --dbname "$POSTGRES_DB" -f "$f" ;;
		*.sql.gz) log "$0: running $f"; gunzip -c "$f" | setup_psql --dbname "$POSTGRES_DB" ;;
		*.sql.xz) log "$0: running $f"; xzcat "$f" | setup_psql --dbname "$POSTGRES_DB" ;;
		*.sql.zst) log "$0: running $f"; zstd -dc "$f" | setup_psql --dbname "$POSTGRES_DB" ;;
		*) log "$0: ignoring $f" ;;
		esac
	done
}

init_cluster() {
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		cat >&2 <<-'EOM'
			Error: Database is uninitialized and superuser password is not specified.
			       Set POSTGRES_PASSWORD to a non-empty value for the superuser, or
			       POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password.
		EOM
		exit 1
	fi
	run_initdb
	# Variables the official image offers to sourced init scripts.
	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	start_setup_server "$@"
	create_database
	run_init_files
	stop_setup_server
	log ""
	log "PostgreSQL init process complete; ready for start up."
	log ""
}

# Background helper: print the ready line on stdout once the final server (PID $1) reports
# "ready" in postmaster.pid. It becomes a child of the postmaster after the exec below, so it
# must always exit 0 (a non-zero exit of an unknown child makes the postmaster reset itself).
announce_ready() {
	set +Eeo pipefail
	trap - ERR
	local pid="$1" i
	local -a lines
	for ((i = 0; i < 6000; i++)); do
		if mapfile -t lines 2>/dev/null <"$PGDATA/postmaster.pid" &&
			[ "${lines[0]:-}" = "$pid" ] && [ "${lines[7]// /}" = ready ]; then
			printf '%s [entrypoint] LOG:  database system is ready to accept connections\n' \
				"$(date -u '+%F %T.%3N UTC')"
			exit 0
		fi
		sleep 0.1
	done
	exit 0
}

main() {
	# `docker run IMAGE -c fsync=off` means `postgres -c fsync=off`.
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi
	if [ "$1" != postgres ]; then
		exec "$@"
	fi

	export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
	if [ "$(id -u)" = 0 ]; then
		prepare_dirs_as_root
		export HOME=/var/lib/postgresql
		exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
	fi

	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	export POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	SETUP_PORT="${PGPORT:-5432}"

	if [ -s "$PGDATA/PG_VERSION" ]; then
		log ""
		log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
		log ""
	else
		init_cluster "${@:2}"
	fi

	(announce_ready "$$") </dev/null &
	exec "$@"
}

main "$@"
