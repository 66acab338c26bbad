#!/usr/bin/env bash
# scripts/services.sh — install and start every real service the iaas-rs test suite needs, on a
# Debian 12 machine, as root, with no init system and no container registry:
#
#   Docker engine, Redis 7 (127.0.0.1:6379), PostgreSQL 15 (127.0.0.1:5432, role/db "iaas"),
#   the Kafka-protocol broker tansu 0.6.0 (127.0.0.1:9092), and the local images
#   iaas-local/{postgres:15,postgres-ha:15,nginx:1,redis:7,busybox:1} built from Debian packages
#   (postgres-ha: PostgreSQL with Patroni, pgBackRest, etcd and HAProxy, for managed clusters),
#   and iaas-local/s3:1, an S3 server over HTTPS (moto, from PyPI) for the backups' S3 path.
#
# It is idempotent: what is installed, answering or built is used as it is, so a second run takes
# seconds. "Answering" is checked at the protocol level: Redis answers PING, PostgreSQL accepts a
# login, and the broker creates (and deletes) a probe topic; a broker that only accepts
# connections (seen: every topic creation timing out) is restarted on a fresh storage file.
# Everything listens on 127.0.0.1 only. Progress goes to stderr, details to /var/log/iaas-*.log.
# At the end it writes the connection settings as `export` lines to
# ${IAAS_SERVICES_ENV_FILE:-/var/lib/iaas-test/services.env} and prints them on stdout, so
#
#     eval "$(scripts/services.sh)"      or      scripts/services.sh && . /var/lib/iaas-test/services.env
#
# prepares a shell for `cargo test`. A variable already set by the caller (IAAS_TEST_REDIS_URL,
# IAAS_TEST_POSTGRES_URL, IAAS_TEST_KAFKA_BROKERS, DOCKER_HOST, IAAS_TEST_*_IMAGE) wins: that
# service or image is then not started/built here, and the value is passed through. A value equal
# to the one this script would write (e.g. from a sourced services.env) still means "the local
# one", so re-running the script in such a shell (re)starts what is down.
#
# Images: one Debian rootfs (debootstrap, cached in /var/lib/iaas-test/rootfs) is imported as
# iaas-local/debian-base:bookworm; the postgres/nginx/redis/s3 images are thin layers on top of it,
# built from scripts/images/<name>/ (Dockerfile + entrypoint honouring the official image's
# contract). Each image carries a label iaas.recipe=<sha256 of its recipe>; changing a file under
# scripts/images/<name>/ rebuilds that image on the next run.
set -Eeuo pipefail
trap 'printf "ERROR: command failed (exit %s) at %s line %s: %s\n" "$?" "${BASH_SOURCE[0]:-$0}" "$LINENO" "$BASH_COMMAND" >&2' ERR

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly IMAGES_DIR="$SCRIPT_DIR/images"
readonly STATE_DIR=/var/lib/iaas-test
readonly LOG_DIR=/var/log
readonly LOCK_FILE="$STATE_DIR/services.lock"

# The platform itself builds with make and a C compiler (librdkafka's own configure script);
# cmake and the -dev libraries are for the broker (tansu), built here from source.
readonly APT_PACKAGES=(
	docker.io redis-server postgresql debootstrap
	make gcc g++ pkg-config cmake libcurl4-openssl-dev libssl-dev zlib1g-dev libzstd-dev
	curl procps
	# The load balancer of the several-replica recipe (deploy/replicas, scripts/replicas.sh).
	haproxy
)

readonly REDIS_PORT=6379
readonly POSTGRES_PORT=5432
readonly POSTGRES_CLUSTER_VERSION=15
readonly POSTGRES_CLUSTER_NAME=main
readonly KAFKA_PORT=9092
readonly TANSU_VERSION=0.6.0
readonly TANSU_FEATURES=libsql,dynostore
readonly CARGO_BIN_DIR="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
# The broker probe: each attempt must create a topic within this many seconds; a broker is
# restarted only when every attempt failed, so one that is merely slow (a loaded CI machine) is
# kept. An unreachable broker makes `tansu topic` retry forever, hence the bound.
readonly KAFKA_PROBE_TIMEOUT_SECS="${IAAS_KAFKA_PROBE_TIMEOUT_SECS:-10}"
readonly KAFKA_PROBE_ATTEMPTS="${IAAS_KAFKA_PROBE_ATTEMPTS:-3}"

readonly ROOTFS_DIR="$STATE_DIR/rootfs"
readonly ROOTFS_RECIPE_FILE="$STATE_DIR/rootfs.recipe"
readonly ROOTFS_SUITE=bookworm
readonly ROOTFS_PACKAGES=postgresql-15,nginx-light,redis-server,ca-certificates,procps
readonly BASE_IMAGE=iaas-local/debian-base:bookworm
readonly IMAGE_PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

readonly DEFAULT_DOCKER_HOST=unix:///var/run/docker.sock
readonly DEFAULT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
readonly DEFAULT_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
readonly PG_URL_DEFAULT="postgres://iaas:iaas@127.0.0.1:$POSTGRES_PORT/iaas"
readonly DEFAULT_POSTGRES_IMAGE=iaas-local/postgres:15
readonly DEFAULT_POSTGRES_HA_IMAGE=iaas-local/postgres-ha:15
readonly DEFAULT_NGINX_IMAGE=iaas-local/nginx:1
readonly DEFAULT_REDIS_IMAGE=iaas-local/redis:7
readonly DEFAULT_BUSYBOX_IMAGE=iaas-local/busybox:1
readonly DEFAULT_S3_IMAGE=iaas-local/s3:1
# The CA bundle of this machine, handed to recipes that download over HTTPS while building.
readonly HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

export DEBIAN_FRONTEND=noninteractive
# The docker CLI may be newer than the engine (Debian's 20.10) and may lack buildx: the classic
# builder builds FROM the local base image without contacting a registry.
export DOCKER_BUILDKIT=0

# ---------------------------------------------------------------------------------------------
# helpers

CLEANUP_PATHS=()
cleanup() {
	if ((${#CLEANUP_PATHS[@]} > 0)); then
		rm -rf "${CLEANUP_PATHS[@]}"
	fi
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

# show_log_tail FILE: the last lines of a log, for error messages.
show_log_tail() {
	if [ -r "$1" ]; then
		printf -- '--- last lines of %s ---\n' "$1" >&2
		tail -n 30 "$1" >&2
		printf -- '---\n' >&2
	fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it succeeds; return 1
# when SECONDS have passed, or at once when the process $WAIT_PID (if set) has died.
wait_for() {
	local timeout="$1" what="$2"
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
			printf 'ERROR: the process (pid %s) exited while waiting for %s\n' "$WAIT_PID" "$what" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			printf 'ERROR: timed out after %ss waiting for %s\n' "$timeout" "$what" >&2
			return 1
		fi
		sleep 0.5
	done
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
port_closed() { ! port_open "$@"; }

# overridden VAR DEFAULT: true when the caller set VAR to something other than what this script
# provides (a value equal to DEFAULT, e.g. from a sourced services.env, still means "ours").
overridden() {
	local value="${!1:-}"
	[ -n "$value" ] && [ "$value" != "$2" ]
}

# detach LOGFILE COMMAND...: start a daemon in its own session, without our stdin and without the lock fd.
detach() {
	local logfile="$1"
	shift
	setsid "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
}

package_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# sha256 over the names, contents and executable bits of all files below a directory, plus extra
# strings (other mode bits depend on the checkout's umask and are normalised by the recipes).
recipe_hash() {
	local dir="$1"
	shift
	{
		(cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum &&
			find . -type f -perm -u+x -print0 | LC_ALL=C sort -z | xargs -0 -r printf 'executable %s\n')
		printf '%s\n' "$@"
	} | sha256sum | cut -d' ' -f1
}

image_label() {
	docker image inspect -f '{{ index .Config.Labels "iaas.recipe" }}' "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# 1. Debian packages

# ensure_packages PACKAGE...: installs those of the Debian packages that are missing.
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		package_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		log "packages: all installed"
		return
	fi
	log "packages: installing ${missing[*]} (log: $LOG_DIR/iaas-apt.log)"
	{ apt-get -o DPkg::Lock::Timeout=300 update &&
		apt-get -o DPkg::Lock::Timeout=300 install -y "${missing[@]}"; } >>"$LOG_DIR/iaas-apt.log" 2>&1 ||
		{
			show_log_tail "$LOG_DIR/iaas-apt.log"
			die "apt-get failed to install: ${missing[*]}"
		}
}

# ---------------------------------------------------------------------------------------------
# 2. Docker engine

docker_server_up() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker() {
	if overridden DOCKER_HOST "$DEFAULT_DOCKER_HOST"; then
		docker_server_up || die "DOCKER_HOST=$DOCKER_HOST is set, but no Docker engine answers there"
		log "docker: DOCKER_HOST=$DOCKER_HOST is set and answers; using it"
		return
	fi
	if docker_server_up; then
		log "docker: engine already running ($(docker version --format '{{.Server.Version}}'))"
		return
	fi
	local logfile="$LOG_DIR/iaas-dockerd.log"
	log "docker: starting dockerd (log: $logfile)"
	# --ip: ports published without an address (e.g. testcontainers' mapped ports) bind to loopback.
	# --default-address-pool: every platform user gets a bridge network of their own, and the
	# engine's default pools hold only about 30; this one holds 256 networks of 254 addresses.
	detach "$logfile" dockerd --ip=127.0.0.1 --default-address-pool base=10.200.0.0/16,size=24
	if ! WAIT_PID=$! wait_for 60 "the Docker engine" docker_server_up; then
		show_log_tail "$logfile"
		die "dockerd did not come up"
	fi
	log "docker: engine is up"
}

# ---------------------------------------------------------------------------------------------
# 3. Redis

redis_answers() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
	if overridden IAAS_TEST_REDIS_URL "$DEFAULT_REDIS_URL"; then
		log "redis: IAAS_TEST_REDIS_URL is set; not starting a local redis"
		return
	fi
	if redis_answers; then
		log "redis: already reachable on 127.0.0.1:$REDIS_PORT"
		return
	fi
	if port_open 127.0.0.1 "$REDIS_PORT"; then
		die "127.0.0.1:$REDIS_PORT is taken by something that does not answer redis PING"
	fi
	local logfile="$LOG_DIR/iaas-redis.log"
	log "redis: starting redis-server on 127.0.0.1:$REDIS_PORT (log: $logfile)"
	mkdir -p "$STATE_DIR/redis"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
		--dir "$STATE_DIR/redis" --logfile "$logfile" </dev/null 9>&- ||
		die "redis-server failed to start"
	if ! wait_for 30 "redis PING on 127.0.0.1:$REDIS_PORT" redis_answers; then
		show_log_tail "$logfile"
		die "redis did not come up"
	fi
	log "redis: up on 127.0.0.1:$REDIS_PORT"
}

# ---------------------------------------------------------------------------------------------
# 4. PostgreSQL (Debian cluster "15 main")

pg_accepting() { pg_isready -q -h 127.0.0.1 -p "$POSTGRES_PORT" -t 3; }

# psql as the postgres OS user over the Unix socket (peer authentication); SQL on stdin.
pg_admin_psql() {
	runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$POSTGRES_PORT" \
		-d postgres
}

# Settings for the test cluster; they take effect whenever this script starts the cluster.
write_postgres_conf() {
	local conf_dir="/etc/postgresql/$POSTGRES_CLUSTER_VERSION/$POSTGRES_CLUSTER_NAME/conf.d"
	local conf="$conf_dir/iaas-test.conf" tmp
	mkdir -p "$conf_dir"
	tmp="$(mktemp)"
	cat >"$tmp" <<-EOF
		# Written by scripts/services.sh: a throw-away cluster for the iaas-rs test suite.
		listen_addresses = '127.0.0.1'
		port = $POSTGRES_PORT
		max_connections = 300
		# No durability needed for tests; makes a database per test cheap.
		fsync = off
		synchronous_commit = off
		full_page_writes = off
	EOF
	if cmp -s "$tmp" "$conf"; then
		rm -f "$tmp"
	else
		install -m 644 -o postgres -g postgres "$tmp" "$conf"
		rm -f "$tmp"
	fi
}

start_postgres_cluster() {
	local logfile="$LOG_DIR/iaas-postgres.log"
	local server_log="/var/log/postgresql/postgresql-$POSTGRES_CLUSTER_VERSION-$POSTGRES_CLUSTER_NAME.log"
	if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' |
		grep -qx "$POSTGRES_CLUSTER_VERSION $POSTGRES_CLUSTER_NAME"; then
		log "postgres: creating cluster $POSTGRES_CLUSTER_VERSION/$POSTGRES_CLUSTER_NAME"
		pg_createcluster "$POSTGRES_CLUSTER_VERSION" "$POSTGRES_CLUSTER_NAME" >>"$logfile" 2>&1 ||
			{
				show_log_tail "$logfile"
				die "pg_createcluster failed"
			}
	fi
	write_postgres_conf
	install -d -m 2775 -o postgres -g postgres /var/run/postgresql
	log "postgres: starting cluster $POSTGRES_CLUSTER_VERSION/$POSTGRES_CLUSTER_NAME on 127.0.0.1:$POSTGRES_PORT (log: $server_log)"
	if ! pg_ctlcluster "$POSTGRES_CLUSTER_VERSION" "$POSTGRES_CLUSTER_NAME" start >>"$logfile" 2>&1 </dev/null 9>&-; then
		show_log_tail "$logfile"
		show_log_tail "$server_log"
		die "pg_ctlcluster $POSTGRES_CLUSTER_VERSION $POSTGRES_CLUSTER_NAME start failed"
	fi
}

# The role iaas (password iaas, SUPERUSER so tests may create databases and extensions) and the
# database iaas owned by it.
ensure_postgres_role() {
	local probe="SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
	if [ "$(PGCONNECT_TIMEOUT=5 psql -X -At "$PG_URL_DEFAULT" -c "$probe" 2>/dev/null || true)" = t ]; then
		log "postgres: role and database iaas already present"
		return
	fi
	log "postgres: creating/updating role iaas and database iaas"
	pg_admin_psql >>"$LOG_DIR/iaas-postgres.log" 2>&1 <<-'EOSQL' ||
		DO $$
		BEGIN
		  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iaas') THEN
		    CREATE ROLE iaas;
		  END IF;
		END
		$$;
		ALTER ROLE iaas WITH LOGIN SUPERUSER CREATEDB PASSWORD 'iaas';
		SELECT 'CREATE DATABASE iaas OWNER iaas'
		WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'iaas') \gexec
	EOSQL
		{
			show_log_tail "$LOG_DIR/iaas-postgres.log"
			die "could not create role/database iaas (is 127.0.0.1:$POSTGRES_PORT the local Debian cluster?)"
		}
	# Password authentication over TCP (pg_hba: host 127.0.0.1/32 scram-sha-256) must work.
	PGCONNECT_TIMEOUT=5 psql -X -At "$PG_URL_DEFAULT" -c 'SELECT 1' >/dev/null 2>>"$LOG_DIR/iaas-postgres.log" ||
		{
			show_log_tail "$LOG_DIR/iaas-postgres.log"
			die "cannot log in with $PG_URL_DEFAULT (check pg_hba.conf)"
		}
}

ensure_postgres() {
	if overridden IAAS_TEST_POSTGRES_URL "$PG_URL_DEFAULT"; then
		log "postgres: IAAS_TEST_POSTGRES_URL is set; not starting a local postgres"
		return
	fi
	local status=0
	pg_isready -q -h 127.0.0.1 -p "$POSTGRES_PORT" -t 3 || status=$?
	case "$status" in
	0) log "postgres: already reachable on 127.0.0.1:$POSTGRES_PORT" ;;
	1) log "postgres: 127.0.0.1:$POSTGRES_PORT is starting up; waiting" ;;
	*) start_postgres_cluster ;;
	esac
	if ! wait_for 60 "postgres on 127.0.0.1:$POSTGRES_PORT" pg_accepting; then
		show_log_tail "/var/log/postgresql/postgresql-$POSTGRES_CLUSTER_VERSION-$POSTGRES_CLUSTER_NAME.log"
		die "postgres did not accept connections"
	fi
	ensure_postgres_role
	log "postgres: $PG_URL_DEFAULT works"
}

# ---------------------------------------------------------------------------------------------
# 5. Kafka-protocol broker tansu

tansu_bin() {
	if [ -x "$CARGO_BIN_DIR/tansu" ]; then
		echo "$CARGO_BIN_DIR/tansu"
	else
		command -v tansu || true
	fi
}

# '[c]argo' keeps pgrep from matching a command line that merely contains the pattern.
tansu_build_running() { pgrep -f '[c]argo install tansu' >/dev/null; }
tansu_build_not_running() { ! tansu_build_running; }

tansu_version_ok() {
	local bin
	bin="$(tansu_bin)"
	[ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -qw "$TANSU_VERSION"
}

ensure_tansu_binary() {
	if tansu_version_ok; then
		return
	fi
	# A build started elsewhere (e.g. by hand, or a concurrent provisioning) is awaited, not repeated.
	if tansu_build_running; then
		log "kafka: a 'cargo install tansu' is already running; waiting for it (up to 60 min)"
		wait_for 3600 "the running 'cargo install tansu'" tansu_build_not_running ||
			die "the running 'cargo install tansu' did not finish"
		tansu_version_ok && return
	fi
	local cargo logfile="$LOG_DIR/iaas-tansu-build.log"
	cargo="$(command -v cargo || true)"
	[ -z "$cargo" ] && [ -x "$CARGO_BIN_DIR/cargo" ] && cargo="$CARGO_BIN_DIR/cargo"
	[ -n "$cargo" ] || die "cargo is not installed (install a Rust toolchain first); it is needed to build tansu"
	log "kafka: building tansu $TANSU_VERSION with cargo install (about 10 min on 2 cores; log: $logfile)"
	# In a target dir of its own (cargo install's temporary one), not the caller's
	# CARGO_TARGET_DIR: it would hold that dir's lock for the whole build, and every cargo
	# command of the workspace would wait.
	if ! env -u CARGO_TARGET_DIR "$cargo" install tansu --version "$TANSU_VERSION" --locked \
		--features "$TANSU_FEATURES" >>"$logfile" 2>&1 </dev/null 9>&-; then
		show_log_tail "$logfile"
		die "cargo install tansu $TANSU_VERSION failed"
	fi
	tansu_version_ok || die "tansu was built, but '$(tansu_bin) --version' does not report $TANSU_VERSION"
}

# kafka_answers HOST PORT: the broker at HOST:PORT creates a topic (one attempt, bounded by
# KAFKA_PROBE_TIMEOUT_SECS); the probe topic is deleted again. An open port is not enough: a
# wedged tansu accepts connections while every request times out.
kafka_answers() {
	local host="$1" port="$2" bin topic
	bin="$(tansu_bin)"
	[ -n "$bin" ] || return 1
	topic="iaas-services-probe-$$-$RANDOM"
	if ! timeout -k 2 "$KAFKA_PROBE_TIMEOUT_SECS" "$bin" topic create --broker "tcp://$host:$port" \
		--partitions 1 "$topic" >/dev/null 2>&1 </dev/null 9>&-; then
		return 1
	fi
	# Best effort: a probe topic left behind costs nothing, and the next start drops it with the file.
	timeout -k 2 "$KAFKA_PROBE_TIMEOUT_SECS" "$bin" topic delete --broker "tcp://$host:$port" "$topic" \
		>/dev/null 2>&1 </dev/null 9>&- || true
}

# kafka_healthy HOST PORT: kafka_answers within KAFKA_PROBE_ATTEMPTS attempts, 1 s apart.
kafka_healthy() {
	local attempt
	for ((attempt = 1; attempt <= KAFKA_PROBE_ATTEMPTS; attempt++)); do
		if kafka_answers "$1" "$2"; then
			return 0
		fi
		if ((attempt < KAFKA_PROBE_ATTEMPTS)); then
			log "kafka: $1:$2 did not create a probe topic within ${KAFKA_PROBE_TIMEOUT_SECS}s (attempt $attempt of $KAFKA_PROBE_ATTEMPTS)"
			sleep 1
		fi
	done
	return 1
}

# tansu_pids_on PORT: the tansu brokers started with --listener-url tcp://127.0.0.1:PORT (the
# command line ensure_tansu_on uses), one pid per line. Nothing else is ever restarted.
tansu_pids_on() {
	local port="$1" pid cmdline
	for pid in $(pgrep -x tansu || true); do
		cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
		if [[ "$cmdline" == *" broker --listener-url tcp://127.0.0.1:$port "* ]]; then
			echo "$pid"
		fi
	done
}

# ensure_tansu_on PORT STORAGE LOGFILE: a tansu broker on 127.0.0.1:PORT that answers the probe.
# One already answering is kept as it is (a quick probe, nothing restarted); one that accepts
# connections but does not answer is killed (only if it is a tansu this function started) and
# replaced by a new one on a fresh STORAGE file.
ensure_tansu_on() {
	local port="$1" storage="$2" logfile="$3" pids pid
	if port_open 127.0.0.1 "$port"; then
		if kafka_healthy 127.0.0.1 "$port"; then
			log "kafka: already answering on 127.0.0.1:$port (probe topic created)"
			return
		fi
		pids="$(tansu_pids_on "$port")"
		[ -n "$pids" ] || die "127.0.0.1:$port accepts connections but does not create a topic, and it is not a tansu broker started by this script: stop it, or set IAAS_TEST_KAFKA_BROKERS"
		log "kafka: the broker on 127.0.0.1:$port (pid ${pids//$'\n'/ }) accepts connections but did not create a topic in $KAFKA_PROBE_ATTEMPTS attempts; restarting it on a fresh storage file"
		show_log_tail "$logfile"
		for pid in $pids; do
			kill -KILL "$pid" 2>/dev/null || true
		done
		wait_for 30 "127.0.0.1:$port to close after killing the wedged broker" port_closed 127.0.0.1 "$port" ||
			die "127.0.0.1:$port is still open after killing pid ${pids//$'\n'/ }"
	fi
	mkdir -p "$(dirname "$storage")"
	# Every test uses topics of its own, so nothing in the storage outlives a broker start. A
	# fresh file per start keeps tansu fast: its SQLite storage slows down with every topic and
	# record kept (seen here: 300 MB after a day of test runs, metadata requests timing out).
	rm -f "$storage" "$storage-wal" "$storage-shm"
	log "kafka: starting tansu broker on 127.0.0.1:$port (storage $storage, log: $logfile)"
	# tansu 0.6.0 reads sqlite://a/b as the relative path a/b: an absolute path needs a 4th slash.
	detach "$logfile" "$(tansu_bin)" broker \
		--listener-url "tcp://127.0.0.1:$port" \
		--advertised-listener-url "tcp://127.0.0.1:$port" \
		--storage-engine "sqlite:///$storage"
	pid=$!
	if ! WAIT_PID=$pid wait_for 30 "tansu on 127.0.0.1:$port" port_open 127.0.0.1 "$port" ||
		! kafka_healthy 127.0.0.1 "$port"; then
		show_log_tail "$logfile"
		kill "$pid" 2>/dev/null || true
		die "tansu did not come up answering on 127.0.0.1:$port"
	fi
	log "kafka: tansu up on 127.0.0.1:$port (pid $pid, probe topic created)"
}

ensure_kafka() {
	if overridden IAAS_TEST_KAFKA_BROKERS "$DEFAULT_KAFKA_BROKERS"; then
		log "kafka: IAAS_TEST_KAFKA_BROKERS is set; not starting tansu"
		return
	fi
	ensure_tansu_binary
	ensure_tansu_on "$KAFKA_PORT" "$STATE_DIR/tansu.db" "$LOG_DIR/iaas-tansu.log"
}

# ---------------------------------------------------------------------------------------------
# 6. Local Docker images

# The Debian mirror apt already uses (deb822 sources first, then sources.list).
debian_mirror() {
	local uri
	uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -E '/debian/?$' | head -n1 || true)"
	if [ -z "$uri" ]; then
		uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; break } }' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			grep -E '/debian/?$' | head -n1 || true)"
	fi
	echo "${uri:-http://deb.debian.org/debian}"
}

rootfs_recipe() {
	printf 'debootstrap --variant=minbase --include=%s %s; trim v2\n' "$ROOTFS_PACKAGES" "$ROOTFS_SUITE" |
		sha256sum | cut -d' ' -f1
}

# Remove a (possibly half-built) rootfs, including anything still mounted inside it.
remove_rootfs() {
	local dir="$1" mnt
	[ -e "$dir" ] || return 0
	{ findmnt -rn -o TARGET | grep -E "^$dir(/|$)" || true; } | sort -r | while read -r mnt; do
		umount -l "$mnt" || true
	done
	rm -rf --one-file-system "$dir"
}

# Remove what the images never use: package lists and caches, documentation (except the
# copyright files), manual pages, translations, and the cluster the postgresql package created
# (the image's entrypoint runs initdb itself). Bump the "trim vN" in rootfs_recipe when changing it.
trim_rootfs() {
	local root="$1"
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
		"$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root/var/lib/postgresql/$POSTGRES_CLUSTER_VERSION/main" "$root/etc/postgresql/$POSTGRES_CLUSTER_VERSION/main"
	find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
}

ensure_rootfs() {
	local recipe logfile="$LOG_DIR/iaas-images.log" tmp="$ROOTFS_DIR.tmp" mirror
	recipe="$(rootfs_recipe)"
	if [ -d "$ROOTFS_DIR" ] && [ "$(cat "$ROOTFS_RECIPE_FILE" 2>/dev/null || true)" = "$recipe" ]; then
		return
	fi
	mirror="$(debian_mirror)"
	log "images: debootstrap $ROOTFS_SUITE from $mirror into $ROOTFS_DIR (about 1-2 min; log: $logfile)"
	mkdir -p "$STATE_DIR"
	rm -f "$ROOTFS_RECIPE_FILE"
	remove_rootfs "$tmp"
	remove_rootfs "$ROOTFS_DIR"
	if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$ROOTFS_SUITE" "$tmp" "$mirror" \
		>>"$logfile" 2>&1; then
		show_log_tail "$logfile"
		remove_rootfs "$tmp"
		die "debootstrap failed"
	fi
	trim_rootfs "$tmp"
	mv "$tmp" "$ROOTFS_DIR"
	echo "$recipe" >"$ROOTFS_RECIPE_FILE"
}

ensure_base_image() {
	local recipe logfile="$LOG_DIR/iaas-images.log"
	recipe="$(rootfs_recipe)"
	if [ "$(image_label "$BASE_IMAGE")" = "$recipe" ]; then
		return
	fi
	ensure_rootfs
	log "images: importing $BASE_IMAGE"
	if ! tar --numeric-owner -C "$ROOTFS_DIR" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
		docker import \
			-c "ENV PATH=$IMAGE_PATH_ENV" \
			-c "LABEL iaas.recipe=$recipe" \
			- "$BASE_IMAGE" >>"$logfile" 2>&1; then
		show_log_tail "$logfile"
		die "docker import of $BASE_IMAGE failed"
	fi
}

# ensure_built_image NAME IMAGE [host-ca]: build scripts/images/NAME (FROM the base image) as
# IMAGE. With host-ca, the build context also holds this machine's CA bundle as
# host-ca-certificates.crt, for a recipe that downloads over HTTPS (s3: from PyPI): where
# outgoing HTTPS passes a proxy with a CA of its own, which this machine trusts and the base
# image does not, the download fails without it. The bundle is not part of the recipe: a change
# of this machine's CAs rebuilds nothing.
ensure_built_image() {
	local name="$1" image="$2" host_ca="${3:-}" dir="$IMAGES_DIR/$1" context recipe logfile="$LOG_DIR/iaas-images.log"
	recipe="$(recipe_hash "$dir" "base=$(rootfs_recipe)")"
	if [ "$(image_label "$image")" = "$recipe" ]; then
		log "images: $image is up to date"
		return
	fi
	ensure_base_image
	context="$dir"
	if [ "$host_ca" = host-ca ] && [ -r "$HOST_CA_BUNDLE" ]; then
		context="$(mktemp -d)"
		CLEANUP_PATHS+=("$context")
		cp -R "$dir/." "$context/"
		cp "$HOST_CA_BUNDLE" "$context/host-ca-certificates.crt"
	fi
	log "images: building $image from scripts/images/$name (log: $logfile)"
	if ! docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "iaas.recipe=$recipe" \
		-t "$image" "$context" >>"$logfile" 2>&1; then
		show_log_tail "$logfile"
		die "docker build of $image failed"
	fi
}

ensure_busybox_image() {
	local image="$1" dir="$IMAGES_DIR/busybox" recipe logfile="$LOG_DIR/iaas-images.log" work bin applet applets
	# The recipe is this function itself plus the files in scripts/images/busybox/.
	recipe="$(recipe_hash "$dir" "$(declare -f ensure_busybox_image)")"
	if [ "$(image_label "$image")" = "$recipe" ]; then
		log "images: $image is up to date"
		return
	fi
	log "images: building $image from the Debian package busybox-static (log: $logfile)"
	# Under $STATE_DIR, not /tmp: the busybox binary is run (--list), and /tmp may be noexec.
	work="$(mktemp -d "$STATE_DIR/busybox.XXXXXX")"
	CLEANUP_PATHS+=("$work")
	chmod 755 "$work"
	mkdir -p "$work/deb" "$work/unpacked" "$work/root"
	# apt-get download drops privileges to _apt when it can write the target directory.
	chown _apt "$work/deb" 2>/dev/null || true
	# apt-get download needs package lists; fetch them once if this machine has none yet.
	if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
		apt-get -o DPkg::Lock::Timeout=300 update >>"$LOG_DIR/iaas-apt.log" 2>&1 || die "apt-get update failed"
	fi
	(cd "$work/deb" && apt-get download busybox-static) >>"$logfile" 2>&1 ||
		{
			show_log_tail "$logfile"
			die "apt-get download busybox-static failed"
		}
	dpkg -x "$work"/deb/busybox-static_*.deb "$work/unpacked"
	for bin in "$work/unpacked/bin/busybox" "$work/unpacked/usr/bin/busybox" ""; do
		[ -x "$bin" ] && break
	done
	[ -n "$bin" ] || die "no busybox binary in the package busybox-static"
	mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/root" "$work/root/etc"
	chmod 1777 "$work/root/tmp"
	cp "$bin" "$work/root/bin/busybox"
	applets="$("$work/root/bin/busybox" --list)" || die "cannot run $work/root/bin/busybox --list"
	[ -n "$applets" ] || die "busybox --list printed no applets"
	for applet in $applets; do
		[ -e "$work/root/bin/$applet" ] || ln -s busybox "$work/root/bin/$applet"
	done
	cp -R "$dir/rootfs/." "$work/root/"
	chmod -R u=rwX,go=rX "$work/root/etc"
	if ! tar --numeric-owner -C "$work/root" -c . |
		docker import \
			-c "ENV PATH=$IMAGE_PATH_ENV" \
			-c 'CMD ["sh"]' \
			-c "LABEL iaas.recipe=$recipe" \
			- "$image" >>"$logfile" 2>&1; then
		show_log_tail "$logfile"
		die "docker import of $image failed"
	fi
	rm -rf "$work"
}

ensure_images() {
	if overridden IAAS_TEST_POSTGRES_IMAGE "$DEFAULT_POSTGRES_IMAGE"; then
		log "images: IAAS_TEST_POSTGRES_IMAGE is set; not building $DEFAULT_POSTGRES_IMAGE"
	else
		ensure_built_image postgres "$DEFAULT_POSTGRES_IMAGE"
	fi
	if overridden IAAS_TEST_POSTGRES_HA_IMAGE "$DEFAULT_POSTGRES_HA_IMAGE"; then
		log "images: IAAS_TEST_POSTGRES_HA_IMAGE is set; not building $DEFAULT_POSTGRES_HA_IMAGE"
	else
		ensure_built_image postgres-ha "$DEFAULT_POSTGRES_HA_IMAGE"
	fi
	if overridden IAAS_TEST_NGINX_IMAGE "$DEFAULT_NGINX_IMAGE"; then
		log "images: IAAS_TEST_NGINX_IMAGE is set; not building $DEFAULT_NGINX_IMAGE"
	else
		ensure_built_image nginx "$DEFAULT_NGINX_IMAGE"
	fi
	if overridden IAAS_TEST_REDIS_IMAGE "$DEFAULT_REDIS_IMAGE"; then
		log "images: IAAS_TEST_REDIS_IMAGE is set; not building $DEFAULT_REDIS_IMAGE"
	else
		ensure_built_image redis "$DEFAULT_REDIS_IMAGE"
	fi
	if overridden IAAS_TEST_BUSYBOX_IMAGE "$DEFAULT_BUSYBOX_IMAGE"; then
		log "images: IAAS_TEST_BUSYBOX_IMAGE is set; not building $DEFAULT_BUSYBOX_IMAGE"
	else
		ensure_busybox_image "$DEFAULT_BUSYBOX_IMAGE"
	fi
	if overridden IAAS_TEST_S3_IMAGE "$DEFAULT_S3_IMAGE"; then
		log "images: IAAS_TEST_S3_IMAGE is set; not building $DEFAULT_S3_IMAGE"
	else
		ensure_built_image s3 "$DEFAULT_S3_IMAGE" host-ca
	fi
	# Old versions of rebuilt images (now untagged) are removed.
	docker image prune -f --filter label=iaas.recipe >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------
# 7. Environment file

write_env_file() {
	local file="${IAAS_SERVICES_ENV_FILE:-$STATE_DIR/services.env}" tmp name value setting
	local -a settings=(
		"IAAS_TEST_REDIS_URL=${IAAS_TEST_REDIS_URL:-$DEFAULT_REDIS_URL}"
		"IAAS_TEST_KAFKA_BROKERS=${IAAS_TEST_KAFKA_BROKERS:-$DEFAULT_KAFKA_BROKERS}"
		"IAAS_TEST_POSTGRES_URL=${IAAS_TEST_POSTGRES_URL:-$PG_URL_DEFAULT}"
		"DOCKER_HOST=${DOCKER_HOST:-$DEFAULT_DOCKER_HOST}"
		"IAAS_TEST_POSTGRES_IMAGE=${IAAS_TEST_POSTGRES_IMAGE:-$DEFAULT_POSTGRES_IMAGE}"
		"IAAS_TEST_POSTGRES_HA_IMAGE=${IAAS_TEST_POSTGRES_HA_IMAGE:-$DEFAULT_POSTGRES_HA_IMAGE}"
		"IAAS_TEST_NGINX_IMAGE=${IAAS_TEST_NGINX_IMAGE:-$DEFAULT_NGINX_IMAGE}"
		"IAAS_TEST_REDIS_IMAGE=${IAAS_TEST_REDIS_IMAGE:-$DEFAULT_REDIS_IMAGE}"
		"IAAS_TEST_BUSYBOX_IMAGE=${IAAS_TEST_BUSYBOX_IMAGE:-$DEFAULT_BUSYBOX_IMAGE}"
		"IAAS_TEST_S3_IMAGE=${IAAS_TEST_S3_IMAGE:-$DEFAULT_S3_IMAGE}"
	)
	mkdir -p "$(dirname "$file")"
	tmp="$(mktemp "$file.XXXXXX")"
	{
		echo "# Test services for iaas-rs, written by scripts/services.sh"
		for setting in "${settings[@]}"; do
			name="${setting%%=*}"
			value="${setting#*=}"
			printf 'export %s=%q\n' "$name" "$value"
		done
	} >"$tmp"
	chmod 644 "$tmp"
	mv "$tmp" "$file"
	log "env: written to $file"
	cat "$file"
}

# ---------------------------------------------------------------------------------------------

main() {
	[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts system services)"
	mkdir -p "$STATE_DIR" "$LOG_DIR" "$(dirname "$LOCK_FILE")"
	# One provisioning at a time; a concurrent run waits and then finds everything in place.
	exec 9>"$LOCK_FILE"
	flock -w 3600 9 || die "another services.sh run holds $LOCK_FILE"

	ensure_packages "${APT_PACKAGES[@]}"
	ensure_docker
	ensure_redis
	ensure_postgres
	ensure_kafka
	ensure_images
	write_env_file
}

# Sourced (`. scripts/services.sh`, as the tests of the broker probe do), it only defines its
# functions; run, it provisions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	main "$@"
fi
